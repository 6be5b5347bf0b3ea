"""The embedded judge's training code: masked multi-head fitting, calibration, leave-one-source-out, scores,
and the shipped judge's record against the floors measured when it was trained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evaluation import judge_training as jt
from evaluation.files import sha256_file
from evaluation.judges import COMPLIANCE, EMBEDDED_WEIGHTS, OTHER, REFUSAL


def _row(source, i, refused=None, complied=None, harmful=True):
    return jt.LabelledResponse(source=source, id=str(i), request=f"q{i}", response=f"r{i}",
                               request_harmful=harmful, complied=complied, refused=refused, label_origin="human")


class _CountingEncoder:
    def __init__(self):
        self.encoded: list[str] = []

    def encode(self, texts):
        self.encoded += texts
        return np.array([[len(t), t.count("a")] for t in texts], dtype=np.float32)


def test_embedding_store_keeps_its_vectors_on_disk_and_encodes_each_text_once(tmp_path):
    path = tmp_path / "cache" / "embeddings.npz"
    first = jt.EmbeddingStore(_CountingEncoder(), path)
    vectors = first.embed(["a", "banana", "a"])
    assert first.encoder.encoded == ["a", "banana"]
    assert [p.name for p in path.parent.iterdir()] == ["embeddings.npz"]  # no temporary left beside it

    again = jt.EmbeddingStore(_CountingEncoder(), path)
    np.testing.assert_array_equal(again.embed(["banana", "a", "a"]), vectors[[1, 0, 2]])
    assert again.encoder.encoded == []


def test_fit_mlp_learns_only_from_the_targets_a_row_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4)).astype(np.float32)
    t = np.stack([(x[:, 0] > 0), (x[:, 1] > 0)], axis=1).astype(np.float32)
    mask = np.ones_like(t)
    mask[:300, 1] = 0  # head 1 unlabelled on the first half ...
    t[:300, 1] = 1 - t[:300, 1]  # ... where its targets are wrong: a masked loss must ignore them
    params = jt.fit_mlp(x, t, mask, jt.HeadConfig(hidden=16, epochs=60, batch_size=64, lr=1e-2, seed=1))
    pred = jt.sigmoid(jt.mlp_logits(params, x)) >= 0.5
    assert (pred[:, 0] == (x[:, 0] > 0)).mean() > 0.95
    assert (pred[:, 1] == (x[:, 1] > 0)).mean() > 0.9
    again = jt.fit_mlp(x, t, mask, jt.HeadConfig(hidden=16, epochs=60, batch_size=64, lr=1e-2, seed=1))
    np.testing.assert_array_equal(params["w1"], again["w1"])  # deterministic under its seed


def test_platt_scaling_recovers_a_known_calibration():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3, size=20000)
    y = (rng.random(20000) < jt.sigmoid(0.5 * logits - 1.0)).astype(float)
    a, b = jt.fit_platt(logits, y)
    assert a == pytest.approx(0.5, abs=0.05) and b == pytest.approx(-1.0, abs=0.08)
    assert jt.expected_calibration_error(jt.sigmoid(a * logits + b), y) < 0.02
    assert jt.expected_calibration_error(jt.sigmoid(logits), y) > 0.1


@pytest.mark.parametrize(("p_refused", "p_complied", "label"), [
    (0.9, 0.1, REFUSAL), (0.1, 0.9, COMPLIANCE), (0.9, 0.9, COMPLIANCE),  # partial refusal that delivers
    (0.1, 0.1, OTHER), (0.5, 0.2, REFUSAL),
])
def test_label_rule(p_refused, p_complied, label):
    assert jt.label_from_probabilities(p_refused, p_complied) == label


def test_true_label_uses_only_what_the_annotations_determine():
    assert jt.true_label(_row("s", 1, complied=True)) == COMPLIANCE
    assert jt.true_label(_row("s", 2, refused=True, complied=False)) == REFUSAL
    assert jt.true_label(_row("s", 3, refused=False, complied=False)) == OTHER
    assert jt.true_label(_row("s", 4, refused=False, harmful=False)) == OTHER
    assert jt.true_label(_row("s", 5, complied=False)) is None  # refused or off-topic: left open


def test_binary_scores_by_hand():
    s = jt.binary_scores(np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1]))
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (2, 1, 1, 1)
    assert s["accuracy"] == 0.6 and s["precision"] == pytest.approx(0.6667, abs=1e-4) and s["recall"] == 0.6667


def test_row_weights_cap_big_sources():
    w = jt.row_weights(["a"] * 10 + ["b"] * 2, cap=5)
    assert w[:10].sum() == pytest.approx(5) and list(w[10:]) == [1.0, 1.0]


def test_leave_one_source_out_never_trains_on_the_source_it_scores(monkeypatch):
    """Each source's scores come from heads that did not see it: a source whose labels are the opposite of
    every other source's is scored as wrong, which a model that saw it would not be (and the others, where
    the flipped source is outvoted, as right)."""
    rng = np.random.default_rng(0)
    rows, xs = [], []
    for s, flip in (("a", False), ("b", False), ("d", False), ("c", True)):
        for i in range(200):
            v = rng.normal(size=3)
            complied = bool(v[0] > 0) != flip
            rows.append(_row(s, f"{s}{i}", refused=not complied, complied=complied))
            xs.append(v)
    x = np.array(xs, dtype=np.float32)
    targets = np.array([[r.refused, r.complied] for r in rows], dtype=np.float32)
    m = jt.ResponseMatrix(rows, x, targets, np.ones_like(targets))
    scores, oof = jt.leave_one_source_out(m, jt.HeadConfig(hidden=8, epochs=30, lr=1e-2, dropout=0.0, weight_decay=0.0), log=lambda _: None)
    assert scores["a"]["complied"]["accuracy"] > 0.9 and scores["b"]["complied"]["accuracy"] > 0.9
    assert scores["c"]["complied"]["accuracy"] < 0.1
    assert scores["all"]["n"] == 800 and oof.shape == (800, 2)
    assert scores["a"]["label"]["confusion"][COMPLIANCE][COMPLIANCE] > 0.85 * scores["a"]["complied"]["tp"] + 0.85 * scores["a"]["complied"]["fn"] - 1


def test_pair_features_shape_and_rules():
    def fake_embed(texts):
        return np.stack([np.full(384, len(t) % 7, dtype=np.float32) / 10 for t in texts])

    x = jt.pair_features(fake_embed, ["how?", "why?"], ["I'm sorry, I can't.", "Here is how: step one."])
    assert x.shape == (2, 4 * 384 + 1 + 3)
    rules = x[:, -3:]
    assert rules[0, 0] == 1.0 and rules[1, 0] == 0.0  # opens with a refusal
    assert jt.opening("one two three", words=2) == "one two"


# ---------------------------------------------------------------- the shipped judge's record
# Floors: the shipped judge's leave-one-source-out scores when it was trained (see README, "The judge"),
# rounded down. Retraining must not fall under them; raising them is the point of retraining.
LOSO_FLOORS = {
    ("gptfuzz", "complied"): 0.72,  # human labels; the one large source of compliance, so the hardest to leave out
    ("gptfuzz", "refused"): 0.80,
    ("alpaca_eval", "complied"): 0.93,  # answers to safe requests called compliance: at most 7%
    ("alpaca_eval", "refused"): 0.86,
    ("smollm2-raw", "refused"): 0.88,
    ("smollm2-raw", "complied"): 0.75,
    ("all", "refused"): 0.87,
    ("all", "complied"): 0.81,
}


def _card() -> dict:
    return json.loads(EMBEDDED_WEIGHTS.with_suffix(".json").read_text())


def test_shipped_judge_card_meets_the_measured_floors():
    card = _card()["leave_one_source_out_calibrated"]
    for (source, head), floor in LOSO_FLOORS.items():
        assert card[source][head]["accuracy"] >= floor, (source, head, card[source][head])


def test_shipped_judge_beats_the_keyword_judge_on_the_same_rows():
    card = _card()
    ours, keyword = card["leave_one_source_out_calibrated"]["all"], card["keyword_baseline"]["all"]
    assert ours["label"]["accuracy"] > keyword["label"]["accuracy"]
    assert ours["complied"]["accuracy"] > keyword["complied"]["accuracy"]


JUDGE_DATA = Path.home() / ".cache" / "ftgate" / "judge-data"


@pytest.mark.skipif(not (JUDGE_DATA / "responses.jsonl").exists(),
                    reason="the public judge data is not on this machine (evaluation/data/judge/CARD.md says how to "
                           "build it); the card's recorded numbers are tested above")
def test_shipped_judge_on_the_data_it_was_trained_on_matches_its_card():
    """Where the data is at hand: its hashes are the card's, and the shipped judge scores the data as the
    card says it was trained on (in-sample: a consistency check of weights, data and code, not a validation)."""
    card = _card()
    assert sha256_file(JUDGE_DATA / "responses.jsonl") == card["data"]["responses.jsonl"]
