"""When a difference counts: paired differences over runs, and the sentences the report may write from them.

A run is one (fine-tune seed, sampling seed) pair; vanilla and swapped CFG in a run share their per-sample noise, so
their difference is paired. A difference is *resolved* when its mean over the n runs exceeds twice its standard
error (sd / √n, n ≥ 2), roughly a 95% interval that excludes zero; otherwise the report says "no difference
resolved". With one fine-tune seed the spread covers sampling noise only, and the report says so.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Paired:
    mean: float  # mean of (b - a) over runs
    sd: float
    n: int

    @property
    def se(self) -> float:
        return self.sd / math.sqrt(self.n) if self.n > 1 else math.inf

    @property
    def resolved(self) -> bool:
        return self.n > 1 and abs(self.mean) > 2 * self.se

    def text(self, digits: int = 2) -> str:
        spread = f" ± {self.sd:.{digits}f}" if self.n > 1 else ""
        return f"{self.mean:+.{digits}f}{spread}"


def paired(a: list[float], b: list[float]) -> Paired:
    d = [y - x for x, y in zip(a, b)]
    return Paired(statistics.mean(d), statistics.stdev(d) if len(d) > 1 else 0.0, len(d))


def mean_sd(values: list[float], digits: int = 2, scale: float = 1.0) -> str:
    v = [x * scale for x in values]
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{statistics.mean(v):.{digits}f} ± {statistics.stdev(v):.{digits}f}"


def swap_sentence(title: str, metric: str, d: Paired, scale: float, unit: str = "") -> str:
    """One regime's verdict on the swap at one scale (d = swapped − vanilla; lower is better)."""
    if not d.resolved:
        return f"- {title}: no difference resolved in {metric} at g = {scale:g} ({d.text(3)}{unit} over {d.n} runs)."
    word = "lowers" if d.mean < 0 else "raises"
    better = "the swap helps" if d.mean < 0 else "the swap hurts"
    return f"- {title}: swapping {word} {metric} at g = {scale:g} by {abs(d.mean):.3f}{unit} (± {d.sd:.3f} over {d.n} runs): {better}."


def gap(a: Paired, b: Paired) -> tuple[float, bool]:
    """(gain_a − gain_b, resolved?) for two regimes' independent differences (gain = −difference)."""
    diff = (-a.mean) - (-b.mean)
    se = math.sqrt(a.se**2 + b.se**2) if a.n > 1 and b.n > 1 else math.inf
    return diff, abs(diff) > 2 * se


def regime_claim(large: Paired, small: Paired) -> str:
    """The paper's Table 3 claim, decided from the two regimes' swapped − vanilla differences (lower is better):
    the swap helps on the large set with a limited budget, and not on the small set."""
    if not large.resolved:
        return "cannot be resolved at this size: the swap's effect on the large set is within the spread"
    if large.mean > 0:
        return "does not hold here: the swap hurts on the large set"
    if not (small.resolved and small.mean < 0):
        return "holds here: the swap helps on the large set and not on the small one"
    diff, sure = gap(large, small)
    if sure and diff > 0:
        return "holds in part: the swap helps on both sets, resolvably more on the large one"
    return "does not hold here: the swap helps on the small set as much as on the large one"


def arm_sentence(what: str, metric: str, d: Paired, scale: float) -> str:
    """Two arms compared (d = second − first over paired runs; lower is better)."""
    if not d.resolved:
        return f"- {what}: no difference resolved in {metric} at g = {scale:g} ({d.text(3)} over {d.n} runs)."
    word, side = ("lower", "better") if d.mean < 0 else ("higher", "worse")
    return f"- {what}: {metric} at g = {scale:g} is {abs(d.mean):.3f} {word} (± {d.sd:.3f} over {d.n} runs): {side}."


def nodrop_claim(vs_free: Paired, vs_vanilla: Paired) -> str:
    """The no-dropout claim, from C − B (``vs_free``: the dropout-0.1 LoRA with the same free prior) and C − A
    (``vs_vanilla``: that LoRA with vanilla CFG): a LoRA trained with dropout 0 and sampled with its base's null should
    beat both, lower being better. A resolved loss to either refutes it; only resolved gains over both confirm it."""
    arms = (("B (dropout 0.1, free prior)", vs_free), ("A (dropout 0.1, vanilla CFG)", vs_vanilla))
    worse = [name for name, d in arms if d.resolved and d.mean > 0]
    better = [name for name, d in arms if d.resolved and d.mean < 0]
    if worse:
        return f"does not hold here: dropout 0 with the free prior (C) is worse than {' and '.join(worse)}"
    if len(better) == 2:
        return "holds here: dropout 0 with the free prior (C) beats both A and B"
    if better:
        other = next(name for name, _ in arms if name not in better)
        return f"holds in part: C beats {better[0]}; against {other} no difference is resolved"
    return "cannot be resolved at this size: neither difference of C from A or B exceeds twice its standard error"
