"""Report, once per epoch, how many unreadable images the datamodule skipped.

Datamodules get no epoch hooks, so this callback asks `trainer.datamodule.pop_skipped()`. Every
ImageDataModule adds it to the trainer in `setup` if it is not there already.
"""

from __future__ import annotations

import logging

import lightning as L

log = logging.getLogger(__name__)


class SkippedImagesReport(L.Callback):
    """Warn with a count (and a few names) and log `data/skipped_images` summed over ranks."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._report(trainer, pl_module, "val")

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "pop_skipped"):
            return
        names = datamodule.pop_skipped()
        if names:
            log.warning(
                "epoch %d (%s): skipped %d unreadable images, e.g. %s",
                trainer.current_epoch,
                stage,
                len(names),
                ", ".join(names[:3]),
            )
        pl_module.log(f"data/skipped_images_{stage}", float(len(names)), reduce_fx="sum", sync_dist=True)
