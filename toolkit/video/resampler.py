"""DynamiCrafter's image-token Resampler (a Perceiver, as IP-Adapter Plus), same parameter names and maths as
upstream ``lvdm/modules/encoders/resampler.py``, so the checkpoint's ``image_proj_model.*`` loads strictly.

It turns the ViT's 1 + grid² tokens of the vision *width* into ``num_queries`` tokens per frame of ``output_dim``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class ResamplerConfig:
    """Sizes, named as upstream's constructor arguments (``image_proj_stage_config.params`` in the YAML)."""

    dim: int = 1024
    depth: int = 8
    dim_head: int = 64
    heads: int = 16
    num_queries: int = 8
    embedding_dim: int = 768
    output_dim: int = 1024
    ff_mult: int = 4
    video_length: int | None = None  # when set, num_queries learned queries per frame (resampler.py 114-116)

    @property
    def total_queries(self) -> int:
        return self.num_queries * (self.video_length or 1)


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    """LayerNorm, Linear, GELU, Linear (no biases); a Sequential so the keys are ``.0`` ``.1`` ``.3`` as upstream."""
    inner = int(dim * mult)
    return nn.Sequential(
        nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(), nn.Linear(inner, dim, bias=False)
    )


class PerceiverAttention(nn.Module):
    """Latents attend to [image tokens; latents] (resampler.py 48-93)."""

    def __init__(self, dim: int, dim_head: int, heads: int):
        super().__init__()
        self.dim_head = dim_head
        self.heads = heads
        inner = dim_head * heads  # may differ from dim (768 vs 1024 in the release)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def split_heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, -1).transpose(1, 2)  # (B, heads, N, dim_head)

    def forward(self, x: Tensor, latents: Tensor) -> Tensor:
        x = self.norm1(x)  # (B, N1, D)
        latents = self.norm2(latents)  # (B, N2, D)
        b, n, _ = latents.shape
        q = self.split_heads(self.to_q(latents))  # (B, h, N2, d)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        k, v = self.split_heads(k), self.split_heads(v)  # (B, h, N1 + N2, d)
        # resampler.py 86-88: d^-1/4 on q and on k rather than d^-1/2 afterwards (steadier in fp16); softmax in fp32
        scale = 1 / math.sqrt(math.sqrt(self.dim_head))
        weight = (q * scale) @ (k * scale).transpose(-2, -1)  # (B, h, N2, N1 + N2)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        out = (weight @ v).transpose(1, 2).reshape(b, n, -1)  # (B, N2, h * d)
        return self.to_out(out)  # (B, N2, D)


class Resampler(nn.Module):
    """Image tokens (B, N, embedding_dim) -> (B, num_queries × video_length, output_dim) (resampler.py 96-145)."""

    def __init__(self, config: ResamplerConfig):
        super().__init__()
        self.config = config
        c = config
        self.latents = nn.Parameter(torch.randn(1, c.total_queries, c.dim) / c.dim**0.5)
        self.proj_in = nn.Linear(c.embedding_dim, c.dim)
        self.proj_out = nn.Linear(c.dim, c.output_dim)
        self.norm_out = nn.LayerNorm(c.output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(c.dim, c.dim_head, c.heads), feed_forward(c.dim, c.ff_mult)])
            for _ in range(c.depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        latents = self.latents.repeat(x.shape[0], 1, 1)  # (B, T*Q, dim), frame-major as upstream
        x = self.proj_in(x)  # (B, N, dim)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))  # (B, T*Q, output_dim)
