"""A callback that silences two Lightning warnings which are false for the fine-tuning module."""

from __future__ import annotations

import warnings

from lightning.pytorch.callbacks import Callback

from priorswap.data.base import ImageDataModule


class KnownNoise(Callback):
    """Silences two Lightning warnings that are false for this module, from fit start to the first batch only.

    - "Found N module(s) in eval mode": the frozen VAE (and a text-to-image fine-tune's text encoders) are in eval
      mode on purpose; hidden only when N is exactly the count of this module's frozen submodules, so an unrelated
      module left in eval mode still warns.
    - "resuming ... your dataloader is not resumable": priorswap's datamodules resume mid-epoch exactly; their
      sampler's order is a function of (seed, epoch, index) and skips the batches already seen
      (data/sampler.py, ImageDataModule.train_dataloader), so the warning's premise does not hold. Other
      datamodules keep the warning.
    """

    def __init__(self):
        self._filters: list = []

    def on_fit_start(self, trainer, pl_module) -> None:
        frozen = sum(
            1
            for name in ("vae", "ema", "text_encoder", "text_encoder_2", "text_encoder_3")  # frozen parts, kept in eval
            if (part := getattr(pl_module, name, None)) is not None
            for m in part.modules()
            if not m.training
        )
        if frozen:
            self._ignore(rf"Found {frozen} module\(s\) in eval mode at the start of training")

        if isinstance(trainer.datamodule, ImageDataModule):
            self._ignore(
                r"You're resuming from a checkpoint that ended before the epoch ended and your dataloader is not resumable"
            )

    def _ignore(self, message: str) -> None:
        warnings.filterwarnings("ignore", message=message)
        self._filters.append(warnings.filters[0])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._restore()

    def on_fit_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    def _restore(self) -> None:
        for f in self._filters:
            if f in warnings.filters:
                warnings.filters.remove(f)
        self._filters = []
