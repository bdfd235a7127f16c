"""Images in and out: condition images read the way the UNet fine-tunes expect them (used by ``sample`` and
``eval``), the one float-to-uint8 rule, and the one (labelled) grid builder every command, the demo and the
callback draw with."""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from .errors import PriorswapError
from .files import atomic_write


def read_image(path: str, size: tuple[int, int] | None = None, multiple: int = 1, quiet: bool = False):
    """An input image as RGB PIL at ``size`` (w, h), or its own size rounded down to ``multiple``.

    Transparent images are composited onto white (how Zero-1-to-3's objects were rendered); any other
    mode is converted to RGB; each conversion or resize is reported on stderr unless ``quiet``.
    """
    if not os.path.isfile(path):
        raise PriorswapError(f"input image {path!r} does not exist")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError) as e:
        raise PriorswapError(
            f"cannot read input image {path!r} ({type(e).__name__}); expected a PNG, JPEG or other Pillow format"
        ) from None
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
        notes.append(
            f"resized from {w}x{h} to {target[0]}x{target[1]}"
            + (" (aspect ratio changed)" if w * target[1] != h * target[0] else "")
        )
    if not quiet:
        for n in notes:
            print(f"priorswap: note: input {path}: {n}", file=sys.stderr)
    return img


def image_size(path: str) -> tuple[int, int]:
    """(w, h) from the file header, without decoding the pixels."""
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


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Floats in [0, 1] -> uint8 of the same shape and device: clamp, x 255, round half to even.

    The one float-to-8-bit rule of the package, the one diffusers' ``numpy_to_pil`` applies when it saves
    samples; what the metrics quantise to (Inception takes uint8) must match what a saved PNG holds.
    """
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> uint8 numpy NHWC, rounded like diffusers' ``numpy_to_pil``."""
    return quantize(images).permute(0, 2, 3, 1).cpu().numpy()


GRID_PAD = 2  # white pixels between tiles and around the grid
_LABEL_PAD = 4  # white pixels around a label


def _font():
    try:
        return ImageFont.load_default(size=13)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _fit(draw, text: str, font, width: int) -> str:
    """``text``, cut and ended with '...' until it is at most ``width`` pixels wide."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..." if text else ""


def make_grid(
    rows: list[torch.Tensor],
    row_labels: list[str] | None = None,
    col_labels: list[str] | None = None,
    min_tile: int = 96,
) -> torch.Tensor:
    """Rows of images as one labelled picture: (3, H, W) floats in [0, 1].

    Each row is a (k, C, H, W) batch in [0, 1] (C = 1 or 3; grey is shown as grey RGB), drawn left to right with
    the image in column j of every row above each other. Tiles smaller than ``min_tile`` pixels are enlarged
    by an integer factor (nearest neighbour, so pixels stay sharp) to at least that size. ``row_labels`` are
    written in a left margin, ``col_labels`` in a top margin (Pillow's default font; a column label too wide for
    its tile is cut short with '...').
    """
    if not rows or any(r.ndim != 4 or r.shape[1] not in (1, 3) for r in rows):
        raise ValueError("make_grid takes a non-empty list of (k, 1 or 3, H, W) batches")
    h, w = rows[0].shape[-2:]
    if any(tuple(r.shape[-2:]) != (h, w) for r in rows):
        raise ValueError(f"make_grid: every image must be {h}x{w}, got {[tuple(r.shape[-2:]) for r in rows]}")
    ncol = max(r.shape[0] for r in rows)
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"make_grid: {len(row_labels)} row labels for {len(rows)} rows")
    if col_labels is not None and len(col_labels) != ncol:
        raise ValueError(f"make_grid: {len(col_labels)} column labels for {ncol} columns")
    scale = max(1, -(-min_tile // min(h, w))) if min_tile else 1
    th, tw = h * scale, w * scale

    font = _font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = measure.textbbox((0, 0), "Ag", font=font)[3]
    left = (
        max((int(measure.textlength(s, font=font)) for s in row_labels), default=0) + 2 * _LABEL_PAD
        if row_labels
        else 0
    )
    top = line_h + 2 * _LABEL_PAD if col_labels else 0
    width = left + GRID_PAD + ncol * (tw + GRID_PAD)
    height = top + GRID_PAD + len(rows) * (th + GRID_PAD)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)

    for i, row in enumerate(rows):
        y = top + GRID_PAD + i * (th + GRID_PAD)
        for j, a in enumerate(to_uint8(row)):
            tile = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).convert("RGB")
            if scale > 1:
                tile = tile.resize((tw, th), Image.NEAREST)
            canvas.paste(tile, (left + GRID_PAD + j * (tw + GRID_PAD), y))
        if row_labels:
            draw.text((_LABEL_PAD, y + (th - line_h) // 2), row_labels[i], fill="black", font=font)
    for j, name in enumerate(col_labels or []):
        text = _fit(draw, str(name), font, tw - 2)
        x = left + GRID_PAD + j * (tw + GRID_PAD) + (tw - int(draw.textlength(text, font=font))) // 2
        draw.text((x, _LABEL_PAD), text, fill="black", font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float() / 255


def save_grid(
    path: str,
    rows: list[torch.Tensor],
    row_labels: list[str] | None = None,
    col_labels: list[str] | None = None,
    min_tile: int = 96,
) -> None:
    """:func:`make_grid` saved as a PNG, atomically (whole or absent) and honouring the umask."""
    array = to_uint8(make_grid(rows, row_labels, col_labels, min_tile)[None])[0]
    with atomic_write(path, "wb") as f:
        Image.fromarray(array).save(f, format="PNG")
