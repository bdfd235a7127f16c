"""Output files: whole or absent (temp file, then an atomic rename), and output folders checked up front.

Every writer in the package goes through :func:`atomic_write` (one file) or :func:`atomic_dir` (one folder).
The temp file or folder sits next to its final path, named ``.<name>.<random>.tmp``, so the rename never
crosses a filesystem and a killed writer's leftovers are recognisable. Before the rename, what was written gets
the mode ``open()`` and ``mkdir`` give anything (0o666 / 0o777 less the umask), so outputs are as readable as
any other file the user writes. ``tempfile.mkstemp``/``mkdtemp`` make 0600/0700, and so does
``safetensors.torch.save_file`` (0.8 writes its own temp file and renames it), which is why the mode is set
explicitly rather than left to ``open``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from typing import IO, Callable, Iterator, TextIO

import numpy as np


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def _honour_umask(path: str, umask: int, base: int) -> None:
    """Widen ``path``'s mode to what ``open`` (``base`` 0o666) or ``mkdir`` (0o777) gives under ``umask``.

    Bits a writer set beyond that (an executable file) are kept as far as the umask allows; links are left."""
    if not os.path.islink(path):
        os.chmod(path, (stat.S_IMODE(os.stat(path).st_mode) | base) & ~umask)


def _honour_umask_tree(root: str, umask: int) -> None:
    _honour_umask(root, umask, 0o777)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            _honour_umask(os.path.join(folder, name), umask, 0o777)
        for name in files:
            _honour_umask(os.path.join(folder, name), umask, 0o666)


def _temp_name(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


@contextlib.contextmanager
def atomic_write(
    path: str, mode: str = "w", *, encoding: str | None = "utf-8", newline: str | None = "", exclusive: bool = False
) -> Iterator[IO]:
    """``with atomic_write(path, "w"|"wb") as f: ...`` writes ``f`` to a temp file next to ``path`` and renames it in.

    On any exception in the block the temp file is removed and an existing ``path`` is left as it was. The file
    gets mode 0o666 less the umask, like any file ``open`` makes. ``f.name`` is the temp path, for writers that only
    take a path (``safetensors.torch.save_file(t, f.name)``, even if it replaces the file): write there before the
    block ends. With ``exclusive`` the file
    is hard-linked into place instead, so of two writers only the first wins and the second gets
    ``FileExistsError`` (a filesystem without hard links falls back to the rename).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    tmp = _temp_name(path)
    text = {"encoding": encoding, "newline": newline} if mode == "w" else {}
    try:
        with open(tmp, mode.replace("w", "x"), **text) as f:
            yield f
        _honour_umask(tmp, current_umask(), 0o666)
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError:  # no hard links here: a plain rename
                os.replace(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """``with atomic_dir(path) as tmp: ...`` fills the temp folder ``tmp`` next to ``path``, then moves it into place.

    An existing folder at ``path`` is replaced only once the new one is complete (moved aside, the new one
    renamed in, the old one deleted); on any exception the temp folder is deleted and ``path`` is untouched.
    The folder and everything in it get the modes ``mkdir`` and ``open`` give under the umask (0o777 / 0o666 less
    it), whatever the writers inside used (diffusers' safetensors weights come out 0600 otherwise).
    """
    path = os.path.abspath(path)
    tmp = _temp_name(path)
    os.mkdir(tmp)
    old = None
    try:
        yield tmp
        _honour_umask_tree(tmp, current_umask())
        if os.path.isdir(path) and not os.path.islink(path):
            old = _temp_name(path)
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                old = None
                raise
        else:
            os.replace(tmp, path)
    finally:
        _remove(tmp)
        if old is not None:
            _remove(old)


def write_text_atomic(path: str, write: Callable[[TextIO], object]) -> None:
    """Call ``write(f)`` on a temp file next to ``path``, then rename it in; a killed run leaves no half file."""
    with atomic_write(path, "w") as f:
        write(f)


def save_npz_atomic(path: str, **arrays) -> None:
    """Write an .npz next to its final path and rename it in, so a killed run never leaves half a file."""
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)
