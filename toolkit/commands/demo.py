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
        False,
        help="the complete table: the paper's 3 regimes and the 2 LoRA ones x 2 fine-tune seeds x 2 sampling seeds, "
        "256 samples per cell",
    )
    tiny: bool = arg(False, help="every regime and stage at toy size (what the tests run)")
    regimes: list[str] | None = arg(
        None,
        help="run only these regimes, at the preset's size (large_limited, small, large_long, lora, lora_nodrop); "
        "default: the preset's",
    )
    retrain: bool = arg(False, help="rebuild the shipped base model and classifier instead of using them")
    progress: bool = arg(True, flag="--no-progress", help="hide progress bars")

    def check(self) -> None:
        if self.full and self.tiny:
            raise PriorswapError("--full and --tiny exclude each other")
        from ..demo.config import select

        select(self.regimes, ())  # an unknown name is refused before anything runs
        checks.check_output_dir("--out", self.out)


def run(args: Demo) -> int:
    from ..demo.config import select
    from ..demo.runner import DemoConfig, run_demo

    cfg = (
        DemoConfig.full(args.out) if args.full else DemoConfig.tiny(args.out) if args.tiny else DemoConfig(out=args.out)
    )
    cfg.regimes = select(args.regimes, cfg.regimes)
    cfg.retrain = args.retrain
    cfg.progress = cfg.progress and args.progress
    run_demo(cfg)
    return 0


COMMAND = Command(
    Demo, run, "base -> fine-tunes in the paper's Table 3 regimes -> vanilla vs swapped CFG report (CPU, < 10 min)"
)
