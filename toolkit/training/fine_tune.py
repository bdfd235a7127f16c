"""What the DiT fine-tune (``module.py``) and the text-to-image fine-tune (``t2i_module.py``) share: the fit
defaults, the per-step generator that makes a resumed run continue exactly, the export folder, the EMA step and the
[0, 1) checks of their rates."""

from __future__ import annotations

import os

import lightning as L
import torch

from ..errors import PriorswapError
from .fit_callbacks import default_callbacks


def check_rate(name: str, value: float) -> None:
    """A probability or decay of the model's config: 1 would never train (dropout) or never move (EMA)."""
    if not 0.0 <= value < 1.0:
        raise PriorswapError(f"{name} must lie in [0, 1), got {value}")


class ema_update:  # noqa: N801 - used as a function: ``AveragedModel(net, multi_avg_fn=ema_update(decay))``
    """EMA step with diffusers' warm-up cap: decay_n = min(decay, (1 + n) / (10 + n)) after n updates.

    Without the cap, a short run's EMA keeps a large share of the initial weights (0.999^1000 = 37%). A class rather
    than a closure, so a module holding it pickles (``ddp_spawn`` and notebook launchers send the module to each
    process by pickling it).
    """

    def __init__(self, decay: float):
        self.decay = decay

    @torch.no_grad()
    def __call__(self, ema_params, params, num_averaged) -> None:
        n = float(num_averaged)
        d = min(self.decay, (1 + n) / (10 + n))
        torch._foreach_lerp_(ema_params, params, 1 - d)


class FineTune(L.LightningModule):
    """The part of a fine-tune module that knows no model family (``hparams`` holds ``seed`` and ``export_dir``)."""

    def configure_callbacks(self):
        """The shared defaults (``fit_callbacks.py``): last.ckpt, saved on SIGTERM/Ctrl-C and written atomically,
        LR and images/s logging, unless given."""
        return default_callbacks(self)

    # ThroughputMonitor reads this on every batch and warns on every fit when it is missing; None: FLOPs are not
    # counted (it still logs batches and images per second)
    flops_per_batch: float | None = None

    def _generator(self, salt: int) -> torch.Generator:
        """All randomness of a step, seeded by (seed, global step, rank, salt): a resumed run draws what an
        uninterrupted one would."""
        rank = self.global_rank if self._trainer is not None else 0
        return torch.Generator("cpu").manual_seed(
            (self.hparams.seed * 1_000_003 + self.global_step * 7919 + rank * 104_729 + salt) % (2**63)
        )

    def default_export_dir(self) -> str:
        if self.hparams.export_dir:
            return self.hparams.export_dir
        log_dir = self.trainer.log_dir if self._trainer is not None and self.trainer.log_dir else "."
        return os.path.join(log_dir, "export")
