"""The callbacks every priorswap fine-tune runs with unless the user gave their own (both Lightning modules share them).

- ``last.ckpt`` checkpoints (for ``--ckpt_path last``), also saved when SIGTERM or Ctrl-C stops the fit
  (``interrupt.py``) and written whole or not at all (``checkpoint_io.py``);
- learning-rate and images/s logging when a logger is attached;
- ``KnownNoise``: Lightning's warnings that are expected for these modules, silenced by message.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, ThroughputMonitor

from .checkpoint_io import AtomicCheckpoints
from .interrupt import SaveOnInterrupt
from .known_noise import KnownNoise


def batch_size(batch: dict) -> int:
    """Images in a batch, for ThroughputMonitor's images/s: the leading size of its first tensor (labels, pixels
    or cached latents, whichever the datamodule yields)."""
    if "label" in batch:
        return int(batch["label"].shape[0])
    return next(int(v.shape[0]) for v in batch.values() if hasattr(v, "shape") and v.ndim > 0)


def default_callbacks(module: L.LightningModule) -> list[Callback]:
    """What ``configure_callbacks`` adds: each default whose type the trainer does not already hold."""
    existing = list(module.trainer.callbacks) if module._trainer is not None else []
    for cb in existing:
        if isinstance(cb, ModelCheckpoint) and cb.save_last is None:
            cb.save_last = True  # Lightning's default checkpoint callback keeps no last.ckpt
    have = {type(c) for c in existing}
    checkpointing = module._trainer is not None and module.trainer.checkpoint_callback is not None
    wanted: list[Callback] = [ModelCheckpoint(save_last=True, every_n_train_steps=500)] if checkpointing else []
    if module._trainer is not None and module.trainer.loggers:
        wanted += [LearningRateMonitor(logging_interval="step"), ThroughputMonitor(batch_size_fn=batch_size)]
    wanted += [KnownNoise(), SaveOnInterrupt(), AtomicCheckpoints()]
    return [c for c in wanted if type(c) not in have]
