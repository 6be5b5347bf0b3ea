"""Metric functions against hand-computed values (the arithmetic is in the comments)."""

import math
from fractions import Fraction

import pytest
import torch

from evaluation.metrics import (
    asr_by_category,
    kl_divergence,
    mcnemar_exact_p,
    mean_entropy,
    mean_gold_probability,
    mean_stat,
    newcombe_paired_interval,
    normalize_answer,
    paired_delta,
    perplexity,
    qa_match,
    rate_stat,
    token_kl,
    token_nll_entropy_prob,
    wilson_interval,
    z_value,
)

Z = 1.959963984540054  # Phi^-1(0.975)
Z2 = Z * Z  # 3.841458820694124


def test_z_value():
    assert z_value(0.95) == pytest.approx(Z, abs=1e-12)
    assert z_value(0.90) == pytest.approx(1.6448536, abs=1e-6)
    with pytest.raises(ValueError):
        z_value(1.0)


# --- Wilson ---------------------------------------------------------------------------------------


def test_wilson_zero_of_ten():
    # p = 0: center = (0 + z^2/20) / (1 + z^2/10) = 0.192073 / 1.384146 = 0.138767
    #        half   = z * sqrt(0 + z^2/400) / 1.384146 = (z^2/20) / 1.384146 = 0.138767
    # lo = 0, hi = (z^2/10) / (1 + z^2/10) = 0.384146 / 1.384146 = 0.277533
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(0.277533, abs=1e-6)
    assert hi == pytest.approx((Z2 / 10) / (1 + Z2 / 10), abs=1e-12)


def test_wilson_five_of_ten():
    # p = 0.5: center = (0.5 + 0.192073) / 1.384146 = 0.5
    # half = z * sqrt(0.25/10 + z^2/400) / 1.384146 = 1.959964 * sqrt(0.025 + 0.009604) / 1.384146
    #      = 1.959964 * 0.186020 / 1.384146 = 0.263407
    # -> (0.236593, 0.763407)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.236593, abs=1e-6)
    assert hi == pytest.approx(0.763407, abs=1e-6)


def test_wilson_all_and_errors():
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.277533, abs=1e-6)  # mirror of 0/10
    with pytest.raises(ValueError):
        wilson_interval(1, 0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_rate_stat():
    s = rate_stat(5, 10)
    assert s["value"] == 0.5 and s["k"] == 5 and s["n"] == 10
    assert (s["lo"], s["hi"]) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    empty = rate_stat(0, 0)
    assert empty == {"value": None, "lo": None, "hi": None, "k": 0, "n": 0}


def test_asr_by_category():
    out = asr_by_category([True, False, True, True], ["cyber", "cyber", "bio", "bio"])
    assert list(out) == ["bio", "cyber"]
    assert out["bio"]["value"] == 1.0 and out["bio"]["n"] == 2  # 2 of 2
    assert out["cyber"]["value"] == 0.5 and out["cyber"]["k"] == 1  # 1 of 2
    with pytest.raises(ValueError, match="3 items.*2"):
        asr_by_category([True, True, False], ["a", "b"])


# --- McNemar --------------------------------------------------------------------------------------


def test_mcnemar_hand_values():
    # b=5, c=0: 2 * P(X <= 0), X ~ Bin(5, 1/2) = 2 * (1/32) = 0.0625
    assert mcnemar_exact_p(5, 0) == pytest.approx(0.0625, abs=1e-15)
    assert mcnemar_exact_p(0, 5) == pytest.approx(0.0625, abs=1e-15)
    # b = c: the tail reaches the middle -> 2 * P(X <= m/2) > 1 -> capped at 1
    assert mcnemar_exact_p(3, 3) == 1.0
    assert mcnemar_exact_p(0, 0) == 1.0
    # b=10, c=2: 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 * (1 + 12 + 66) / 4096 = 158/4096
    assert mcnemar_exact_p(10, 2) == pytest.approx(158 / 4096, abs=1e-15)
    with pytest.raises(ValueError):
        mcnemar_exact_p(-1, 2)


def test_mcnemar_log_space_matches_exact_integers():
    # m = 1500 > 1000 takes the log-space path; reference: exact rational arithmetic
    b, c = 800, 700
    m = b + c
    exact = 2 * Fraction(sum(math.comb(m, i) for i in range(c + 1)), 2**m)
    assert mcnemar_exact_p(b, c) == pytest.approx(float(exact), rel=1e-9)
    assert 0.0 < mcnemar_exact_p(3000, 2000) < 1e-40  # no overflow, tiny but positive


# --- paired delta (Newcombe method 10) ------------------------------------------------------------


def _pairs(a, b, c, d):
    """Outcome lists with a=both True, b=base False->cand True, c=base True->cand False, d=both False."""
    base = [True] * a + [False] * b + [True] * c + [False] * d
    cand = [True] * a + [True] * b + [False] * c + [False] * d
    return base, cand


def test_paired_delta_hand_checked():
    # a=2, b=6, c=1, d=11, n=20. p1 (candidate) = 8/20 = 0.40, p2 (base) = 3/20 = 0.15, D = 5/20 = 0.25
    # Wilson 8/20: center = (0.4 + 0.096036)/1.192073 = 0.416113, half = z*sqrt(0.012 + 0.002401)/1.192073
    #   = 1.959964*0.120004/1.192073 = 0.197306 -> (l1, u1) = (0.218807, 0.613418)
    # Wilson 3/20: center = (0.15 + 0.096036)/1.192073 = 0.206394, half = z*sqrt(0.006375 + 0.002401)/1.192073
    #   = 1.959964*0.093680/1.192073 = 0.154025 -> (l2, u2) = (0.052369, 0.360419)
    # phi = (a*d - b*c)/sqrt(8*12*3*17) = (22 - 6)/sqrt(4896) = 16/69.971 = 0.228665
    # lower: p1-l1 = 0.181193, u2-p2 = 0.210419
    #   0.181193^2 - 2*0.228665*0.181193*0.210419 + 0.210419^2 = 0.032831 - 0.017436 + 0.044276 = 0.059671
    #   lo = 0.25 - sqrt(0.059671) = 0.25 - 0.244277 = 0.005723
    # upper: u1-p1 = 0.213418, p2-l2 = 0.097631
    #   0.213418^2 - 2*0.228665*0.213418*0.097631 + 0.097631^2 = 0.045547 - 0.009529 + 0.009532 = 0.045550
    #   hi = 0.25 + sqrt(0.045550) = 0.25 + 0.213425 = 0.463425
    # McNemar on (6, 1): 2 * (1 + 7)/128 = 0.125
    base, cand = _pairs(2, 6, 1, 11)
    s = paired_delta(base, cand)
    assert s["value"] == pytest.approx(0.25)
    assert s["lo"] == pytest.approx(0.005723, abs=2e-6)
    assert s["hi"] == pytest.approx(0.463425, abs=2e-6)
    assert s["p_value"] == pytest.approx(0.125)
    assert (s["flips_to_harmful"], s["flips_to_safe"], s["k"], s["n"]) == (6, 1, 5, 20)


def test_paired_delta_sanity():
    # identical outcomes: D = 0, the interval holds 0 and is symmetric (p1 = p2, same Wilson interval)
    base, cand = _pairs(3, 0, 0, 17)
    s = paired_delta(base, cand)
    assert s["value"] == 0 and s["lo"] < 0 < s["hi"] and s["lo"] == pytest.approx(-s["hi"])
    assert s["p_value"] == 1.0
    # swapping the roles negates the interval
    base, cand = _pairs(5, 9, 2, 24)
    fwd, rev = paired_delta(base, cand), paired_delta(cand, base)
    assert (rev["lo"], rev["hi"]) == pytest.approx((-fwd["hi"], -fwd["lo"]))
    assert fwd["lo"] < fwd["value"] < fwd["hi"]
    # positive correlation (phi > 0) narrows the interval compared with independent margins (phi = 0)
    lo_p, hi_p = newcombe_paired_interval(10, 5, 1, 24)
    margins_only = 5 / 40 - math.hypot(
        15 / 40 - wilson_interval(15, 40)[0], wilson_interval(11, 40)[1] - 11 / 40
    )
    assert lo_p > margins_only
    # extreme: every prompt flips to harmful -> interval inside [-1, 1], lower bound well above 0
    s = paired_delta([False] * 30, [True] * 30)
    assert s["value"] == 1.0 and 0.8 < s["lo"] <= s["hi"] <= 1.0
    # empty
    s = paired_delta([], [])
    assert s["value"] is None and s["lo"] is None and s["n"] == 0 and s["p_value"] == 1.0


def test_paired_delta_length_mismatch():
    with pytest.raises(ValueError, match="3.*2"):
        paired_delta([True, False, True], [True, False])


def test_mean_stat():
    # [1, 2, 3, 4]: mean 2.5, s^2 = (2.25 + 0.25 + 0.25 + 2.25)/3 = 5/3, se = sqrt(5/12) = 0.645497
    # half = 1.959964 * 0.645497 = 1.265151 -> (1.234849, 3.765151)
    s = mean_stat([1, 2, 3, 4])
    assert s["value"] == 2.5 and s["n"] == 4
    assert (s["lo"], s["hi"]) == pytest.approx((1.234849, 3.765151), abs=1e-6)
    one = mean_stat([7.0])
    assert one["value"] == 7.0 and one["lo"] is None and one["hi"] is None
    assert mean_stat([])["value"] is None


# --- TriviaQA normalization -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("The Beatles", "beatles"),
        ("  Paris.  ", "paris"),
        ("A Tale of Two Cities", "tale of two cities"),
        ("U.K.", "u k"),  # TriviaQA: punctuation becomes a space
        ("U.S.A.", "u s"),  # ... so the lone "a" is then removed as an article (same on both sides)
        ("rock_and_roll", "rock and roll"),
        ("\u201cQuoted\u201d \u2014 text\u2026", "quoted text"),  # unicode quotes, dash, ellipsis
        ("Théâtre", "théâtre"),  # letters with accents kept
        ("an apple, the end", "apple end"),
        ("Anthem", "anthem"),  # 'an' only as a whole word
        ("", ""),
    ],
)
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def test_qa_match():
    assert qa_match("The capital of France is Paris.", ["Paris"])  # whole-word span
    assert qa_match("paris", ["Paris, France", "PARIS"])  # exact after normalization
    assert not qa_match("Parisian food", ["Paris"])  # not a whole word
    assert not qa_match("London", ["Paris"])
    assert not qa_match("", ["Paris"])
    assert not qa_match("anything", ["", "the"])  # aliases that normalize to nothing never match
    assert qa_match("It was Ringo Starr!", ["ringo starr"])


# --- teacher-forced metrics -----------------------------------------------------------------------


def test_uniform_logits():
    # uniform over 4 tokens: p(gold) = 0.25, NLL = ln 4 per token, entropy = ln 4, perplexity = 4
    logits = torch.zeros(2, 3, 4)
    targets = torch.tensor([[0, 1, 2], [3, 3, 3]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    s = token_nll_entropy_prob(logits, targets, mask)
    assert s["n_tokens"].tolist() == [2.0, 1.0]
    assert s["nll"].tolist() == pytest.approx([2 * math.log(4), math.log(4)], abs=1e-6)
    n, nll, ent, prob = s["n_tokens"].sum(), s["nll"].sum(), s["entropy"].sum(), s["gold_prob"].sum()
    assert perplexity(nll, n) == pytest.approx(4.0, abs=1e-5)
    assert mean_entropy(ent, n) == pytest.approx(math.log(4), abs=1e-6)
    assert mean_gold_probability(prob, n) == pytest.approx(0.25, abs=1e-7)
    assert math.isnan(perplexity(0.0, 0))


def test_two_token_example():
    # logits (ln 3, 0) -> p = (3/4, 1/4); gold = token 1: NLL = ln 4 = 1.386294, p(gold) = 0.25
    # entropy = -(0.75 ln 0.75 + 0.25 ln 0.25) = 0.215762 + 0.346574 = 0.562335
    logits = torch.tensor([[[math.log(3.0), 0.0]]])
    s = token_nll_entropy_prob(logits, torch.tensor([[1]]), torch.tensor([[1]]))
    assert float(s["nll"][0]) == pytest.approx(1.386294, abs=1e-6)
    assert float(s["gold_prob"][0]) == pytest.approx(0.25, abs=1e-7)
    assert float(s["entropy"][0]) == pytest.approx(0.562335, abs=1e-6)
    # KL(base || cand), base = (3/4, 1/4), cand = (1/2, 1/2):
    # 0.75 ln(0.75/0.5) + 0.25 ln(0.25/0.5) = 0.75*0.405465 - 0.25*0.693147 = 0.304099 - 0.173287 = 0.130812
    base = torch.log(torch.tensor([[[0.75, 0.25]]]))
    cand = torch.log(torch.tensor([[[0.5, 0.5]]]))
    assert kl_divergence(base, cand, torch.ones(1, 1)) == pytest.approx(0.130812, abs=1e-6)
    # logits work too (renormalized): cand logits (5, 5) are the same distribution as (0.5, 0.5)
    assert kl_divergence(base, torch.full((1, 1, 2), 5.0), torch.ones(1, 1)) == pytest.approx(
        0.130812, abs=1e-6
    )


def test_kl_identical_is_zero_and_mask():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    assert kl_divergence(logits, logits.clone(), torch.ones(2, 5)) == pytest.approx(0.0, abs=1e-7)
    other = torch.randn(2, 5, 7)
    per_tok = token_kl(logits, other)
    assert per_tok.shape == (2, 5) and bool((per_tok >= 0).all())
    mask = torch.zeros(2, 5)
    mask[0, 1] = 1
    assert kl_divergence(logits, other, mask) == pytest.approx(float(per_tok[0, 1]), abs=1e-6)
    assert math.isnan(kl_divergence(logits, other, torch.zeros(2, 5)))


def test_bf16_logits_are_upcast():
    logits = torch.zeros(1, 2, 4, dtype=torch.bfloat16)
    s = token_nll_entropy_prob(logits, torch.tensor([[0, 1]]), torch.ones(1, 2))
    assert s["nll"].dtype == torch.float32
    assert float(s["entropy"][0]) == pytest.approx(2 * math.log(4), abs=1e-5)
