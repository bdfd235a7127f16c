"""Text-to-image preprocessing: resize the short side, maybe flip, crop a square, and say where the crop was.

It follows diffusers' text-to-image training scripts (resize, then flip, then a center or random crop) and records
what SDXL's micro-conditioning is trained on: the image's size before any resize and the crop's top-left corner.
Random choices come from torch's global RNG, which `SeededItems` seeds per (epoch, item): a resumed run makes the
same choices, in any DataLoader worker.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps

from priorswap.data.transforms import to_signed_tensor


class CaptionCrop:
    """PIL image -> (pixels (3, res, res) in [-1, 1], original_size (height, width), crop_top_left (top, left)).

    original_size is the upright image's (after its EXIF orientation) before the resize. crop_top_left is in the
    resized image as the model sees it, i.e. after the flip, as SDXL recorded it: flip-then-crop means a random
    crop's `left` counts pixels cut from the left edge of the flipped image.
    """

    def __init__(self, resolution: int, center_crop: bool, random_flip: bool):
        self.resolution, self.center_crop, self.random_flip = resolution, center_crop, random_flip

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = ImageOps.exif_transpose(image).convert("RGB")  # phones store portraits sideways plus a tag
        width, height = image.size
        res = self.resolution
        scale = res / min(width, height)
        size = (max(res, round(width * scale)), max(res, round(height * scale)))
        if size != image.size:
            image = image.resize(size, resample=Image.BICUBIC)
        if self.random_flip and torch.rand(()) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.center_crop:  # torchvision's CenterCrop offsets, which diffusers records
            top, left = int(round((size[1] - res) / 2.0)), int(round((size[0] - res) / 2.0))
        else:
            top = int(torch.randint(0, size[1] - res + 1, ()))
            left = int(torch.randint(0, size[0] - res + 1, ()))
        image = image.crop((left, top, left + res, top + res))
        pixels = to_signed_tensor(np.asarray(image))
        return pixels, torch.tensor([height, width]), torch.tensor([top, left])
