"""Text-to-image models used as unconditional priors: SD-family UNets and PixArt-alpha.

Each prior's null condition is *its own* text encoder's embedding of the empty prompt (docs/method.md trap 6),
computed once by :func:`empty_prompt_embedding` so the encoder can be freed before sampling.
PixArt is a DiT with learned sigma and a linear schedule; the base class handles both.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from ..core.denoisers import LatentSpace, ModelDenoiser
from .denoiser import UNetDenoiser


@torch.no_grad()
def encode_prompts(
    tokenizer, text_encoder, prompts: Sequence[str], max_length: int | None = None, use_mask: bool = False
) -> tuple[Tensor, Tensor]:
    """(embeddings (N, L, D) on the encoder's device, attention mask (N, L)) of ``prompts`` padded to ``max_length``
    (default: the tokenizer's), as SD and PixArt pipelines encode them. The mask is passed to the encoder only with
    ``use_mask`` or where the encoder's config asks for it."""
    max_length = max_length or tokenizer.model_max_length
    tok = tokenizer(list(prompts), padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    mask = tok.attention_mask
    device = next(text_encoder.parameters()).device
    use_mask = use_mask or getattr(text_encoder.config, "use_attention_mask", False)
    out = text_encoder(tok.input_ids.to(device), attention_mask=mask.to(device) if use_mask else None)
    return out[0].detach(), mask


def empty_prompt_embedding(tokenizer, text_encoder, max_length: int | None = None) -> tuple[Tensor, Tensor]:
    """(embedding (1, L, D), attention mask (1, L)) of the prompt "" padded to ``max_length``, on the CPU.

    Mirrors how diffusers' SD and PixArt pipelines encode their negative prompt (T5 always with its mask).
    """
    t5 = "T5" in type(text_encoder).__name__
    emb, mask = encode_prompts(tokenizer, text_encoder, [""], max_length, use_mask=t5)
    return emb.cpu(), mask.cpu()


class UNetPrior(UNetDenoiser):
    """A ``UNet2DConditionModel``; ``cond`` is a (B, L, D) text embedding (or (1, L, D), shared by the batch),
    ``None`` the empty-prompt one."""

    def __init__(self, unet: torch.nn.Module, null_embedding: Tensor, space: LatentSpace, name: str = "unet"):
        super().__init__(unet, space, name)
        self.null_embedding = null_embedding  # (1, L, D)

    def forward_batch(self, x: Tensor, t: Tensor, conds: Sequence[Any]) -> Tensor:
        b = x.shape[0] // len(conds)
        embs = [(self.null_embedding if c is None else c).to(x.device, self.dtype) for c in conds]
        emb = torch.cat([e.expand(b, -1, -1) for e in embs])
        return self.unet(x.to(self.dtype), t, encoder_hidden_states=emb).sample


class PixArtPrior(ModelDenoiser):
    """A ``PixArtTransformer2DModel``; ``cond`` is (embedding (B, L, D), mask (B, L)), ``None`` the empty prompt."""

    def __init__(
        self,
        transformer: torch.nn.Module,
        null_embedding: Tensor,
        null_mask: Tensor,
        space: LatentSpace,
        name: str = "pixart",
    ):
        super().__init__(space, name)
        self._check_channels(int(transformer.config.in_channels))
        self.transformer = transformer.eval().requires_grad_(False)
        self.null_embedding, self.null_mask = null_embedding, null_mask
        self.patch_size = int(transformer.config.patch_size)

    def modules(self) -> list[torch.nn.Module]:
        return [self.transformer]

    def size_problem(self, height: int, width: int) -> str | None:
        if height % self.patch_size or width % self.patch_size:
            return f"{self.name} needs latent sizes divisible by its patch size {self.patch_size}, got {height}x{width}"
        return None  # PixArt interpolates its position embeddings (docs/method.md trap 9)

    def forward_batch(self, x: Tensor, t: Tensor, conds: Sequence[Any]) -> Tensor:
        b = x.shape[0] // len(conds)
        embs, masks = [], []
        for c in conds:
            e, m = (self.null_embedding.expand(b, -1, -1), self.null_mask.expand(b, -1)) if c is None else c
            embs.append(e)
            masks.append(m)
        emb = torch.cat(embs).to(device=x.device, dtype=self.dtype)
        mask = torch.cat(masks).to(device=x.device)
        added = {"resolution": None, "aspect_ratio": None}
        if self.transformer.config.sample_size == 128:  # PixArt-1024 micro-conditions, as its pipeline sets them
            h, w = x.shape[-2] * 8, x.shape[-1] * 8
            added = {
                "resolution": torch.tensor([[h, w]], device=x.device, dtype=self.dtype).repeat(x.shape[0], 1),
                "aspect_ratio": torch.tensor([[h / w]], device=x.device, dtype=self.dtype).repeat(x.shape[0], 1),
            }
        return self.transformer(
            x.to(self.dtype),
            encoder_hidden_states=emb,
            encoder_attention_mask=mask,
            timestep=t,
            added_cond_kwargs=added,
        ).sample
