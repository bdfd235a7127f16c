"""Image preprocessing shared by every datamodule.

DiT (and ADM before it) trained on ImageNet with one specific crop; fine-tunes that are compared with the
base model by FID must see images prepared the same way, so the crop is reproduced here exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def adm_center_crop(image: Image.Image, resolution: int) -> Image.Image:
    """ADM/DiT center crop: BOX-halve while the short side is >= 2*res, BICUBIC-resize short side to res, crop.

    The repeated box halving anti-aliases large downscales before the single bicubic step.
    """
    while min(*image.size) >= 2 * resolution:
        image = image.resize(tuple(side // 2 for side in image.size), resample=Image.BOX)
    scale = resolution / min(*image.size)
    image = image.resize(tuple(round(side * scale) for side in image.size), resample=Image.BICUBIC)
    width, height = image.size
    left, top = (width - resolution) // 2, (height - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def to_signed_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) or (H, W, C) -> float (C, H, W) in [-1, 1]."""
    tensor = torch.from_numpy(np.array(array, dtype=np.float32))  # copy: PIL arrays are read-only
    if tensor.ndim == 2:
        tensor = tensor[None]  # (1, H, W)
    else:
        tensor = tensor.permute(2, 0, 1)  # (C, H, W)
    return tensor / 127.5 - 1.0


class AdmTransform:
    """PIL image -> (C, res, res) in [-1, 1]: RGB (or grey, ``channels=1``), ADM center crop, optional random flip."""

    def __init__(self, resolution: int, flip: bool, channels: int = 3):
        self.resolution = resolution
        self.flip = flip
        self.mode = {1: "L", 3: "RGB"}[channels]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = adm_center_crop(image.convert(self.mode), self.resolution)
        pixels = to_signed_tensor(np.asarray(image))  # (C, res, res)
        if self.flip and torch.rand(()) < 0.5:
            pixels = pixels.flip(-1)
        return pixels


class PadTransform:
    """Small grey image (e.g. 28x28 Fashion-MNIST) -> padded with black to a power of two, [-1, 1].

    Padding (not resizing) keeps the strokes pixel-exact; `resolution` other than the padded size is
    reached with a bicubic resize afterwards. ``channels=3`` repeats the channel for 3-channel encoders.
    """

    def __init__(self, pad: int, resolution: int, flip: bool, channels: int = 1):
        self.pad, self.resolution, self.flip, self.rgb = pad, resolution, flip, channels == 3

    def __call__(self, image: Image.Image) -> torch.Tensor:
        array = np.pad(np.asarray(image.convert("L")), self.pad)  # (H+2p, W+2p), black border
        if array.shape[0] != self.resolution or array.shape[1] != self.resolution:
            array = np.asarray(Image.fromarray(array).resize((self.resolution,) * 2, Image.BICUBIC))
        pixels = to_signed_tensor(array)  # (1, res, res)
        if self.rgb:
            pixels = pixels.expand(3, -1, -1).clone()
        if self.flip and torch.rand(()) < 0.5:
            pixels = pixels.flip(-1)
        return pixels
