"""Tiny random SDXL, SD3 and PixArt pipeline folders for the text-to-image training tests (no hub access).

One set of builders serves sampling and training: these are ``priorswap.toolkit.t2i.tiny``'s, re-exported under
the names the training tests import (the SD1.x folder comes from ``priorswap.toolkit.unet.tiny.save_sd``).
"""

from __future__ import annotations

from priorswap.toolkit.t2i.tiny import save_pixart, save_sd3, save_sdxl

__all__ = ["save_pixart", "save_sd3", "save_sdxl"]
