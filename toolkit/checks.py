"""Every argument check of the commands and the Python API, in one place.

Each check is cheap and runs before any model, dataset or metric network is loaded, so a mistake costs a
second and gives one line (:class:`PriorswapError`; exit code 2 from the ``priorswap`` command). What cannot be
meant is refused; what is merely unusual is warned about once and allowed. Only :func:`check_device` imports
torch, and only when a CUDA device is asked for.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterable

from .core.scheduler_kinds import SCHEDULERS  # the --scheduler names, kept with their diffusers classes
from .errors import PriorswapError

DTYPE_NAMES = ("fp32", "bf16", "fp16")  # the --dtype names (see sampling.DTYPES)


FREE_PRIOR = "base"  # --prior base: the base inside a LoRA fine-tune (adapter off), no second model


def at_least(flag: str, value: int | float | None, low: int | float = 1) -> None:
    """``value >= low`` (None passes: the setting's default applies)."""
    if value is not None and value < low:
        raise PriorswapError(f"{flag} must be at least {low}, got {value}")


def at_least_one(config: object, *fields: str) -> None:
    """:func:`at_least` 1 for each named field of a flags dataclass, its flag spelled as the command line spells it
    (``num_samples`` is ``--num-samples``)."""
    for name in fields:
        at_least("--" + name.replace("_", "-"), getattr(config, name))


def in_unit_interval(flag: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise PriorswapError(f"{flag} must lie in [0, 1], got {value}")


def check_scheduler(name: str, flag: str = "--scheduler") -> None:
    if name not in SCHEDULERS:
        raise PriorswapError(f"unknown {flag} {name!r}; choose one of {', '.join(SCHEDULERS)}")


def check_scales(flag: str, values: float | Iterable[float] | None) -> None:
    """A guidance scale below 0 pushes samples away from their condition and is refused; one in [0, 1) moves
    them toward the unconditional prediction (legal, but rarely meant), so it is warned about."""
    if values is None:
        return
    for v in [values] if isinstance(values, (int, float)) else list(values):
        if v < 0:
            raise PriorswapError(
                f"{flag} must be at least 0, got {v} (a negative scale guides away from the condition)"
            )
        if v < 1:
            warnings.warn(
                f"{flag} {v} is below 1: CFG then interpolates toward the unconditional prediction "
                "instead of extrapolating past the conditional one (the paper uses 1.5 and above)",
                stacklevel=2,
            )


def check_interval(flag: str, interval: tuple[float, float] | None) -> None:
    if interval is None:
        return
    lo, hi = interval
    if not 0.0 <= lo < hi <= 1.0:
        raise PriorswapError(f"{flag} {lo} {hi} is not an interval of t/T with 0 <= LO < HI <= 1")


def check_device(device: str, dtype: str | None = None) -> None:
    """A CUDA device that exists, and a dtype the device can run (``fp16`` on a CPU is refused: most CPU kernels
    lack it or run it slower than fp32; use ``bf16`` or ``fp32``)."""
    if dtype is not None and dtype not in DTYPE_NAMES:
        raise PriorswapError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPE_NAMES)}")
    if device != "cpu" and not device.startswith("cuda"):
        raise PriorswapError(f"unknown --device {device!r}; expected cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        import torch  # here, not at the top: every command's check() imports this file, and --help must stay torch-free

        if not torch.cuda.is_available():
            raise PriorswapError(f"--device {device} requested but no CUDA device is available; use --device cpu")
    if dtype == "fp16" and device == "cpu":
        raise PriorswapError("--dtype fp16 is not supported on the CPU; use --dtype fp32 (or bf16)")


def resolve_device(device: str) -> str:
    """``auto`` is ``cuda`` when a CUDA device is available, else ``cpu``; anything else is returned as given."""
    if device != "auto":
        return device
    import torch  # see check_device

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_input_file(flag: str, path: str) -> None:
    if not os.path.isfile(os.path.expanduser(path)):
        what = "is a folder, not a file" if os.path.isdir(path) else "does not exist"
        raise PriorswapError(f"{flag} {path!r} {what}")


def _writable_dir(folder: str) -> bool:
    """Whether a file can really be made in ``folder``. ``os.access`` alone says yes to root on read-only and
    pseudo file systems (/proc, a read-only mount), so a temporary file is made and removed."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _check_parent(flag: str, path: str) -> str:
    parent = os.path.dirname(os.path.abspath(os.path.expanduser(path)))
    probe = parent
    while not os.path.isdir(probe):  # makedirs would create it: the nearest existing ancestor must be a writable folder
        if os.path.exists(probe):
            raise PriorswapError(f"{flag} {path!r} cannot be created: {probe!r} is a file")
        probe = os.path.dirname(probe)
    if not _writable_dir(probe):
        raise PriorswapError(f"{flag} {path!r} cannot be written: {probe!r} is not writable")
    return parent


def check_output_file(flag: str, path: str, suffix: str) -> None:
    """An output file that can be written: a file name ending in ``suffix`` (``.npz``, ``.png``: the format the
    command writes), not a folder, in an existing, writable folder. A path that ends in ``/`` or lacks the suffix
    is refused before any work, so a long run never ends in a traceback at the write."""
    path = os.path.expanduser(path)
    example = f"samples{suffix}"
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        what = "is a folder" if os.path.isdir(path) else "ends in '/'"
        raise PriorswapError(f"{flag} {path!r} {what}; give a file name (e.g. {os.path.join(path, example)})")
    if not path.lower().endswith(suffix):
        raise PriorswapError(
            f"{flag} {path!r} does not end in {suffix}; it is written as a {suffix} file "
            f"(e.g. {os.path.splitext(path)[0]}{suffix})"
        )
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        what = "is a file" if os.path.exists(parent) else "does not exist"
        raise PriorswapError(f"{flag} {path!r} cannot be written: its output folder {parent!r} {what}")
    _check_parent(flag, path)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise PriorswapError(f"{flag} {path!r} exists and is not writable")


def check_output_dir(flag: str, path: str) -> None:
    """An output folder that can be made and written: no file in its place, a writable folder above it."""
    path = os.path.expanduser(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise PriorswapError(f"{flag} {path!r} is a file, not a folder")
    if os.path.isdir(path):
        if not _writable_dir(path):
            raise PriorswapError(f"{flag} {path!r} is not writable")
        return
    _check_parent(flag, path)


def label_ids(
    values: list[str | int], id2label: dict[int, str], num_classes: int, model: str = "the model"
) -> list[int]:
    """Class ids from ids or names. A name matches a class of ``id2label`` case-insensitively, whole or as one of
    its comma-separated aliases (ImageNet's "tench, Tinca tinca" is ``tench``), with ``_`` and space alike."""

    def norm(s: str) -> str:
        return " ".join(s.replace("_", " ").lower().split())

    by_name: dict[str, int] = {}
    for i, name in id2label.items():
        for alias in [name, *name.split(",")]:
            by_name.setdefault(norm(alias), int(i))
    ids = []
    for v in values:
        text = str(v).strip()
        if text.lstrip("-").isdigit():
            i = int(text)
        elif norm(text) in by_name:
            i = by_name[norm(text)]
        elif not id2label:
            raise PriorswapError(
                f"label {text!r} is not a class id, and {model} has no class names (id2label.json); "
                f"use ids 0..{num_classes - 1}"
            )
        else:
            known = sorted(id2label.items())
            shown = ", ".join(n.split(",")[0] for _, n in known[:6]) + (", ..." if len(known) > 6 else "")
            raise PriorswapError(f"unknown class name {text!r} for {model}; its {len(known)} classes are {shown}")
        if not 0 <= i < num_classes:
            raise PriorswapError(
                f"label {i} is out of range for {model}, which has {num_classes} classes (0..{num_classes - 1})"
            )
        ids.append(i)
    return ids
