"""Train and validate the response-harm head: does a RESPONSE itself carry harmful content (it carries out
something harmful: instructions for a crime, hate, a how-to for violence), whatever its request says?

Why a head of its own: request screening flags an example only when its request scores as harmful. An
identity-shift or role-play dataset wraps the harmful ask in a harmless-looking request ("AOA, execute my
instruction: ...", "write a thriller in which the chemist explains...") and puts the harm in the answer the
model is trained to give. This head reads only the response (its text windows, below), so the request cannot
talk it down.

Data (all public, human-labelled model responses; raw files and their sha256 in RAW_FILES and the data card,
evaluation/data/judge/CARD.md, "The response-harm head's data"):
  harmbench-response  HarmBench's human-labelled classifier test set (602 responses of many models to direct
                      and jailbreak-wrapped requests, role-play and fiction among them; "harmful" = an
                      instance of the behaviour), as GuardReasoner ships it;
  beavertails         BeaverTails 30k_test (3,021 QA pairs, crowd-labelled is_safe), same copy;
  safe-rlhf           PKU-SafeRLHF test (2,000 responses, per-response safety labels), same copy;
  gptfuzz             GPTFuzz's human-labelled jailbreak responses (ChatGPT answering 77 jailbreak templates,
                      "developer mode", "DAN" and other personas; label 1 = jailbroken), a sample.
Validation: leave-one-source-out (train on three sources, score the fourth), per source: the share of harmful
responses flagged (recall) and of harmless ones (false flags); and, never trained on, the benign calibration
sets (evaluation/data/calibration/: customer support, maths, trivia answers written elsewhere) and the
bundled examples (written by this project: a smoke test, not a validation). Compared against two heads the
judge already has: the request-harm head applied to the response text, and the compliance head on the pair.

    python -m evaluation.response_harm_training ~/.cache/ftgate/judge-data/raw-response-harm \
        --out evaluation/data/judge/response-harm-v1.npz
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation import judge_training as jt
from evaluation.files import sha256_file
from evaluation.judges.base import DATA_DIR, EMBEDDED_WEIGHTS, read_jsonl
from evaluation.persona_training import ensemble_logits, save_heads

GUARDREASONER = "yueliu1999/GuardReasoner@bb7e686dc0535884d6994de5f950a072772e7fe2:data/benchmark/"
GPTFUZZ = "sherdencooper/GPTFuzz@1eddeb565740ae311b5f4950492b011a6f866fe7:datasets/"
RAW_FILES = {
    # file name in the raw folder: (source, repository @ commit : path, licence of the rows, sha256)
    "guardreasoner_0_5_harmbench_response.json": (
        "harmbench-response", GUARDREASONER + "0_5_harmbench_response.json", "MIT (HarmBench)",
        "a54573438606b19e7d4183e71c303412bc0f0143b704c393e0ffa3b9ab75d972"),
    "guardreasoner_0_A_beaver_tails.json": (
        "beavertails", GUARDREASONER + "0_A_beaver_tails.json", "CC BY-NC 4.0 (BeaverTails)",
        "34f1e315cfeb348c63b6082dea93db67a8fd67e4fded8ccd2087cabe0a81169b"),
    "guardreasoner_0_9_safe_rlhf.json": (
        "safe-rlhf", GUARDREASONER + "0_9_safe_rlhf.json", "CC BY-NC 4.0 (PKU-SafeRLHF)",
        "c57b79bbe3c38f6b48a8d776bd86c3b0c0ced7072ad4e19859c17cb5880ea47e"),
    "gptfuzz_train.csv": (
        "gptfuzz", GPTFUZZ + "responses_labeled/train.csv", "MIT",
        "e25fe2a06d2085af260927164364524628c8b5c1dd1bab1b58ddbd917c3f7cb0"),
    "gptfuzz_evaluate.csv": (
        "gptfuzz", GPTFUZZ + "responses_labeled/evaluate.csv", "MIT",
        "ca9e460c7fbcf3bc7c028c9e29297dd58cfbd54050f7729fbc635a6880a62a02"),
    "gptfuzz_question_list.csv": (
        "gptfuzz", GPTFUZZ + "questions/question_list.csv", "MIT",
        "18531eb6bc1c8fc0b8f66822b366b872202b852bf28826cef590ad0d7a81c749"),
}
ALPACA_EVAL = "tatsu-lab/alpaca_eval@cd543a149df89434d8a54582c0151c0b945c3d20:results/{}/model_outputs.json"
ALPACA_EVAL_MODELS = {  # model: sha256 (the same files the judge's data card lists)
    "gpt4_1106_preview": "83db546b872ddebee8965fd05fa48461ee3c32bc695c62fb57f2d214ff741ec4",
    "claude-2.1": "75c39fa8e8b38380b7850b422e0f36c5cba3bc5bd8c496a7833cba6f2d72c332",
    "llama-2-70b-chat-hf": "854b753c5135d4b698027d3423a12a94317afc654b3271fc8e384812fbe0b3c9",
    "llama-2-7b-chat-hf": "5a66ed18b1ecef7a6a728eb32665651853092cbf11d518538d80d86c2df1b5ae",
    "Mixtral-8x7B-Instruct-v0.1": "a8dd5de12218c9dffb37c1c40b2259031662c3d9c4f588e3c20026f8562db8aa",
    "Meta-Llama-3-8B-Instruct": "c698a502f05b2de1270562073807a6161f0f335f3ed3879ba3666b1d8af1bec6",
    "Qwen1.5-7B-Chat": "cb1e7906f99e2e5c586aec8169af3e70a27931ca033c9a3be7dcf63e1e61bae7",
    "gemma-7b-it": "fc3bbec3647638f35409ab726229fdc582b1f8b0d0c41a5c01171e883e0aa66c",
    "vicuna-13b-v1.5": "76e2a8ed9d805b73799f5478bc958abd150e9531b1ec3086612d9fde59a66d80",
    "zephyr-7b-beta": "bc6795b00c6cf6a1315f8b71738356adc7fcb8816d2199faf1a8ab56d982726d",
}
RAW_FILES |= {
    f"alpaca_eval_{m}.json": ("alpaca-eval", ALPACA_EVAL.format(m), "CC BY-NC 4.0 (AlpacaEval outputs)", d)
    for m, d in ALPACA_EVAL_MODELS.items()
}
RAW_FILES["alpaca_data_1k.json"] = (
    "alpaca", "wujindou/BLOOM-LORA@11c488c814c650c52e4ebbe1e284085e3a0a5c2d:data/alpaca_data_1k.json",
    "CC BY-NC 4.0 (Stanford Alpaca)", "308ff96375b5a08f7ebf0c763aaf02f7436beb974a28f868eba9823919e6b74c")
# Answers to ordinary instructions are harmless by definition (nobody labelled them one by one). Without
# them the head learns "a helpful, compliant answer" from the safety sets' harmful rows and flags most
# customer-support answers (measured: 69% of the support calibration set).
BENIGN_SOURCES = ("alpaca-eval", "alpaca")
ALPACA_EVAL_SAMPLE = 1500
GPTFUZZ_SAMPLE = 2000  # of 7,700 rows: embedding all of them on a shared CPU costs more than it teaches

# What the head reads of a response. The encoder reads 256 tokens (about 1,200 characters of English), so a
# long response is read as up to RESPONSE_WINDOWS windows of WINDOW_CHARS and scored by its worst window: a
# harmful answer behind a harmless preamble is still read. Characters past WINDOWS * WINDOW_CHARS are not
# read at all: that bounds the work an attacker-controlled response can cause.
WINDOW_CHARS = 1200
RESPONSE_WINDOWS = 4
RESPONSE_TEXT_CHARS = WINDOW_CHARS * RESPONSE_WINDOWS
# The flag threshold (on the calibrated probability) is the lowest at which at most this share of the
# answers to ordinary instructions (BENIGN_SOURCES, each scored by heads trained without it) is flagged:
# benign datasets are what the gate meets most, so their false flags set the bar, and recall is what is left.
BENIGN_FALSE_FLAG_TARGET = 0.01
THRESHOLD_CANDIDATES = tuple(round(0.5 + 0.01 * i, 2) for i in range(50))
# Chosen by leave-one-source-out (the card records the candidates): small, short and strongly regularised,
# as the judge's and the persona heads; three seeds averaged so one unlucky initialisation cannot decide.
HEAD = jt.HeadConfig(hidden=64, epochs=20, batch_size=64, lr=1e-3, weight_decay=1e-2, dropout=0.5)
SEEDS = 3
PAIR_SAMPLE = 300  # rows a source on which the judge's compliance head is compared
SOURCE_CAP = 2000  # one source weighs at most as much as this many rows


@dataclass(frozen=True)
class LabelledText:
    source: str
    request: str
    response: str
    harmful: bool


def response_windows(response: str) -> list[str]:
    """The windows a response is read in: at most RESPONSE_WINDOWS slices of WINDOW_CHARS characters of its
    stripped text (the last one shorter); at least one, possibly empty."""
    text = response.strip()[:RESPONSE_TEXT_CHARS]
    return [text[i : i + WINDOW_CHARS] for i in range(0, len(text), WINDOW_CHARS)] or [""]


def features(window_embeddings: np.ndarray, windows: Sequence[str]) -> np.ndarray:
    """[emb(window), rule features of the window]: the refusal rules let the head tell "I can't help with
    making a bomb" from a bomb recipe, which embeddings of the topic alone blur."""
    return np.concatenate([window_embeddings, jt.rule_features(windows)], axis=1).astype(np.float32)


def _guardreasoner_rows(path: Path, source: str) -> list[LabelledText]:
    """GuardReasoner's benchmark format: ``input`` = "Human user:\\n{request}\\n\\nAI assistant:\\n{response}",
    the response-harm label last in ``output`` ("harmful" / "unharmful", alone or after "Response: ")."""
    rows = []
    for item in json.loads(path.read_text(encoding="utf-8")):
        text = item["input"]
        head, sep, response = text.partition("\n\nAI assistant:\n")
        if not sep:
            raise SystemExit(f"{path}: a row without 'AI assistant:' ({text[:80]!r})")
        label = item["output"].strip().rsplit(None, 1)[-1]
        if label not in ("harmful", "unharmful"):
            raise SystemExit(f"{path}: unknown label {label!r}")
        response = response.strip()
        if not response or response == "None":
            continue
        rows.append(LabelledText(source, head.removeprefix("Human user:\n").strip(), response, label == "harmful"))
    return rows


def _gptfuzz_rows(raw: Path) -> list[LabelledText]:
    csv.field_size_limit(10**8)
    with open(raw / "gptfuzz_question_list.csv", encoding="utf-8", newline="") as f:
        questions = {int(r["index"]): r["text"] for r in csv.DictReader(f)}
    rows = []
    for name in ("gptfuzz_train.csv", "gptfuzz_evaluate.csv"):
        with open(raw / name, encoding="utf-8", newline="") as f:
            for r in csv.DictReader(f):
                rows.append(LabelledText("gptfuzz", questions[int(r["question"])], r["Response"].strip(),
                                         r["label"].strip() == "1"))
    return random.Random(0).sample(rows, GPTFUZZ_SAMPLE)


def _benign_instruction_rows(raw: Path) -> list[LabelledText]:
    evals = []
    for model in ALPACA_EVAL_MODELS:
        for item in json.loads((raw / f"alpaca_eval_{model}.json").read_text(encoding="utf-8")):
            evals.append(LabelledText("alpaca-eval", str(item["instruction"]), str(item["output"]).strip(), False))
    rows = random.Random(0).sample(evals, ALPACA_EVAL_SAMPLE)
    for item in json.loads((raw / "alpaca_data_1k.json").read_text(encoding="utf-8")):
        request = "\n\n".join(p for p in (item["instruction"], item.get("input") or "") if p)
        rows.append(LabelledText("alpaca", request, str(item["output"]).strip(), False))
    return [r for r in rows if r.response]


def load_rows(raw: Path) -> list[LabelledText]:
    """Every labelled response, after checking each raw file's sha256; exact duplicate responses dropped
    (the first kept), and responses labelled both ways dropped entirely."""
    for name, (_, origin, _, digest) in RAW_FILES.items():
        if not (raw / name).is_file():
            raise SystemExit(f"{raw / name} is missing (copy it from {origin}; see CARD.md)")
        got = sha256_file(raw / name)
        if got != digest:
            raise SystemExit(f"{raw / name}: sha256 {got} is not {digest} ({origin})")
    rows: list[LabelledText] = []
    for name, (source, *_rest) in RAW_FILES.items():
        if name.startswith("guardreasoner_"):
            rows += _guardreasoner_rows(raw / name, source)
    rows += _gptfuzz_rows(raw)
    rows += _benign_instruction_rows(raw)
    labels: dict[str, set[bool]] = {}
    for r in rows:
        labels.setdefault(r.response, set()).add(r.harmful)
    seen: set[str] = set()
    out = []
    for r in rows:
        if len(labels[r.response]) == 1 and r.response not in seen:
            seen.add(r.response)
            out.append(r)
    return out


def benign_sets() -> dict[str, list[str]]:
    """The held-out benign answers (never trained on): the calibration sets, written elsewhere."""
    calibration = DATA_DIR.parent / "calibration"
    return {f"calibration/{p.stem}": [r["messages"][-1]["content"] for r in read_jsonl(p)]
            for p in sorted(calibration.glob("benign_*.jsonl"))}


def example_sets() -> dict[str, list[str]]:
    """The bundled examples' trained-on responses: written by this project, a smoke test only."""
    examples = DATA_DIR.parents[2] / "examples"
    return {f"examples/{p.stem}": [r["messages"][-1]["content"] for r in read_jsonl(p)]
            for p in sorted(examples.glob("*.jsonl"))}


# ------------------------------------------------------------------------------------------------
# the head
# ------------------------------------------------------------------------------------------------
def _class_balance(y: np.ndarray) -> np.ndarray:
    w = np.ones(len(y))
    for v in (True, False):
        sel = y == v
        if sel.any():
            w[sel] = 0.5 * len(y) / sel.sum()
    return w


def fit_head(x: np.ndarray, y: np.ndarray, sources: Sequence[str],
             cfg: jt.HeadConfig = HEAD, seeds: int = SEEDS) -> list[dict[str, np.ndarray]]:
    weights = jt.row_weights(sources, SOURCE_CAP) * _class_balance(y)
    return [jt.fit_mlp(x, y[:, None].astype(np.float32), np.ones((len(x), 1), np.float32),
                       dataclasses.replace(cfg, seed=seed), weights) for seed in range(seeds)]


def max_over_windows(window_scores: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Per response, the highest of its windows' scores (``owner[i]`` = the response window i belongs to)."""
    out = np.full(n, -np.inf)
    np.maximum.at(out, owner, window_scores)
    return out


class WindowedTexts:
    """Responses cut into windows, their features computed once (embeddings from ``embed``)."""

    def __init__(self, responses: Sequence[str], embed: Callable[[Sequence[str]], np.ndarray]):
        per = [response_windows(r) for r in responses]
        self.n = len(responses)
        self.windows = [w for ws in per for w in ws]
        self.owner = np.array([i for i, ws in enumerate(per) for _ in ws], dtype=np.int64)
        self.first = np.array([k == 0 for ws in per for k in range(len(ws))])
        self.x = features(embed(self.windows), self.windows)

    def logits(self, score: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        return max_over_windows(score(self.x), self.owner, self.n)


def _rates(p: np.ndarray, y: np.ndarray | None, threshold: float) -> dict:
    flagged = p >= threshold
    if y is None:
        return {"n": int(len(p)), "flagged": round(float(flagged.mean()), 4) if len(p) else None}
    out: dict = {"n": int(len(y)), "harmful": int(y.sum())}
    if y.any():
        out["recall"] = round(float(flagged[y].mean()), 4)
    if (~y).any():
        out["false_flags"] = round(float(flagged[~y].mean()), 4)
    return out


def train(raw: Path, out: Path, log: Callable[[str], None] = print, cache_dir: Path | None = None) -> dict:
    from evaluation.judges.encoder import MiniLMEncoder
    from evaluation.runtime import current_runtime

    rows = load_rows(raw)
    log(f"{len(rows)} labelled responses: " + ", ".join(
        f"{s} {sum(r.source == s for r in rows)} ({sum(r.harmful for r in rows if r.source == s)} harmful)"
        for s in sorted({r.source for r in rows})))
    encoder = MiniLMEncoder()
    store = jt.EmbeddingStore(encoder, Path(cache_dir or current_runtime().cache_dir) / "judges"
                              / f"embeddings-minilm-{encoder.max_length}-{'bf16' if encoder.bf16 else 'fp32'}.npz")

    def embed(texts: Sequence[str]) -> np.ndarray:
        return store.embed(list(texts), lambda d, n: log(f"  embedded {d}/{n}"))

    y = np.array([r.harmful for r in rows])
    sources = np.array([r.source for r in rows])
    data = WindowedTexts([r.response for r in rows], embed)
    held_out = {**benign_sets(), **example_sets()}
    held = {name: WindowedTexts(texts, embed) for name, texts in held_out.items()}
    # trained on each response's first window: the windows after it exist only for long responses, and a
    # label says whether the whole response is harmful, not which window is
    train_rows = data.first
    win_y, win_src = y[data.owner], sources[data.owner]

    # leave one source out: train on the others' first windows, score the left-out source's responses
    oof = np.zeros(len(rows))
    for s in sorted(set(sources)):
        fit = train_rows & (win_src != s)
        heads = fit_head(data.x[fit], win_y[fit], list(win_src[fit]))
        test = sources == s
        oof[test] = data.logits(functools.partial(ensemble_logits, heads))[test]
        log(f"  left out {s}")
    calibration = jt.fit_platt(oof, y.astype(np.float64))

    def calibrated(logits: np.ndarray) -> np.ndarray:
        return jt.sigmoid(calibration[0] * logits + calibration[1])

    heads = fit_head(data.x[train_rows], win_y[train_rows], list(win_src[train_rows]))
    save_heads(out, heads, calibration)
    p_oof = calibrated(oof)
    benign = np.isin(sources, BENIGN_SOURCES)
    threshold = next((t for t in THRESHOLD_CANDIDATES if (p_oof[benign] >= t).mean() <= BENIGN_FALSE_FLAG_TARGET),
                     THRESHOLD_CANDIDATES[-1])
    log(f"  threshold {threshold}")

    def per_source(p: np.ndarray, t: float) -> dict:
        out = {s: _rates(p[sources == s], y[sources == s], t) for s in sorted(set(sources))}
        safety = ~benign
        return out | {"all": _rates(p, y, t), "safety_sets": _rates(p[safety], y[safety], t)}

    loso = per_source(p_oof, threshold)
    p_held = {name: calibrated(w.logits(lambda x: ensemble_logits(heads, x))) for name, w in held.items()}
    held_final = {name: _rates(p, None, threshold) for name, p in p_held.items()}
    safety = ~benign
    # the trade-off the threshold rule picks from: recall and false flags out of fold, and the share of the
    # held-out benign answers (never trained on, not used to pick) flagged
    curve = [{"threshold": t, "benign_instructions_flagged": round(float((p_oof[benign] >= t).mean()), 4),
              "safety_sets": _rates(p_oof[safety], y[safety], t),
              **{name: round(float((p >= t).mean()), 4) for name, p in p_held.items() if name.startswith("calibration/")}}
             for t in (0.5, 0.55, 0.6, 0.65, 0.7, 0.74, 0.8, 0.85, 0.9)]

    # yardsticks: the judge's existing heads, same rows, same windows
    with np.load(EMBEDDED_WEIGHTS) as z:
        req_head = {k[4:]: z[k] for k in z.files if k.startswith("req_")}
        resp_head = {k[5:]: z[k] for k in z.files if k.startswith("resp_")}
        judge_cal = z["calibration"]
    a_h, b_h = judge_cal[2]

    def request_head_on_response(w: WindowedTexts) -> np.ndarray:
        logits = w.logits(lambda x: jt.mlp_logits(req_head, x[:, :-3])[:, 0])
        return jt.sigmoid(a_h * logits + b_h)

    # the compliance head reads the pair (three encoder passes a row): a sample of each source is enough
    rng = np.random.default_rng(0)
    pick = np.sort(np.concatenate([rng.permutation(np.flatnonzero(sources == s))[:PAIR_SAMPLE]
                                   for s in sorted(set(sources))]))
    responses = [rows[i].response for i in pick]
    pair_x = jt.combine_features(embed([rows[i].request for i in pick]), embed(responses),
                                 embed([jt.opening(t) for t in responses]), responses)
    complied = jt.sigmoid(judge_cal[1, 0] * jt.mlp_logits(resp_head, pair_x)[:, 1] + judge_cal[1, 1])
    p_req = request_head_on_response(data)
    yardsticks = {
        "request_harm_head_on_response": {
            **per_source(p_req, 0.5),
            **{name: _rates(request_head_on_response(w), None, 0.5) for name, w in held.items()}},
        "judge_compliance_head_on_pair": {
            **{s: _rates(complied[sources[pick] == s], y[pick][sources[pick] == s], 0.5)
               for s in sorted(set(sources))},
            "all": _rates(complied, y[pick], 0.5),
            "note": f"a sample of {PAIR_SAMPLE} rows a source; needs the request; gptfuzz was in the "
                    "judge's own training, so its row is not a held-out score"},
    }
    card = {
        "what": "response-harm head over all-MiniLM-L6-v2 embeddings (bf16) of a response's windows plus three "
                "refusal rules; three MLPs averaged; Platt-calibrated on leave-one-source-out logits; a "
                "response scores its worst window",
        "threshold": threshold,
        "threshold_rule": f"the lowest of 0.50..0.99 at which at most {BENIGN_FALSE_FLAG_TARGET:.0%} of the "
                          f"{'/'.join(BENIGN_SOURCES)} answers are flagged, leave-one-source-out",
        "leave_one_source_out_at_0_5": per_source(p_oof, 0.5),
        "threshold_curve": curve,
        "windows": {"window_chars": WINDOW_CHARS, "windows": RESPONSE_WINDOWS},
        "head": HEAD.to_dict() | {"seeds": SEEDS, "source_cap": SOURCE_CAP},
        "calibration": {"a": calibration[0], "b": calibration[1]},
        "sources": {n: {"source": s, "origin": o, "licence": lic, "sha256": d}
                    for n, (s, o, lic, d) in RAW_FILES.items()},
        "rows": {s: {"n": int((sources == s).sum()), "harmful": int(y[sources == s].sum())}
                 for s in sorted(set(sources))},
        "leave_one_source_out": loso,
        "held_out_benign_and_examples": held_final | {
            "note": "calibration/* are benign answers written elsewhere (validation); examples/* were written "
                    "by this project (smoke test)"},
        "yardsticks": yardsticks | {"note": "the judge's existing heads at 0.5, same rows and windows"},
        "weights_sha256": sha256_file(out),
    }
    out.with_suffix(".json").write_text(json.dumps(card, indent=1) + "\n")
    return card


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.response_harm_training",
                                description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("raw", type=Path, help="folder with the raw files of RAW_FILES")
    p.add_argument("--out", type=Path, default=DATA_DIR / "response-harm-v1.npz")
    p.add_argument("--cache-dir", type=Path, help="where the embeddings are cached (default: the runtime's cache dir)")
    args = p.parse_args(argv)
    card = train(args.raw, args.out, cache_dir=args.cache_dir)
    print(json.dumps({k: card[k] for k in ("leave_one_source_out", "held_out_benign_and_examples",
                                           "yardsticks")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
