"""Shared Lightning test scaffolding: a tiny DiT fine-tune, a quiet single-process CPU trainer and a callback that
simulates a kill."""

import lightning as L
from lightning.pytorch.callbacks import Callback

from priorswap.toolkit.training.module import DiTFineTune


def tiny_module(**kw) -> DiTFineTune:
    """A ~1M-parameter DiT trained from scratch on 16 px RGB, 3 classes; ``kw`` overrides any argument."""
    args = dict(
        pretrained=None,
        vae=None,
        size="tiny",
        in_channels=3,
        sample_size=16,
        num_classes=3,
        ema_decay=0.9,
        lr=1e-3,
        export_on_fit_end=False,
    )
    return DiTFineTune(**{**args, **kw})


def trainer(tmp_path, max_steps, **kw):
    return L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        default_root_dir=str(tmp_path),
        limit_val_batches=0,
        **kw,
    )


class Kill(Callback):
    """Raises at the start of optimiser step ``at``, as a killed job would stop."""

    def __init__(self, at):
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at:
            raise RuntimeError("simulated kill")
