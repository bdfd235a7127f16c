"""``priorswap demo``: the paper's DiT experiment in miniature, offline, on real Fashion-MNIST images."""

from __future__ import annotations

from dataclasses import dataclass

from .. import checks
from ..argspec import Command, arg
from ..errors import PriorswapError


@dataclass(kw_only=True)
class Demo:
    out: str = arg("runs/demo", help="output folder (re-running reuses what is there)")
    full: bool = arg(
        False, help="the complete table: 3 regimes x 2 fine-tune seeds x 2 sampling seeds, 256 samples per cell"
    )
    tiny: bool = arg(False, help="every regime and stage at toy size (what the tests run)")
    retrain: bool = arg(False, help="rebuild the shipped base model and classifier instead of using them")
    progress: bool = arg(True, flag="--no-progress", help="hide progress bars")

    def check(self) -> None:
        if self.full and self.tiny:
            raise PriorswapError("--full and --tiny exclude each other")
        checks.check_output_dir("--out", self.out)


def run(args: Demo) -> int:
    from ..demo.runner import DemoConfig, run_demo

    cfg = (
        DemoConfig.full(args.out) if args.full else DemoConfig.tiny(args.out) if args.tiny else DemoConfig(out=args.out)
    )
    cfg.retrain = args.retrain
    cfg.progress = cfg.progress and args.progress
    run_demo(cfg)
    return 0


COMMAND = Command(
    Demo, run, "base -> fine-tunes in the paper's Table 3 regimes -> vanilla vs swapped CFG report (CPU, < 10 min)"
)
