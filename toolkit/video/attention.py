"""The spatial and temporal transformers of DynamiCrafter's / VideoCrafter's 3D UNet (upstream
``lvdm/modules/attention.py``), with upstream's parameter names so checkpoints load strictly.

- Spatial transformer (per frame, over h*w tokens): self-attention, then cross-attention on the context. With image
  attention (DynamiCrafter) the context is 77 text tokens followed by image tokens, and
  ``out = attn(q, text) + attn(q, image) * (tanh(alpha) + 1)`` (``alpha`` only where it is learnable; upstream
  ``CrossAttention.forward``, the split at ``text_context_len = 77``).
- Temporal transformer (per pixel, over the T frames): with ``only_self_att`` both attentions are self-attention
  (upstream passes ``context=None`` to each); VideoCrafter1 adds relative-position key/value tables clipped at
  +-temporal_length.
Norm epsilons are upstream's: GroupNorm 1e-6 here, LayerNorm 1e-5 (torch's default).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TEXT_TOKENS = 77  # upstream hard-codes the text context length (attention.py text_context_len, openaimodel3d.py)


class RelativePosition(nn.Module):
    """A (2K + 1, d) table read at the clipped offset k - q (upstream ``RelativePosition``)."""

    def __init__(self, num_units: int, max_relative_position: int):
        super().__init__()
        self.max_relative_position = max_relative_position
        self.embeddings_table = nn.Parameter(torch.empty(max_relative_position * 2 + 1, num_units))
        nn.init.xavier_uniform_(self.embeddings_table)

    def forward(self, length_q: int, length_k: int) -> Tensor:
        device = self.embeddings_table.device
        offset = torch.arange(length_k, device=device)[None, :] - torch.arange(length_q, device=device)[:, None]
        k = self.max_relative_position
        return self.embeddings_table[offset.clamp(-k, k) + k]  # (Lq, Lk, d)


class CrossAttention(nn.Module):
    def __init__(
        self,
        query_dim: int,
        context_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        relative_position: bool = False,
        temporal_length: int | None = None,
        image_cross_attention: bool = False,
        image_scale_learnable: bool = False,
    ):
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads, self.dim_head, self.scale = heads, dim_head, dim_head**-0.5
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))
        self.relative_position = relative_position
        if relative_position:
            self.relative_position_k = RelativePosition(dim_head, temporal_length)
            self.relative_position_v = RelativePosition(dim_head, temporal_length)
        self.image_cross_attention = image_cross_attention
        self.image_scale_learnable = image_scale_learnable
        if image_cross_attention:
            self.to_k_ip = nn.Linear(context_dim, inner, bias=False)
            self.to_v_ip = nn.Linear(context_dim, inner, bias=False)
            if image_scale_learnable:
                self.alpha = nn.Parameter(torch.tensor(0.0))

    def _heads(self, x: Tensor) -> Tensor:  # (B, L, h*d) -> (B, h, L, d)
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.dim_head).transpose(1, 2)

    def _merge(self, x: Tensor) -> Tensor:  # (B, h, L, d) -> (B, L, h*d)
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if not self.relative_position:
            return F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        # softmax(q k^T + q r_k^T) (v + r_v), with r the clipped relative-position tables (upstream lines 108-122)
        lq, lk = q.shape[-2], k.shape[-2]
        sim = (q @ k.transpose(-1, -2)) * self.scale
        sim = sim + torch.einsum("bhtd,tsd->bhts", q, self.relative_position_k(lq, lk)) * self.scale
        attn = sim.softmax(dim=-1)
        return attn @ v + torch.einsum("bhts,tsd->bhtd", attn, self.relative_position_v(lq, lk))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        q = self._heads(self.to_q(x))
        if context is None:  # self-attention
            context, image = x, None
        elif self.image_cross_attention:
            context, image = context[:, :TEXT_TOKENS], context[:, TEXT_TOKENS:]
        else:
            image = None
        out = self._attend(q, self._heads(self.to_k(context)), self._heads(self.to_v(context)))
        out = self._merge(out)
        if image is not None:
            out_ip = self._merge(
                F.scaled_dot_product_attention(
                    q, self._heads(self.to_k_ip(image)), self._heads(self.to_v_ip(image)), scale=self.scale
                )
            )
            gate = torch.tanh(self.alpha) + 1 if self.image_scale_learnable else 1.0
            out = out + out_ip * gate
        return self.to_out(out)


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: Tensor) -> Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)  # first half is x (upstream GEGLU), exact erf GELU
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """x + attn1(norm1 x) [self], x + attn2(norm2 x, context), x + ff(norm3 x)."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None = None, **attn2_kwargs):
        super().__init__()
        rel = {k: attn2_kwargs[k] for k in ("relative_position", "temporal_length") if k in attn2_kwargs}
        self.attn1 = CrossAttention(dim, None, heads, dim_head, **rel)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head, **attn2_kwargs)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class _Transformer(nn.Module):
    """GroupNorm, an input projection, ``depth`` attention blocks and an output projection: the part both
    transformers share. The projections are linear with ``use_linear``, else 1x1 convolutions of ``conv``."""

    conv: type[nn.Module] = nn.Conv2d

    def __init__(self, channels: int, heads: int, dim_head: int, depth: int = 1, use_linear: bool = False, **block):
        super().__init__()
        inner = heads * dim_head
        self.use_linear = use_linear
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner) if use_linear else self.conv(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(self.block(inner, heads, dim_head, **block) for _ in range(depth))
        self.proj_out = nn.Linear(inner, channels) if use_linear else self.conv(inner, channels, 1)

    def block(self, inner: int, heads: int, dim_head: int, **options) -> BasicTransformerBlock:
        raise NotImplementedError


class SpatialTransformer(_Transformer):
    """Attention over each frame's h*w positions; input/output (B*T, C, h, w)."""

    def block(
        self,
        inner: int,
        heads: int,
        dim_head: int,
        context_dim: int | None = None,
        image_cross_attention: bool = False,
        image_scale_learnable: bool = False,
    ) -> BasicTransformerBlock:
        return BasicTransformerBlock(
            inner,
            heads,
            dim_head,
            context_dim,
            image_cross_attention=image_cross_attention,
            image_scale_learnable=image_scale_learnable,
        )

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        if not self.use_linear:
            y = self.proj_in(y)
        y = y.flatten(2).transpose(1, 2)  # (B, h*w, C)
        if self.use_linear:
            y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y, context)
        if self.use_linear:
            y = self.proj_out(y)
        y = y.transpose(1, 2).reshape(b, -1, h, w)
        if not self.use_linear:
            y = self.proj_out(y)
        return x + y


class TemporalTransformer(_Transformer):
    """Attention over the T frames at each position; input/output (B, C, T, h, w). Only the self-attention form
    the released models use (``temporal_selfatt_only``) is built."""

    conv = nn.Conv1d

    def block(
        self, inner: int, heads: int, dim_head: int, relative_position: bool = False, temporal_length: int | None = None
    ) -> BasicTransformerBlock:
        rel = {"relative_position": True, "temporal_length": temporal_length} if relative_position else {}
        return BasicTransformerBlock(inner, heads, dim_head, None, **rel)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(x).permute(0, 3, 4, 1, 2).reshape(b * h * w, c, t)  # (B*h*w, C, T)
        if not self.use_linear:
            y = self.proj_in(y)
        y = y.transpose(1, 2)  # (B*h*w, T, C)
        if self.use_linear:
            y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y)  # both attentions are self-attention (context None)
        if self.use_linear:
            y = self.proj_out(y)
        else:
            y = self.proj_out(y.transpose(1, 2)).transpose(1, 2)
        y = y.reshape(b, h, w, t, c).permute(0, 4, 3, 1, 2)
        return x + y
