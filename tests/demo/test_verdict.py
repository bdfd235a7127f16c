"""The demo's verdict rules: a difference counts only beyond twice its standard error, and the Table 3 claim
is decided from the two regimes' differences."""

import pytest

from priorswap.toolkit.demo.verdict import Paired, arm_sentence, nodrop_claim, paired, regime_claim, swap_sentence


def test_paired_difference_and_resolution():
    d = paired([10.0, 11.0, 12.0], [9.0, 10.2, 10.9])  # swapped - vanilla: -1.0, -0.8, -1.1
    assert d.mean == pytest.approx(-2.9 / 3) and d.n == 3
    assert d.resolved  # |mean| = 0.97 > 2 * sd / sqrt(3) = 0.18
    noisy = paired([10.0, 11.0], [9.0, 12.0])  # -1, +1
    assert not noisy.resolved
    assert not paired([1.0], [0.0]).resolved  # one run has no spread: never a verdict


def test_sentences_name_the_outcome_only_when_resolved():
    assert "no difference resolved" in swap_sentence("A", "KID", Paired(-0.1, 1.0, 4), 1.5)
    assert "the swap helps" in swap_sentence("A", "KID", Paired(-1.0, 0.1, 4), 1.5)
    assert "the swap hurts" in swap_sentence("A", "KID", Paired(1.0, 0.1, 4), 1.5)


@pytest.mark.parametrize(
    "large, small, expected",
    [
        (Paired(-0.1, 1.0, 4), Paired(0.0, 0.1, 4), "cannot be resolved"),
        (Paired(1.0, 0.1, 4), Paired(0.0, 0.1, 4), "does not hold here: the swap hurts"),
        (Paired(-1.0, 0.1, 4), Paired(0.0, 0.1, 4), "holds here"),
        (Paired(-1.0, 0.1, 4), Paired(0.5, 0.1, 4), "holds here"),
        (Paired(-1.0, 0.1, 4), Paired(-0.3, 0.1, 4), "holds in part"),
        (Paired(-1.0, 0.1, 4), Paired(-1.0, 0.1, 4), "does not hold here: the swap helps on the small set"),
    ],
)
def test_regime_claim(large, small, expected):
    assert regime_claim(large, small).startswith(expected)


def test_arm_sentence_uses_the_same_resolution_rule():
    assert "no difference resolved" in arm_sentence("C − B", "KID", Paired(-0.1, 1.0, 4), 1.5)
    assert arm_sentence("C − B", "KID", Paired(-1.0, 0.1, 4), 1.5).endswith("lower (± 0.100 over 4 runs): better.")
    assert arm_sentence("C − A", "KID", Paired(1.0, 0.1, 4), 1.5).endswith("higher (± 0.100 over 4 runs): worse.")
    assert "no difference resolved" in arm_sentence("C − A", "KID", Paired(-5.0, 0.0, 1), 1.5)  # one run: no verdict


@pytest.mark.parametrize(
    "vs_free, vs_vanilla, expected",
    [
        (Paired(-0.1, 1.0, 4), Paired(0.1, 1.0, 4), "cannot be resolved"),
        (Paired(-1.0, 0.1, 4), Paired(-1.0, 0.1, 4), "holds here"),
        (Paired(-1.0, 0.1, 4), Paired(0.1, 1.0, 4), "holds in part: C beats B"),
        (Paired(0.1, 1.0, 4), Paired(-1.0, 0.1, 4), "holds in part: C beats A"),
        (
            Paired(-1.0, 0.1, 4),
            Paired(1.0, 0.1, 4),
            "does not hold here: dropout 0 with the free prior (C) is worse than A",
        ),
        (
            Paired(1.0, 0.1, 4),
            Paired(1.0, 0.1, 4),
            "does not hold here: dropout 0 with the free prior (C) is worse than B",
        ),
    ],
)
def test_nodrop_claim(vs_free, vs_vanilla, expected):
    """C must beat both A and B to confirm the claim; a resolved loss to either refutes it."""
    assert nodrop_claim(vs_free, vs_vanilla).startswith(expected)
