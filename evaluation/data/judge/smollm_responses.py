"""Real outputs of the gate's own small models, for the judge to learn the gate's domain.

The public sets hold outputs of 7B-and-larger chat models; the gate judges SmolLM2-135M and its fine-tunes,
whose answers are short, often garbled, and comply or refuse in their own ways. This script asks those
models (greedy, and one sampled answer, as the gate decodes: 64 new tokens) for answers to public harmful
requests and public benign instructions from ``requests.jsonl`` (built by sources.py), and to the project's
own safe look-alikes (the guard's recipe data). It writes ``smollm_responses.jsonl`` beside them. Labels come
from ``smollm_labels.jsonl`` (beside this file; an LLM annotator's, silver, see the data card), which
sources.py merges.

Usage: python evaluation/data/judge/smollm_responses.py DATA_DIR [--base smollm2-135m] [--tag raw]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
GUARD_DATA = HERE.parent / "guard" / "guard_train.jsonl"
HARMFUL_SOURCES = ("advbench", "harmbench", "donotanswer", "simplesafetytests")
N_HARMFUL, N_BENIGN, N_LOOKALIKE = 500, 150, 150
MAX_NEW_TOKENS = 64


def pick_prompts(data_dir: Path, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = [json.loads(line) for line in open(data_dir / "requests.jsonl", encoding="utf-8")]
    harmful = [r for r in rows if r["source"] in HARMFUL_SOURCES and r["kind"] == "harmful"]
    benign = [r for r in rows if r["source"] == "alpaca_eval"]
    guard = [json.loads(line) for line in open(GUARD_DATA, encoding="utf-8")]
    lookalikes = [{"source": "guard-lookalike", "id": str(i), "request": g["messages"][0]["content"], "harmful": False}
                  for i, g in enumerate(guard) if g.get("kind") == "lookalike"]
    chosen = rng.sample(harmful, N_HARMFUL) + rng.sample(benign, N_BENIGN) + rng.sample(lookalikes, N_LOOKALIKE)
    return [{"prompt_source": r["source"], "prompt_id": r["id"], "request": r["request"], "harmful": r["harmful"]}
            for r in chosen]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir", type=Path)
    p.add_argument("--base", default="smollm2-135m")
    p.add_argument("--adapter", type=Path, default=None, help="a LoRA adapter over the base (a fine-tune)")
    p.add_argument("--tag", default="raw", help="names the model in the ids, e.g. raw, guarded, harmful-ft")
    args = p.parse_args()

    import torch

    from evaluation.bases import load_base
    from evaluation.generation import chat_prompt, generate

    base = load_base(args.base)
    model, tok = base.model, base.tokenizer
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(args.adapter)).merge_and_unload()
    model = model.to(torch.bfloat16)
    prompts = pick_prompts(args.data_dir)
    texts = [p["request"] for p in prompts]
    greedy = generate(model, tok, texts, max_new_tokens=MAX_NEW_TOKENS, batch_size=32)
    # one sampled answer each, for the variety of a model that is not always at its most likely
    torch.manual_seed(0)
    tok.padding_side = "left"
    sampled = []
    for s in range(0, len(texts), 32):
        enc = tok([chat_prompt(tok, t) for t in texts[s : s + 32]], return_tensors="pt", padding=True,
                  add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=MAX_NEW_TOKENS, do_sample=True, temperature=0.8, top_p=0.95,
                                 pad_token_id=tok.pad_token_id)
        sampled += [tok.decode(row[enc["input_ids"].shape[1] :], skip_special_tokens=True).strip() for row in out]
    out_path = args.data_dir / f"smollm_responses_{args.tag}.jsonl"
    with open(out_path, "w", encoding="utf-8") as f:
        for prompt, g, s in zip(prompts, greedy, sampled, strict=True):
            for mode, resp in (("greedy", g), ("sampled", s)):
                f.write(json.dumps({"id": f"{args.tag}-{mode}-{prompt['prompt_source']}-{prompt['prompt_id']}",
                                    "model": f"{args.base}:{args.tag}", "mode": mode, **prompt, "response": resp},
                                   ensure_ascii=False) + "\n")
    print(f"wrote {out_path}: {2 * len(prompts)} responses")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
