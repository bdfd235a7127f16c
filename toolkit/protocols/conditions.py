"""Turn evaluation items into each UNet fine-tune's conditions, a batch at a time.

``model_input(item)`` is the condition image as the model sees it (PIL); ``encode(items)`` returns
``(cond, image_cond)`` batched over ``items`` (``image_cond`` is InstructPix2Pix's (image, null text) condition
for Eq. 9, else None). Encoders stay loaded for the whole run, since every batch needs them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..errors import PriorswapError
from ..images import image_size, read_image, to_tensor
from ..unet.ip2p import IP2PCond, image_latents, prompt_embedding
from ..unet.versatile import vd_image_embedding
from ..unet.zero123 import Zero123Cond, pose_vector, zero123_embedding
from .items import Item


def slice_cond(cond: Any, part: slice | torch.Tensor) -> Any:
    """Rows ``part`` (a slice or an index tensor) of a batched condition: a tensor, or a dataclass of tensors
    (None fields stay None)."""
    if cond is None:
        return None
    if torch.is_tensor(cond):
        return cond[part]
    return dataclasses.replace(
        cond, **{f.name: slice_cond(getattr(cond, f.name), part) for f in dataclasses.fields(cond)}
    )


def repeat_cond(cond: Any, counts: list[int]) -> Any:
    """Row i of a batched condition repeated ``counts[i]`` times (several samples of one item)."""
    if cond is None:
        return None
    if torch.is_tensor(cond):
        return cond.repeat_interleave(torch.tensor(counts), dim=0)
    return dataclasses.replace(
        cond, **{f.name: repeat_cond(getattr(cond, f.name), counts) for f in dataclasses.fields(cond)}
    )


class Conditions:
    """Base: the model's VAE factor, device placement of the encoders, and the latent size of an item."""

    def __init__(self, model, device, offload: bool = False):
        self.model, self.device, self.offload = model, torch.device(device), offload
        vae_factor = 2 ** (len(model.vae.config.block_out_channels) - 1)
        self.factor = vae_factor  # pixels per latent
        self.multiple = vae_factor * model.denoiser._down  # pixels a side must be a multiple of

    def modules(self) -> list[torch.nn.Module]:
        return []

    def model_input(self, item: Item):
        raise NotImplementedError

    def pixel_size(self, item: Item) -> tuple[int, int]:
        """(w, h) of the generated image for ``item``."""
        raise NotImplementedError

    def latent_hw(self, item: Item) -> tuple[int, int]:
        w, h = self.pixel_size(item)
        return h // self.factor, w // self.factor

    def _on(self) -> None:
        for m in self.modules():
            m.to(self.device)

    def _off(self, force: bool = False) -> None:
        if self.offload or force:
            for m in self.modules():
                m.to("cpu")

    def release(self) -> None:
        """Move the encoders off the device (scoring needs only ``model_input``)."""
        self._off(force=True)

    @torch.no_grad()
    def encode(self, items: list[Item]) -> tuple[Any, Any]:
        self._on()
        try:
            return self._encode(items)
        finally:
            self._off()

    def _encode(self, items: list[Item]) -> tuple[Any, Any]:
        raise NotImplementedError


class Zero123Conditions(Conditions):
    """Reference view at ``size`` px (transparent renders composited on white) plus the relative pose."""

    def __init__(self, model, device, size: int, offload: bool = False):
        super().__init__(model, device, offload)
        if size % self.multiple:
            raise PriorswapError(f"--size must be a multiple of {self.multiple} for this model, got {size}")
        self.size = size

    def modules(self):
        return [self.model.vae, self.model.encoders["image_encoder"], self.model.encoders["cc_projection"]]

    def model_input(self, item: Item):
        return read_image(item.image, (self.size, self.size), quiet=True)

    def pixel_size(self, item: Item) -> tuple[int, int]:
        return self.size, self.size

    def _encode(self, items):
        enc = self.model.encoders
        x = torch.cat([to_tensor(self.model_input(it)) for it in items])  # (N, 3, S, S) in [-1, 1]
        pose = torch.cat([pose_vector(*it.pose) for it in items])  # (N, 1, 4)
        emb = zero123_embedding(enc["image_encoder"], enc["cc_projection"], x, pose, enc["mean"], enc["std"]).cpu()
        return Zero123Cond(emb, image_latents(self.model.vae, x).cpu()), None


class IP2PConditions(Conditions):
    """Input image (its own size rounded down to the model's multiple, or ``size`` x ``size``) and the edit text."""

    def __init__(self, model, device, size: int | None = None, offload: bool = False):
        super().__init__(model, device, offload)
        if size is not None and size % self.multiple:
            raise PriorswapError(f"--size must be a multiple of {self.multiple} for this model, got {size}")
        self.size = size
        self._sizes: dict[str, tuple[int, int]] = {}

    def modules(self):
        return [self.model.vae, self.model.encoders["text_encoder"]]

    def pixel_size(self, item: Item) -> tuple[int, int]:
        if self.size:
            return self.size, self.size
        if item.image not in self._sizes:  # header read once per file
            w, h = image_size(item.image)
            if min(w, h) < self.multiple:
                raise PriorswapError(
                    f"input image {item.image!r} is {w}x{h}; it needs at least {self.multiple} pixels per side"
                )
            self._sizes[item.image] = (w // self.multiple * self.multiple, h // self.multiple * self.multiple)
        return self._sizes[item.image]

    def model_input(self, item: Item):
        return read_image(item.image, self.pixel_size(item), quiet=True)

    def _encode(self, items):
        x = torch.cat([to_tensor(self.model_input(it)) for it in items])  # (N, 3, H, W); one size per batch
        latent = image_latents(self.model.vae, x).cpu()  # unscaled (docs/method.md trap 7)
        enc = self.model.encoders
        text = prompt_embedding(enc["tokenizer"], enc["text_encoder"], [it.edit for it in items]).cpu()
        return IP2PCond(image=latent, text=text), IP2PCond(image=latent)


class VDConditions(Conditions):
    """CLIP-vision token embedding of the input image; output ``size`` px (default: the UNet's own)."""

    def __init__(self, model, device, size: int | None = None, offload: bool = False):
        super().__init__(model, device, offload)
        self.size = size or int(model.denoiser.unet.config.sample_size) * self.factor
        if self.size % self.multiple:
            raise PriorswapError(f"--size must be a multiple of {self.multiple} for this model, got {self.size}")

    def modules(self):
        return [self.model.encoders["image_encoder"]]

    def pixel_size(self, item: Item) -> tuple[int, int]:
        return self.size, self.size

    def model_input(self, item: Item):
        return read_image(item.image, quiet=True)  # the CLIP processor resizes and crops it itself

    def _encode(self, items):
        enc = self.model.encoders
        return vd_image_embedding(
            enc["feature_extractor"], enc["image_encoder"], [self.model_input(it) for it in items]
        ).cpu(), None


CONDITIONS = {"zero123": Zero123Conditions, "ip2p": IP2PConditions, "vd": VDConditions}
