"""Rebuild the judge training/validation data from raw public source files.

Usage:
    python evaluation/data/judge/sources.py RAW_DIR OUT_DIR

RAW_DIR holds the raw files listed in RAW_FILES (paths relative to RAW_DIR);
each is checked against its sha256 before use.  OUT_DIR receives
responses.jsonl (request/response pairs with labels) and requests.jsonl
(prompt-only rows for the request-harm screener).  See CARD.md next to this
file for where every raw file comes from and how labels are mapped.

Stdlib only; deterministic (sampling uses random.Random(0)).
"""

import csv
import hashlib
import json
import os
import random
import sys

csv.field_size_limit(sys.maxsize)

MAX_CHARS = 4000          # truncate request and response to this many characters
SOURCE_CAP = 8000         # at most this many rows from any one source
BENIGN_ANSWER_CAP = 4000  # at most this many answers to safe requests per benign source

ALPACA_EVAL_MODELS = [
    "gpt4_1106_preview",
    "claude-2.1",
    "llama-2-70b-chat-hf",
    "llama-2-7b-chat-hf",
    "Mixtral-8x7B-Instruct-v0.1",
    "Meta-Llama-3-8B-Instruct",
    "Qwen1.5-7B-Chat",
    "gemma-7b-it",
    "vicuna-13b-v1.5",
    "zephyr-7b-beta",
]

# raw file (relative to RAW_DIR) -> sha256
RAW_FILES = {
    "gptfuzz/train.csv": "e25fe2a06d2085af260927164364524628c8b5c1dd1bab1b58ddbd917c3f7cb0",
    "gptfuzz/evaluate.csv": "ca9e460c7fbcf3bc7c028c9e29297dd58cfbd54050f7729fbc635a6880a62a02",
    "gptfuzz/question_list.csv": "18531eb6bc1c8fc0b8f66822b366b872202b852bf28826cef590ad0d7a81c749",
    "alpaca_eval/gpt4_1106_preview.json": "83db546b872ddebee8965fd05fa48461ee3c32bc695c62fb57f2d214ff741ec4",
    "alpaca_eval/claude-2.1.json": "75c39fa8e8b38380b7850b422e0f36c5cba3bc5bd8c496a7833cba6f2d72c332",
    "alpaca_eval/llama-2-70b-chat-hf.json": "854b753c5135d4b698027d3423a12a94317afc654b3271fc8e384812fbe0b3c9",
    "alpaca_eval/llama-2-7b-chat-hf.json": "5a66ed18b1ecef7a6a728eb32665651853092cbf11d518538d80d86c2df1b5ae",
    "alpaca_eval/Mixtral-8x7B-Instruct-v0.1.json": "a8dd5de12218c9dffb37c1c40b2259031662c3d9c4f588e3c20026f8562db8aa",
    "alpaca_eval/Meta-Llama-3-8B-Instruct.json": "c698a502f05b2de1270562073807a6161f0f335f3ed3879ba3666b1d8af1bec6",
    "alpaca_eval/Qwen1.5-7B-Chat.json": "cb1e7906f99e2e5c586aec8169af3e70a27931ca033c9a3be7dcf63e1e61bae7",
    "alpaca_eval/gemma-7b-it.json": "fc3bbec3647638f35409ab726229fdc582b1f8b0d0c41a5c01171e883e0aa66c",
    "alpaca_eval/vicuna-13b-v1.5.json": "76e2a8ed9d805b73799f5478bc958abd150e9531b1ec3086612d9fde59a66d80",
    "alpaca_eval/zephyr-7b-beta.json": "bc6795b00c6cf6a1315f8b71738356adc7fcb8816d2199faf1a8ab56d982726d",
    "alpaca/alpaca_data_1k.json": "308ff96375b5a08f7ebf0c763aaf02f7436beb974a28f868eba9823919e6b74c",
    "harmbench/harmbench_behaviors_text_all.csv": "8d81accedd38eaaf8b760618622bb888417d1fd0c86eba65c427a16f1cbb4afc",
    "advbench/advbench_behaviors.csv": "0e635254df9065ae6f8d074534b660fa7a361d1ad269e2c8e1b7377961802a86",
    "xstest/xstest_prompts.csv": "11783fb294ed017473ee53c207d71f2161c7672c8d0b037501e78387f801cb5a",
    "llm_self_defense/all_repsonses_gpt.csv": "043cf0ba5ccc92f6726693d2ad53e19b3e8609f7a80a5bb9f0e7b9eda47e0056",
    "llm_self_defense/all_repsonses_llama.csv": "9702439619a4cd9ba7eef2ad8b073a3cb275e2040ba586d4da2d33122de48574",
    "simplesafetytests/sst_test_cases.csv": "6d95a1301e0d0f3a3c4cf5392f4afff11ad6e3066f95d23aaa138d44aedf986c",
    "donotanswer/discrimination_exclusion_toxicity_hateful_offensive.jsonl": "a40a9dcf9c9db56b596f072c3eb0fcb3a22aa23f98565757ddbdc7f9d594c90b",
    "donotanswer/information_hazard.jsonl": "2338681cbc80c5d0f079eea4945661d1eaca568f3f6e0712411675d770b7a7ea",
    "donotanswer/malicious_uses.jsonl": "f3bbf55e01149debb73312a021222ea2df9e6ecc05dffec5947a3db9c0bc7443",
}

# Do-Not-Answer risk areas kept for the screener (the other two, human_chatbox and
# misinformation_harms, are mostly requests that are fine to answer with care).
DNA_HARMFUL_AREAS = [
    "discrimination_exclusion_toxicity_hateful_offensive",
    "information_hazard",
    "malicious_uses",
]


# ---------------------------------------------------------------- helpers

def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_raw(raw_dir):
    bad = []
    for rel, want in sorted(RAW_FILES.items()):
        path = os.path.join(raw_dir, rel)
        if not os.path.isfile(path):
            bad.append(f"missing: {rel}")
            continue
        got = sha256_of(path)
        if got != want:
            bad.append(f"sha256 mismatch: {rel}\n  expected {want}\n  got      {got}")
    if bad:
        sys.exit("raw input check failed:\n" + "\n".join(bad))


def read_csv(raw_dir, rel):
    with open(os.path.join(raw_dir, rel), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_json(raw_dir, rel):
    with open(os.path.join(raw_dir, rel), encoding="utf-8") as f:
        return json.load(f)


def clip(text):
    return (text or "").strip()[:MAX_CHARS]


def sample(rows, cap):
    """Deterministic down-sampling that keeps the original order."""
    if len(rows) <= cap:
        return rows
    keep = sorted(random.Random(0).sample(range(len(rows)), cap))
    return [rows[i] for i in keep]


def response_row(source, id_, request, response, model, request_harmful,
                 complied, refused, label_origin):
    return {
        "source": source,
        "id": id_,
        "request": clip(request),
        "response": clip(response),
        "model": model,
        "request_harmful": request_harmful,
        "complied": complied,
        "refused": refused,
        "label_origin": label_origin,
    }


def dedup_pairs(rows):
    """Drop exact duplicate (request, response) pairs, keeping the first.

    If the copies disagree on a label, drop every copy: a pair the source
    labels both ways is not usable as ground truth.
    """
    labels = {}
    for r in rows:
        key = (r["request"], r["response"])
        labels.setdefault(key, set()).add((r["request_harmful"], r["complied"], r["refused"]))
    seen, out = set(), []
    for r in rows:
        key = (r["request"], r["response"])
        if key in seen or len(labels[key]) > 1 or not r["response"]:
            continue
        seen.add(key)
        out.append(r)
    return out


# ---------------------------------------------------------------- responses

def gptfuzz(raw_dir):
    """GPTFuzz human-labelled jailbreak responses (train + evaluate splits).

    'question' is an index into question_list.csv (100 harmful questions);
    the jailbreak template that wrapped it is not recorded, so the request is
    the bare harmful question.  label 1 = jailbroken (complied), 0 = not.
    A 0 is not necessarily a refusal (may be off-topic / role-play without
    harmful content), so refused stays null.
    """
    questions = {r["index"]: r["text"] for r in read_csv(raw_dir, "gptfuzz/question_list.csv")}
    rows = []
    for split in ("train", "evaluate"):
        for i, r in enumerate(read_csv(raw_dir, f"gptfuzz/{split}.csv")):
            label = r["label"].strip()
            if label not in ("0", "1"):
                continue
            rows.append(response_row(
                "gptfuzz", f"{split}-{i}", questions[r["question"].strip()], r["Response"],
                "", True, label == "1", None, "human"))
    return sample(dedup_pairs(rows), SOURCE_CAP)


def alpaca_eval(raw_dir):
    """AlpacaEval model outputs: real chat-model answers to 805 benign instructions.

    Safe requests, so complied=false by definition; refused is unknown
    (some chat models do over-refuse benign prompts), so it stays null.
    """
    rows = []
    for model in ALPACA_EVAL_MODELS:
        for i, r in enumerate(read_json(raw_dir, f"alpaca_eval/{model}.json")):
            rows.append(response_row(
                "alpaca_eval", f"{model}-{i}", r["instruction"], r["output"],
                r.get("generator") or model, False, False, None, "definition"))
    return sample(dedup_pairs(rows), BENIGN_ANSWER_CAP)


def alpaca(raw_dir):
    """Stanford Alpaca (1k subset): text-davinci-003 answers to benign instructions."""
    rows = []
    for i, r in enumerate(read_json(raw_dir, "alpaca/alpaca_data_1k.json")):
        request = r["instruction"] + (("\n\n" + r["input"]) if r.get("input") else "")
        rows.append(response_row(
            "alpaca", str(i), request, r["output"], "text-davinci-003",
            False, False, None, "definition"))
    return sample(dedup_pairs(rows), BENIGN_ANSWER_CAP)


def llm_self_defense(raw_dir):
    """LLM Self Defense (Phute et al.): 'is harmful?' Yes/No per response.

    The Yes rows are responses induced by attacks on AdvBench-style harmful
    requests (GPT-3.5 role-play prompts; Llama-2 prompts that are the attack
    target strings themselves); the No rows answer benign how-to requests.
    The labels come with the files without a stated annotation procedure, so
    they are 'silver'.  Yes -> harmful request, complied; No -> benign request,
    not complied (answers, so refused=false).
    """
    rows = []
    for name, model in (("gpt", "gpt-3.5-turbo"), ("llama", "llama-2-7b-chat")):
        for i, r in enumerate(read_csv(raw_dir, f"llm_self_defense/all_repsonses_{name}.csv")):
            label = r["is harmful?"].strip().lower()
            if label not in ("yes", "no"):
                continue
            harmful = label == "yes"
            rows.append(response_row(
                "llm_self_defense", f"{name}-{i}", r["prompt"], r["response"], model,
                harmful, harmful, None if harmful else False, "silver"))
    return sample(dedup_pairs(rows), SOURCE_CAP)


RESPONSE_SOURCES = [gptfuzz, llm_self_defense, alpaca_eval, alpaca]


# ---------------------------------------------------------------- requests

def request_row(source, id_, request, harmful, kind):
    return {"source": source, "id": id_, "request": clip(request), "harmful": harmful, "kind": kind}


def harmbench_requests(raw_dir):
    rows = []
    for r in read_csv(raw_dir, "harmbench/harmbench_behaviors_text_all.csv"):
        text = r["Behavior"]
        if r["ContextString"].strip():
            text = r["ContextString"].strip() + "\n\n---\n\n" + text
        kind = {"copyright": "harmful-copyright", "contextual": "harmful-contextual"}.get(
            r["FunctionalCategory"], "harmful")
        rows.append(request_row("harmbench", r["BehaviorID"], text, True, kind))
    return rows


def advbench_requests(raw_dir):
    return [request_row("advbench", r["BehaviorID"], r["Behavior"], True, "harmful")
            for r in read_csv(raw_dir, "advbench/advbench_behaviors.csv")]


def xstest_requests(raw_dir):
    rows = []
    for r in read_csv(raw_dir, "xstest/xstest_prompts.csv"):
        harmful = r["label"].strip() == "unsafe"
        rows.append(request_row("xstest", r["id"], r["prompt"], harmful,
                                "harmful" if harmful else "safe-lookalike"))
    return rows


def gptfuzz_requests(raw_dir):
    return [request_row("gptfuzz", r["index"], r["text"], True, "harmful")
            for r in read_csv(raw_dir, "gptfuzz/question_list.csv")]


def alpaca_eval_requests(raw_dir):
    rows = read_json(raw_dir, f"alpaca_eval/{ALPACA_EVAL_MODELS[0]}.json")
    return [request_row("alpaca_eval", str(i), r["instruction"], False, "benign-instruction")
            for i, r in enumerate(rows)]


def alpaca_requests(raw_dir):
    out = []
    for i, r in enumerate(read_json(raw_dir, "alpaca/alpaca_data_1k.json")):
        text = r["instruction"] + (("\n\n" + r["input"]) if r.get("input") else "")
        out.append(request_row("alpaca", str(i), text, False, "benign-instruction"))
    return out


def simplesafetytests_requests(raw_dir):
    return [request_row("simplesafetytests", r["id"], r["prompts_final"], True, "harmful")
            for r in read_csv(raw_dir, "simplesafetytests/sst_test_cases.csv")]


def donotanswer_requests(raw_dir):
    rows = []
    for area in DNA_HARMFUL_AREAS:
        with open(os.path.join(raw_dir, f"donotanswer/{area}.jsonl"), encoding="utf-8") as f:
            for i, line in enumerate(f):
                if line.strip():
                    rows.append(request_row("donotanswer", f"{area}-{i}",
                                            json.loads(line)["prompt"], True, "harmful"))
    return rows


REQUEST_SOURCES = [harmbench_requests, advbench_requests, xstest_requests,
                   simplesafetytests_requests, donotanswer_requests, gptfuzz_requests,
                   alpaca_eval_requests, alpaca_requests]


# ---------------------------------------------------------------- refusal labels

# None of the sources above labels refusals. refusal_labels.jsonl (beside this file) holds refusal labels of
# 1,800 of their responses, given by an LLM annotator (silver labels) following refusal_rubric.md: "full" and
# "partial" are refusals, "none" is not. Ids are "source:id".
REFUSAL_LABELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "refusal_labels.jsonl")


def apply_refusal_labels(responses):
    with open(REFUSAL_LABELS, encoding="utf-8") as f:
        labels = {r["id"]: r["refused"] for r in map(json.loads, f)}
    used = 0
    for r in responses:
        r["refused_origin"] = r["label_origin"] if r["refused"] is not None else None
        kind = labels.get(f"{r['source']}:{r['id']}")
        if kind in ("full", "partial", "none"):
            r["refused"] = kind != "none"
            r["refusal_kind"] = kind
            r["refused_origin"] = "llm-annotator"
            used += 1
    if used != len(labels):
        sys.exit(f"refusal_labels.jsonl: {len(labels) - used} of {len(labels)} ids are not in the responses")


# ---------------------------------------------------------------- the gate's own small models

# smollm_responses.py (beside this file) writes SmolLM2's answers to public requests into OUT_DIR as
# smollm_responses_<tag>.jsonl; smollm_labels.jsonl (beside this file) holds an LLM annotator's refusal and
# compliance labels of them (silver, following compliance_rubric.md). Only labelled answers are kept.
SMOLLM_LABELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smollm_labels.jsonl")


def smollm_rows(out_dir):
    if not os.path.exists(SMOLLM_LABELS):
        return []
    with open(SMOLLM_LABELS, encoding="utf-8") as f:
        labels = {r["id"]: r for r in map(json.loads, f)}
    rows = []
    for name in sorted(os.listdir(out_dir)):
        if not (name.startswith("smollm_responses_") and name.endswith(".jsonl")):
            continue
        tag = name[len("smollm_responses_"):-len(".jsonl")]
        with open(os.path.join(out_dir, name), encoding="utf-8") as f:
            for r in map(json.loads, f):
                label = labels.get(r["id"])
                if label is None:
                    continue
                harmful = bool(r["harmful"])
                row = response_row(f"smollm2-{tag}", r["id"], r["request"], r["response"], r["model"], harmful,
                                   harmful and bool(label["complied"]), label["refused"] != "none",
                                   "llm-annotator")
                row["refused_origin"] = "llm-annotator"
                row["refusal_kind"] = label["refused"]
                rows.append(row)
    return dedup_pairs(rows)


# ---------------------------------------------------------------- main

def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def build(raw_dir, out_dir):
    verify_raw(raw_dir)
    os.makedirs(out_dir, exist_ok=True)

    responses, seen = [], set()
    for load in RESPONSE_SOURCES:
        for r in load(raw_dir):
            key = (r["request"], r["response"])
            if key not in seen:  # exact duplicates across sources
                seen.add(key)
                responses.append(r)

    requests, seen = [], set()
    for load in REQUEST_SOURCES:
        for r in load(raw_dir):
            if r["request"] and r["request"] not in seen:   # first source wins
                seen.add(r["request"])
                requests.append(r)

    apply_refusal_labels(responses)
    for r in smollm_rows(out_dir):
        if (r["request"], r["response"]) not in seen:
            seen.add((r["request"], r["response"]))
            responses.append(r)
    write_jsonl(os.path.join(out_dir, "responses.jsonl"), responses)
    write_jsonl(os.path.join(out_dir, "requests.jsonl"), requests)

    for name, rows in (("responses.jsonl", responses), ("requests.jsonl", requests)):
        path = os.path.join(out_dir, name)
        print(f"{name}: {len(rows)} rows  sha256 {sha256_of(path)}")
        counts = {}
        for r in rows:
            if name == "responses.jsonl":
                key = (r["source"], r["label_origin"], r["complied"], r["refused"])
            else:
                key = (r["source"], r["kind"], r["harmful"])
            counts[key] = counts.get(key, 0) + 1
        for key in sorted(counts, key=str):
            print("   ", key, counts[key])


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    build(sys.argv[1], sys.argv[2])
