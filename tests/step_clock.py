"""A callback that writes each training step's wall time (batch start to batch end, the callbacks before it
included) to a JSON file, for the real-size runs' time per step."""

import json
import os
import time

from lightning.pytorch.callbacks import Callback


class StepClock(Callback):
    def __init__(self, path: str):
        self.path, self.times, self.start = path, [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times.append(time.perf_counter() - self.start)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"step_seconds": self.times, "peak_cuda_gib": _peak_cuda_gib()}, f)
        os.replace(tmp, self.path)


def _peak_cuda_gib():
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
