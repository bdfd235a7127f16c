"""Output files: whole or absent (temp file, then an atomic rename), and output folders checked up front."""
from __future__ import annotations

import os
from typing import Callable, TextIO

from .errors import PriorswapError


def write_text_atomic(path: str, write: Callable[[TextIO], object]) -> None:
    """Call ``write(f)`` on a temp file next to ``path``, then rename it in; a killed run leaves no half file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_output_dir(path: str, flag: str = "--output-dir") -> None:
    """One-line errors for an output folder that cannot be made: a missing parent, or a file in its place."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise PriorswapError(f"the folder {parent!r} that should hold {flag} does not exist")
    if os.path.exists(path) and not os.path.isdir(path):
        raise PriorswapError(f"{flag} {path!r} is a file")
