"""Checkpoints written whole or not at all, so a killed save never becomes the ``last.ckpt`` a resume picks.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction whose temp file is in the system temp folder
(``TMPDIR``), then moves it into place. That move is a rename only when ``TMPDIR`` is on the run folder's filesystem;
on a cluster it rarely is (node-local ``/tmp``, runs on a shared filesystem), and the move then copies into the
final name: a job killed during that copy leaves a half-written ``last.ckpt`` that ``--ckpt_path last`` picks and
cannot load, with the previous good one already gone. (Every checkpoint also passes through ``TMPDIR``, often small
on compute nodes, and a killed save's temp file stays there.)

:class:`AtomicCheckpointIO` writes next to the target instead (:func:`priorswap.toolkit.files.atomic_write`:
``.<name>.<random>.tmp`` in the same folder, mode 0o666 less the umask), flushes it to disk, and renames it over the
target: a kill at any moment leaves the old checkpoint or the new one. A leftover temp file matches neither
Lightning's ``last*.ckpt`` nor any checkpoint pattern, so resume never picks it, and the next save into that
folder deletes it. :class:`AtomicCheckpoints` (one of the fine-tune's own callbacks) installs it in every fit that
uses Lightning's default checkpoint writer; a writer the user configured is left alone.
"""

from __future__ import annotations

import contextlib
import glob
import os
from typing import Any

import lightning as L
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import AsyncCheckpointIO, TorchCheckpointIO

from ..files import atomic_write

LEFTOVER = ".*.ckpt.*.tmp"  # atomic_write's temp name for a checkpoint: .<name>.ckpt.<random>.tmp


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes a local checkpoint to a temp file in its folder, then renames it in."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)  # remote stores: Lightning's own upload
            return
        path = os.path.abspath(os.path.expanduser(str(path)))
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        with atomic_write(path, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them the checkpoint
        _sync_folder(folder)
        remove_leftovers(folder)


def remove_leftovers(folder: str) -> list[str]:
    """Delete temp files of checkpoint saves that were killed before their rename; returns what was removed."""
    removed = []
    for leftover in glob.glob(os.path.join(glob.escape(folder), LEFTOVER)):
        with contextlib.suppress(OSError):
            os.remove(leftover)
            removed.append(leftover)
    return removed


def _sync_folder(folder: str) -> None:
    """Make the rename itself durable (a crash right after it keeps the new name)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class AtomicCheckpoints(Callback):
    """Install :class:`AtomicCheckpointIO` where the strategy would use Lightning's plain ``TorchCheckpointIO``."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        io = trainer.strategy.checkpoint_io
        if type(io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        elif isinstance(io, AsyncCheckpointIO) and type(io.checkpoint_io) is TorchCheckpointIO:
            io.checkpoint_io = AtomicCheckpointIO()  # AsyncCheckpointIO: the same writer, in its thread
