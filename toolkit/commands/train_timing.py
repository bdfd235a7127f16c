"""What ``bench train``'s DiT rows and its text-to-image rows share: images/s of a Lightning fit timed after two
warm-up steps, and the median of each (loop, cache) cell over repeats that alternate the cells, so that load on the
machine hits them alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def lightning_images_per_s(args, module, datamodule) -> float:
    """Images/s of ``trainer.fit(module, datamodule)`` over ``args.steps`` steps after 2 warm-up steps."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    class Clock(Callback):
        def __init__(self):
            self.start = self.stop = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 2:
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.stop = time.perf_counter()  # the last one stays: the end of the final step

    clock = Clock()
    trainer = L.Trainer(
        max_steps=args.steps + 2,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        limit_val_batches=0,
        callbacks=[clock],
    )
    trainer.fit(module, datamodule)
    return args.steps * args.batch_size / (clock.stop - clock.start)


def median_cells(plain: Callable[[bool], float], lightning: Callable[[bool], float], repeats: int) -> dict:
    """{(loop, cache): median images/s}, after one untimed ``plain(True)`` that builds the cache."""
    cells = {(kind, cache): [] for kind in ("plain", "lightning") for cache in (False, True)}
    plain(True)  # builds the cache once, outside the timings
    for _ in range(repeats):
        for cache in (False, True):
            for kind, fn in (("plain", plain), ("lightning", lightning)):
                cells[(kind, cache)].append(fn(cache))
    return {k: statistics.median(v) for k, v in cells.items()}
