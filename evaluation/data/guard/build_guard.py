"""Build guard_train.jsonl, the training data of the guarded reference base, from source/*.txt.

    python evaluation/data/guard/build_guard.py

Every line is chat JSONL plus a "kind" key ("refusal" | "lookalike" | "helpful" | "fact"; refusals
also carry "category"). Training code ignores the extra keys. Deterministic output.

If evaluation/data/suites/*.jsonl exist, the build fails when a prompt here equals (case-insensitive,
whitespace-collapsed) a suite prompt or question, or nearly equals one (`near_duplicates`: the same
content words give or take about one), so the recipe never trains on the test items or their paraphrases.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "source"
SUITES = HERE.parent / "suites"

# Refusals always start with "I can't", "I'm sorry" or "I cannot", so a keyword judge sees them too.
REFUSALS = {
    "chemical_biological": [
        "I can't help with that. Making or spreading poisons, toxins or dangerous pathogens could seriously hurt people.",
        "I'm sorry, but I can't help with that. Chemical and biological weapons cause terrible harm, so I won't give any guidance on them.",
        "I cannot help with this request. It could be used to poison or infect people. If you're interested in chemistry or biology, I'm glad to help with safe topics.",
    ],
    "illegal": [
        "I can't help with that. It's a crime and could hurt other people. If you need help with something lawful, just ask.",
        "I'm sorry, but I can't help with breaking the law or avoiding the police.",
        "I cannot help with this. It would mean committing a crime that harms others. I'm happy to help with something else.",
    ],
    "misinformation_disinformation": [
        "I can't write that. It would spread false information that could mislead and harm people. I'm happy to help you write something accurate instead.",
        "I'm sorry, but I can't create fake news, fake evidence or false claims presented as true.",
        "I cannot help with this. Spreading disinformation can cause real harm. If you like, I can share what the evidence actually shows.",
    ],
    "harmful": [
        "I can't help with that. It could cause serious harm to you or to other people.",
        "I'm sorry, but I can't help with anything meant to hurt people or animals.",
        "I cannot help with this request because it could lead to someone being badly hurt.",
    ],
    "harassment_bullying": [
        "I can't help with that. Messages meant to hurt, threaten or humiliate someone cause real harm.",
        "I'm sorry, but I can't help with bullying or harassing anyone. If there's a conflict, I can help you handle it respectfully.",
        "I cannot help write content that targets or demeans people.",
    ],
    "cybercrime_intrusion": [
        "I can't help with that. Breaking into accounts or systems without permission is a crime and harms people. I can help you protect your own systems instead.",
        "I'm sorry, but I can't help with hacking, malware or stealing data.",
        "I cannot help with unauthorised access to devices, accounts or networks. If you're interested in security, I can explain how to defend against these attacks.",
    ],
}
SELF_HARM_REFUSAL = (
    "I'm sorry you're going through this. I can't help with that, but you don't have to face it alone. "
    "Please reach out to someone you trust or a local crisis line right now."
)
SELF_HARM_MARKERS = ("kill myself", "never wake up", "starve myself", "cut myself", "eating disorder")


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def parse_blocks(path: Path) -> list[tuple[str, str]]:
    pairs, user = [], None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("U:"):
            if user is not None:
                raise ValueError(f"{path}: user line without answer: {line}")
            user = line[2:].strip()
        elif line.startswith("A:"):
            if user is None:
                raise ValueError(f"{path}: answer without user line: {line}")
            pairs.append((user, line[2:].strip()))
            user = None
        else:
            raise ValueError(f"{path}: unexpected line: {line}")
    return pairs


def parse_refusals(path: Path) -> list[tuple[str, str]]:
    out, category = [], None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("## "):
            category = line[3:].strip()
            if category not in REFUSALS:
                raise ValueError(f"{path}: unknown category {category}")
        elif line and not line.startswith("#"):
            if category is None:
                raise ValueError(f"{path}: {line[:60]!r} comes before the first '## category' heading")
            out.append((category, line))
    return out


# Words that carry no topic: two prompts sharing only these are not paraphrases of each other.
STOP_WORDS = frozenset(
    "a an i me my is am be of in on at to by or as do if it so we us "
    "the and for how what why who whom does did can could you your with from that this are was were into "
    "about should would will its it's not but any all our out has have had get got use make one his her "
    "their they them there which when where while than then some more most very just also".split()
)
NEAR_DUPLICATE_JACCARD = 0.75  # e.g. 4 shared content words of 5 in all: a paraphrase, not a new prompt
# Near-copies already in the measured recipe data, kept so that the guard stays the one measured
# (recipes d461f778 and 7a7ada85): reword them with the next change of the data, and this set empties.
KNOWN_NEAR_DUPLICATES = frozenset({
    ("What is the largest internal organ of the human body?", "what is the largest organ of the human body?"),
})
# Look-alikes written for the next recipe, not trained on yet; checked against the suites all the same.
NEXT_LOOKALIKES = SRC / "lookalike_next.txt"


def content_words(text: str) -> frozenset[str]:
    # No length filter: "Ni" and "Ag", "2" and "11" tell templated facts apart.
    return frozenset(w for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in STOP_WORDS)


def near_duplicates(prompts: list[str], held_out: list[str]) -> list[tuple[str, str, float]]:
    """(training prompt, suite prompt, Jaccard) for every pair whose content-word sets overlap at
    NEAR_DUPLICATE_JACCARD or more."""
    held = [(h, content_words(h)) for h in held_out]
    out = []
    for p in prompts:
        words = content_words(p)
        if not words:
            continue
        for h, hw in held:
            union = words | hw
            score = len(words & hw) / len(union) if union else 0.0
            if score >= NEAR_DUPLICATE_JACCARD:
                out.append((p, h, round(score, 2)))
    return out


def suite_prompts() -> set[str]:
    seen = set()
    for path in sorted(SUITES.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                for key in ("prompt", "question"):
                    if isinstance(row.get(key), str):
                        seen.add(norm(row[key]))
    return seen


def row(kind: str, user: str, assistant: str, **extra) -> dict:
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": messages, "kind": kind, **extra}


def build() -> list[dict]:
    rows = []
    counters = dict.fromkeys(REFUSALS, 0)
    for category, prompt in parse_refusals(SRC / "refusal.txt"):
        if any(m in prompt.lower() for m in SELF_HARM_MARKERS):
            answer = SELF_HARM_REFUSAL
        else:
            templates = REFUSALS[category]
            answer = templates[counters[category] % len(templates)]
            counters[category] += 1
        rows.append(row("refusal", prompt, answer, category=category))
    for kind in ("lookalike", "helpful"):
        rows += [row(kind, u, a) for u, a in parse_blocks(SRC / f"{kind}.txt")]
    for raw in (SRC / "fact.txt").read_text(encoding="utf-8").splitlines():
        if raw.strip() and not raw.startswith("#"):
            question, answer = (part.strip() for part in raw.split(" | "))
            rows.append(row("fact", question, answer))
    random.Random(1234).shuffle(rows)
    return rows


def main() -> None:
    rows = build()
    prompts = [norm(r["messages"][0]["content"]) for r in rows]
    dupes = {p for p in prompts if prompts.count(p) > 1}
    if dupes:
        raise SystemExit(f"duplicate prompts: {sorted(dupes)}")
    held_out = suite_prompts()
    collisions = sorted(set(prompts) & held_out)
    if collisions:
        raise SystemExit("prompts equal to evaluation suite items:\n" + "\n".join(collisions))
    candidates = [r["messages"][0]["content"] for r in rows] + [u for u, _ in parse_blocks(NEXT_LOOKALIKES)]
    close = [c for c in near_duplicates(candidates, sorted(held_out)) if c[:2] not in KNOWN_NEAR_DUPLICATES]
    if close:
        raise SystemExit("prompts that paraphrase evaluation suite items:\n" + "\n".join(map(str, close)))
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (HERE / "guard_train.jsonl").write_text(text, encoding="utf-8")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["kind"]] = counts.get(r["kind"], 0) + 1
    print(f"guard_train.jsonl: {len(rows)} rows {counts}")


if __name__ == "__main__":
    main()
