"""DynamiCrafter (image + text -> 16-frame video) and VideoCrafter1 T2V as denoisers.

DynamiCrafter's condition is :class:`DCCond` (text tokens, image tokens); ``None`` fields are its nulls: the text
encoder's ``""`` and the image embedder's tokens of a zero image (mid grey in [-1, 1]; upstream
``inference.py`` line 198). The conditioning image's latent is concatenated to x_t in **every** branch, the
unconditional one included (upstream ``image_guided_synthesis``: ``uc["c_concat"] = [img_cat_cond]``), so it is
bound to the denoiser with :meth:`DynamiCrafterDenoiser.bind` rather than carried by the condition. Frame stride
``fs`` is bound the same way.

The paper's swap (its Eq. 8 with the unconditional term replaced): only e(null text, null image) comes from
VideoCrafter1, as its e(x_t, "") on DynamiCrafter's 4-channel noisy latent (no concat, no fs); e(null text, image)
stays DynamiCrafter's. That is exactly what :func:`priorswap.toolkit.core.sampling.dual_cfg_eps` asks of a prior.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from ..core.denoisers import LatentSpace
from ..core.downsampling import DownsamplingDenoiser
from ..errors import PriorswapError


@dataclass
class DCCond:
    """One DynamiCrafter condition; a None field is that modality's null."""

    text: Tensor | None = None  # (1 or B, 77, D) penultimate OpenCLIP text tokens
    image: Tensor | None = None  # (1 or B, 16 T, D) Resampler output


def _rows(t: Tensor, b: int) -> Tensor:
    return t.expand(b, *t.shape[1:]) if t.shape[0] == 1 else t


class VideoUNetDenoiser(DownsamplingDenoiser):
    """Shared by both models: a :class:`~priorswap.toolkit.video.unet3d.UNet3D` on (B, 4, T, h, w) latents."""

    def __init__(self, unet: torch.nn.Module, space: LatentSpace, name: str):
        super().__init__(unet, space, name, int(unet.config.out_channels), 2 ** (len(unet.config.channel_mult) - 1))
        self.frames = unet.config.temporal_length


class DynamiCrafterDenoiser(VideoUNetDenoiser):
    def __init__(
        self,
        unet: torch.nn.Module,
        null_text: Tensor,
        null_image: Tensor,
        space: LatentSpace,
        name: str = "dynamicrafter",
    ):
        super().__init__(unet, space, name)
        self.null_text, self.null_image = null_text, null_image  # (1, 77, D), (1, 16 T, D)
        self.concat: Tensor | None = None  # (1 or B, 4, T, h, w): the conditioning image's latent, every frame
        self.fs: int = unet.config.default_fs

    def bind(self, concat: Tensor, fs: int | None = None) -> DynamiCrafterDenoiser:
        """This denoiser with the conditioning image's latent (and frame stride) fixed for every branch; shares
        the networks."""
        if concat.ndim != 5 or concat.shape[1] != self.latent_channels:
            raise PriorswapError(f"{self.name}: the image latent must be (B, {self.latent_channels}, T, h, w)")
        bound = copy.copy(self)
        bound.concat, bound.fs = concat, self.fs if fs is None else int(fs)
        return bound

    def forward_batch(self, x: Tensor, t: Tensor, conds: Sequence[Any]) -> Tensor:
        if self.concat is None:
            raise PriorswapError(f"{self.name} needs its conditioning image's latent: use denoiser.bind(latent)")
        b = x.shape[0] // len(conds)
        contexts = []
        for c in conds:
            c = DCCond() if c is None else c
            text = _rows(self.null_text if c.text is None else c.text, b)
            image = _rows(self.null_image if c.image is None else c.image, b)
            contexts.append(torch.cat([text.to(x.device), image.to(x.device)], dim=1))
        context = torch.cat(contexts).to(self.dtype)
        concat = _rows(self.concat, b).to(device=x.device, dtype=self.dtype).repeat(len(conds), 1, 1, 1, 1)
        fs = torch.full((x.shape[0],), self.fs, dtype=torch.long, device=x.device)
        return self.unet(torch.cat([x.to(self.dtype), concat], dim=1), t, context, fs)


class VideoCrafterPrior(VideoUNetDenoiser):
    """VideoCrafter1 T2V; ``cond`` is a (1 or B, 77, D) text embedding, ``None`` the ``""`` one."""

    def __init__(self, unet: torch.nn.Module, null_text: Tensor, space: LatentSpace, name: str = "videocrafter"):
        super().__init__(unet, space, name)
        if unet.config.in_channels != space.channels:
            raise PriorswapError(
                f"{name} takes {unet.config.in_channels} input channels; a T2V prior takes the noisy latent only"
            )
        self.null_text = null_text

    def forward_batch(self, x: Tensor, t: Tensor, conds: Sequence[Any]) -> Tensor:
        b = x.shape[0] // len(conds)
        context = torch.cat([_rows(self.null_text if c is None else c, b).to(x.device) for c in conds])
        return self.unet(x.to(self.dtype), t, context.to(self.dtype))
