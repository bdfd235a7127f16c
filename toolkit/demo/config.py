"""What the demo runs: the fine-tuning regimes of the paper's Table 3, and how much is sampled per regime.

The regimes were fixed from the paper's own account of Table 3 before any swap result was seen, and are never tuned
toward an outcome (the reasoning is in each regime's recipe, ``recipes/demo_*.yaml``):
- the paper fine-tunes DiT-XL/2 for 20,000 steps at batch 64 on every dataset (appendix B), so the budget is fixed
  and only the set size differs: Food101 and SUN397 (about 100k images) see it as 12-17 epochs, Caltech101
  (9,145 images, "over 10 times smaller") as about 140;
- its explanation: on the large sets the limited budget leaves the unconditional prior degraded and the swap helps;
  the small set gets "sufficient time to fit the dataset despite the low CFG condition drop rate", and no gain.
The miniature keeps the ratio: a large set (all 24,000 training images of the 4 target classes) and a set ten times
smaller (2,400), with the same step budget; a third regime gives the large set four times the budget, which tests
the other half of the claim (more budget, less degradation) directly.

Beyond the paper, two LoRA regimes (``--full``) test whether a LoRA needs CFG dropout at all when its base, the
adapter-off model, already holds the unconditional prediction: arms A (dropout 0.1, vanilla CFG), B (the same LoRA,
free prior) and C (dropout 0, free prior), on the large/limited regime's data and budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PriorswapError


@dataclass(frozen=True)
class Regime:
    name: str  # also its recipe, recipes/demo_{name}.yaml, and its run folder
    title: str
    images_per_class: int
    steps: int  # optimiser steps at batch 32
    lora: bool = False  # a LoRA of the base (the recipe's model.lora); "swapped" is then its free prior
    dropout: float = 0.1  # the recipe's model.cfg_dropout, shown in the report

    @property
    def recipe(self) -> str:
        return f"demo_{self.name}.yaml"


LARGE = Regime("large_limited", "large set, limited budget (Food101 / SUN397)", 6000, 300)
SMALL = Regime("small", "set 10x smaller, same budget (Caltech101)", 600, 300)
LONG = Regime("large_long", "large set, 4x the budget", 6000, 1200)
LORA = Regime("lora", "LoRA r16, dropout 0.1, large set, limited budget", 6000, 300, lora=True)
LORA_NODROP = Regime("lora_nodrop", "LoRA r16, dropout 0, large set, limited budget", 6000, 300, lora=True, dropout=0.0)
REGIMES = (LARGE, SMALL, LONG, LORA, LORA_NODROP)


@dataclass
class DemoConfig:
    """How much the demo runs. The default (README table) fits in 10 minutes on 2 CPU cores; ``full`` is the
    complete table; ``tiny`` is every stage at toy size (CI)."""

    out: str = "runs/demo"
    regimes: tuple[Regime, ...] = (LARGE, SMALL)
    finetune_seeds: tuple[int, ...] = (0,)
    sample_seeds: tuple[int, ...] = (0, 1)
    scales: tuple[float, ...] = (1.0, 1.5, 3.0)  # 1.5 is the paper's DiT scale
    num_samples: int = 160  # per (regime, fine-tune seed, sampling seed, scale, method)
    steps: int = 16  # DDIM steps (paper: 50)
    batch_size: int = 160
    drift_images: int = 512  # held-out target images for the prior-drift measurement
    drift_timesteps: tuple[int, ...] = (100, 300, 500, 700, 900)
    callback_samples: int = 64  # the fine-tune's own PriorSwapEval, once at the end (TensorBoard)
    size_scale: float = 1.0  # tiny: every regime's steps and images per class times this
    retrain: bool = False
    progress: bool = True
    preset: str = "default"

    @classmethod
    def full(cls, out: str) -> "DemoConfig":
        return cls(
            out=out,
            regimes=REGIMES,
            finetune_seeds=(0, 1),
            sample_seeds=(0, 1),
            scales=(1.0, 1.5, 3.0),
            num_samples=256,
            batch_size=256,
            preset="full",
        )

    @classmethod
    def tiny(cls, out: str) -> "DemoConfig":
        return cls(
            out=out,
            regimes=REGIMES,
            finetune_seeds=(0, 1),
            sample_seeds=(0, 1),
            scales=(1.0, 1.5),
            num_samples=8,
            steps=2,
            batch_size=8,
            drift_images=16,
            drift_timesteps=(500,),
            callback_samples=8,
            size_scale=0.01,
            progress=False,
            preset="tiny",
        )

    def steps_of(self, regime: Regime) -> int:
        return max(1, round(regime.steps * self.size_scale))

    def images_of(self, regime: Regime) -> int:
        return max(4, round(regime.images_per_class * self.size_scale))

    def run_name(self, regime: Regime, ft_seed: int) -> str:
        return f"{regime.name}-s{ft_seed}-n{self.images_of(regime)}-t{self.steps_of(regime)}"

    def eval_name(self, regime: Regime, ft_seed: int, seed: int) -> str:
        """Cached results are keyed by everything that changes them."""
        scales = "-".join(f"{s:g}" for s in self.scales)
        return f"{self.run_name(regime, ft_seed)}-seed{seed}-n{self.num_samples}-steps{self.steps}-g{scales}.json"


def select(names: list[str] | None, preset: tuple[Regime, ...]) -> tuple[Regime, ...]:
    """The regimes named in ``names``, from all of them, in the table's order (None: the preset's); an unknown name is
    one line."""
    if not names:
        return preset
    known = {r.name for r in REGIMES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PriorswapError(f"--regimes: unknown regime {unknown[0]!r}; choose from {', '.join(sorted(known))}")
    return tuple(r for r in REGIMES if r.name in names)
