"""Pixel datasets that survive bad files.

One corrupt JPEG in 100k must not kill a 20k-step run: an unreadable item is warned about with its name,
returned as None, dropped by `collate_drop_none`, and appended to a skip log. The log is a plain file
written with O_APPEND, so DataLoader workers (fork or spawn) and the main process all count into it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

log = logging.getLogger(__name__)


PREFIX = "priorswap-skipped-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class SkipLog:
    """Append-only record of skipped items, shared across processes through a file path."""

    def __init__(self, path: str):
        self.path = path
        self._read_upto = 0
        Path(path).touch()

    @classmethod
    def create(cls) -> SkipLog:
        """A fresh log in the temporary folder, named after this process. A process killed before its teardown
        (a preempted or OOM-killed rank) cannot remove its own, so the files of processes no longer running are
        removed here first."""
        tmp = Path(tempfile.gettempdir())
        for old in tmp.glob(f"{PREFIX}*-*.log"):
            pid = old.name[len(PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                old.unlink(missing_ok=True)
        fd, path = tempfile.mkstemp(prefix=f"{PREFIX}{os.getpid()}-", suffix=".log")
        os.close(fd)
        return cls(path)

    def add(self, name: str) -> None:
        line = (name.replace("\n", " ") + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line)  # one small O_APPEND write: atomic across processes
        finally:
            os.close(fd)

    def pop(self) -> list[str]:
        """Names skipped since the previous call (in this process)."""
        with open(self.path, "rb") as f:
            f.seek(self._read_upto)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._read_upto += len(complete)
        return complete.decode().splitlines()

    def __getstate__(self) -> dict:
        return {"path": self.path, "_read_upto": self._read_upto}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


def collate_drop_none(items: Sequence[Any]) -> Any:
    """default_collate over the items that loaded; an all-bad batch becomes None (skip it in the step)."""
    items = [item for item in items if item is not None]
    return default_collate(items) if items else None


class RobustImageDataset(Dataset):
    """Base: subclasses say how to open item i and how to name it in a warning."""

    def __init__(self, labels: Sequence[int], transform: Callable, skip_log: SkipLog | None = None):
        self.labels = list(labels)
        self.transform = transform
        self.skip_log = skip_log

    def open(self, index: int) -> Image.Image:
        raise NotImplementedError

    def describe(self, index: int) -> str:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> dict[str, Any]:
        """Item `index` as a dict; anything it raises makes the item skipped (subclasses add keys here)."""
        image = self.open(index)
        image.load()
        return {"pixels": self.transform(image), "label": torch.tensor(self.labels[index], dtype=torch.long)}

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        try:
            return self.load(index)
        except Exception as error:  # noqa: BLE001 - any decode failure means "skip this file"
            name = self.describe(index)
            log.warning("skipping unreadable image %s (%s: %s)", name, type(error).__name__, error)
            if self.skip_log is not None:
                self.skip_log.add(name)
            return None


class FileImages(RobustImageDataset):
    """Images stored as files: `base / relpath`."""

    def __init__(
        self,
        base: str,
        relpaths: Sequence[str],
        labels: Sequence[int],
        transform: Callable,
        skip_log: SkipLog | None = None,
    ):
        super().__init__(labels, transform, skip_log)
        self.base, self.relpaths = base, list(relpaths)

    def open(self, index: int) -> Image.Image:
        return Image.open(os.path.join(self.base, self.relpaths[index]))

    def describe(self, index: int) -> str:
        return os.path.join(self.base, self.relpaths[index])


class ArrayImages(RobustImageDataset):
    """Images held in memory as a uint8 array (N, H, W) or (N, H, W, C)."""

    def __init__(
        self,
        array: np.ndarray,
        rows: Sequence[int],
        labels: Sequence[int],
        transform: Callable,
        name: str = "array",
        skip_log: SkipLog | None = None,
    ):
        super().__init__(labels, transform, skip_log)
        self.array, self.rows, self.name = array, list(rows), name

    def open(self, index: int) -> Image.Image:
        return Image.fromarray(self.array[self.rows[index]])

    def describe(self, index: int) -> str:
        return f"{self.name}[{self.rows[index]}]"
