"""Reading condition images from disk the way the UNet fine-tunes expect them (used by ``sample`` and ``eval``)."""
from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
import torch

from .errors import PriorswapError


def read_image(path: str, size: tuple[int, int] | None = None, multiple: int = 1, quiet: bool = False):
    """An input image as RGB PIL at ``size`` (w, h), or its own size rounded down to ``multiple``.

    Transparent images are composited onto white (how Zero-1-to-3's objects were rendered); any other
    mode is converted to RGB; each conversion or resize is reported on stderr unless ``quiet``.
    """
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise PriorswapError(f"input image {path!r} does not exist")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise PriorswapError(f"cannot read input image {path!r} ({type(e).__name__}); expected a PNG, JPEG or other Pillow format") from None
    notes, mode = [], img.mode
    if mode != "RGB":
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, rgba).convert("RGB")
            notes.append(f"mode {mode} (transparent) composited onto white and converted to RGB")
        else:
            notes.append(f"mode {mode} converted to RGB")
            img = img.convert("RGB")
    w, h = img.size
    target = size or (w // multiple * multiple, h // multiple * multiple)
    if min(target) < multiple or min(target) < 8:
        raise PriorswapError(f"input image {path!r} is {w}x{h}; it needs at least {max(multiple, 8)} pixels per side")
    if target != (w, h):
        img = img.resize(target, Image.BICUBIC)
        notes.append(f"resized from {w}x{h} to {target[0]}x{target[1]}" + (" (aspect ratio changed)" if w * target[1] != h * target[0] else ""))
    if not quiet:
        for n in notes:
            print(f"priorswap: note: input {path}: {n}", file=sys.stderr)
    return img


def image_size(path: str) -> tuple[int, int]:
    """(w, h) from the file header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as e:
        raise PriorswapError(f"cannot read input image {path!r} ({type(e).__name__})") from None


def to_tensor(img) -> torch.Tensor:
    """RGB PIL -> (1, 3, H, W) in [-1, 1] (diffusers' ``VaeImageProcessor`` convention)."""
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    return x * 2 - 1


def to_unit(img) -> torch.Tensor:
    """RGB PIL -> (1, 3, H, W) in [0, 1] (what the metrics take)."""
    return to_tensor(img) / 2 + 0.5


def save_grid_atomic(path: str, rows: list[torch.Tensor]) -> None:
    """Save rows of (N, C, H, W) images in [0, 1] as one PNG grid (one row per tensor)."""
    from PIL import Image
    from torchvision.utils import make_grid

    images = torch.cat(rows)
    grid = make_grid(images, nrow=rows[0].shape[0], padding=2, pad_value=1.0)
    array = (grid.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    if array.shape[2] == 1:
        array = array[:, :, 0]
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".png")
    os.close(fd)
    try:
        Image.fromarray(array).save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
