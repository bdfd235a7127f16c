"""The 3D UNet of DynamiCrafter and VideoCrafter1 (upstream ``lvdm/modules/networks/openaimodel3d.py`` in both
code bases), one class with the flags of :class:`~priorswap.toolkit.video.config.UNet3DConfig`.

Module names are upstream's, so ``model.diffusion_model.*`` loads strictly (DynamiCrafter-256's
``framestride_embed`` is renamed to ``fps_embedding`` by the converter, as upstream's loader does). Frames are
folded into the batch, (B*T, C, h, w), everywhere except in the temporal layers. Two things differ per model and are
flags: DynamiCrafter's temporal convolution in every ResBlock, frame-stride (fs) embedding and image
cross-attention; VideoCrafter1's relative-position temporal attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import TEXT_TOKENS, SpatialTransformer, TemporalTransformer
from .config import UNet3DConfig


def timestep_embedding(t: Tensor, dim: int, max_period: int = 10000) -> Tensor:
    """Sinusoidal embedding, [cos, sin] order (upstream ``utils_diffusion.timestep_embedding``); also used for fs."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(t.device)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1) if dim % 2 else emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32, C, eps 1e-5) computed in float32 (upstream ``basics.normalization``)."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: Tensor) -> Tensor:  # weights too, so that bf16/fp16 weights work outside autocast
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps).type(x.dtype)


class TemporalConvBlock(nn.Module):
    """Four (3, 1, 1) temporal convolutions with a residual (upstream ``TemporalConvBlock``, DynamiCrafter's variant:
    with ``spatial_aware`` the kernels alternate (3, 3, 1) and (3, 1, 3)). GroupNorm eps 1e-5."""

    def __init__(self, channels: int, spatial_aware: bool = False):
        super().__init__()
        th, th_pad = ((3, 3, 1), (1, 1, 0)) if spatial_aware else ((3, 1, 1), (1, 0, 0))
        tw, tw_pad = ((3, 1, 3), (1, 0, 1)) if spatial_aware else ((3, 1, 1), (1, 0, 0))

        def stage(kernel, pad, dropout: bool) -> nn.Sequential:
            layers = [nn.GroupNorm(32, channels), nn.SiLU()] + ([nn.Dropout(0.0)] if dropout else [])
            return nn.Sequential(*layers, nn.Conv3d(channels, channels, kernel, padding=pad))

        self.conv1 = stage(th, th_pad, False)
        self.conv2 = stage(tw, tw_pad, True)
        self.conv3 = stage(th, th_pad, True)
        self.conv4 = stage(tw, tw_pad, True)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv4(self.conv3(self.conv2(self.conv1(x))))


class ResBlock(nn.Module):
    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int | None = None,
        temporal_conv: bool = False,
        spatial_aware: bool = False,
    ):
        super().__init__()
        out = out_channels or channels
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out))
        self.out_layers = nn.Sequential(GroupNorm32(out), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out, out, 3, padding=1))
        self.skip_connection = nn.Identity() if out == channels else nn.Conv2d(channels, out, 1)
        if temporal_conv:
            self.temopral_conv = TemporalConvBlock(out, spatial_aware)  # sic: upstream's (and the checkpoints') name
        self.temporal_conv = temporal_conv

    def forward(self, x: Tensor, emb: Tensor, frames: int) -> Tensor:
        h = self.in_layers(x)
        h = self.out_layers(h + self.emb_layers(emb).type(h.dtype)[..., None, None])
        h = self.skip_connection(x) + h
        if self.temporal_conv:  # after the residual sum (upstream ResBlock._forward)
            bt, c, hh, ww = h.shape
            h5 = h.view(bt // frames, frames, c, hh, ww).transpose(1, 2)
            h = self.temopral_conv(h5).transpose(1, 2).reshape(bt, c, hh, ww)
        return h


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Layers(nn.Sequential):
    """Upstream's ``TimestepEmbedSequential``: each child gets what it needs (emb, context, frame count)."""

    def forward(self, x: Tensor, emb: Tensor, context: Tensor, frames: int) -> Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb, frames)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, TemporalTransformer):
                bt, c, h, w = x.shape
                x5 = x.view(bt // frames, frames, c, h, w).transpose(1, 2)
                x = layer(x5).transpose(1, 2).reshape(bt, c, h, w)
            else:
                x = layer(x)
        return x


class UNet3D(nn.Module):
    """``forward(x (B, C_in, T, h, w), t (B,), context (B, L, D), fs (B,) or None) -> eps (B, C_out, T, h, w)``.

    ``context`` is the text embedding (L = 77), or for DynamiCrafter 77 text tokens followed by T * 16 image tokens:
    frame k then sees the text and image tokens 16k..16k+15 (upstream keys this on the literal length 77 + 16 T).
    """

    def __init__(self, cfg: UNet3DConfig):
        super().__init__()
        self.config = cfg
        mc, emb_dim = cfg.model_channels, cfg.model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if cfg.fs_condition:
            self.fps_embedding = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def heads_of(ch: int) -> tuple[int, int]:
            if cfg.num_head_channels == -1:
                return cfg.num_heads, ch // cfg.num_heads
            return ch // cfg.num_head_channels, cfg.num_head_channels

        def attention(ch: int) -> list[nn.Module]:
            heads, dim_head = heads_of(ch)
            out: list[nn.Module] = [
                SpatialTransformer(
                    ch,
                    heads,
                    dim_head,
                    cfg.transformer_depth,
                    cfg.use_linear,
                    context_dim=cfg.context_dim,
                    image_cross_attention=cfg.image_cross_attention,
                    image_scale_learnable=cfg.image_cross_attention_scale_learnable,
                )
            ]
            if cfg.temporal_attention:
                out.append(self._temporal(ch, heads, dim_head, cfg.temporal_transformer_depth, cfg.use_linear))
            return out

        def res(ch_in: int, ch_out: int | None = None) -> ResBlock:
            return ResBlock(ch_in, emb_dim, ch_out, cfg.temporal_conv, cfg.tempspatial_aware)

        self.input_blocks = nn.ModuleList([Layers(nn.Conv2d(cfg.in_channels, mc, 3, padding=1))])
        if cfg.addition_attention:
            # upstream: n_heads=8 hard-coded, d_head=num_head_channels, and no use_linear (Conv1d projections)
            self.init_attn = Layers(self._temporal(mc, 8, cfg.num_head_channels, cfg.transformer_depth, False))
        chans, ch, ds = [mc], mc, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers += attention(ch)
                self.input_blocks.append(Layers(*layers))
                chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(Layers(Downsample(ch)))
                chans.append(ch)
                ds *= 2
        self.middle_block = Layers(res(ch), *attention(ch), res(ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + chans.pop(), mc * mult)]
                ch = mc * mult
                if ds in cfg.attention_resolutions:
                    layers += attention(ch)
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(Layers(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(mc, cfg.out_channels, 3, padding=1))

    def _temporal(self, ch: int, heads: int, dim_head: int, depth: int, use_linear: bool) -> TemporalTransformer:
        cfg = self.config
        return TemporalTransformer(
            ch,
            heads,
            dim_head,
            depth,
            use_linear,
            relative_position=cfg.use_relative_position,
            temporal_length=cfg.temporal_length,
        )

    def forward(self, x: Tensor, t: Tensor, context: Tensor, fs: Tensor | None = None) -> Tensor:
        b, _, frames, h, w = x.shape
        cfg = self.config
        emb = self.time_embed(timestep_embedding(t, cfg.model_channels).type(x.dtype))
        if context.shape[1] == TEXT_TOKENS + frames * 16:  # per-frame image tokens (upstream forward, "HARD CODE")
            text = context[:, :TEXT_TOKENS].repeat_interleave(frames, dim=0)
            image = context[:, TEXT_TOKENS:].reshape(b * frames, 16, context.shape[-1])
            context = torch.cat([text, image], dim=1)
        else:
            context = context.repeat_interleave(frames, dim=0)
        emb = emb.repeat_interleave(frames, dim=0)
        if cfg.fs_condition:
            if fs is None:
                fs = torch.full((b,), cfg.default_fs, dtype=torch.long, device=x.device)
            fs_emb = self.fps_embedding(timestep_embedding(fs, cfg.model_channels).type(x.dtype))
            emb = emb + fs_emb.repeat_interleave(frames, dim=0)
        hcur = x.transpose(1, 2).reshape(b * frames, -1, h, w)  # (B*T, C, h, w)
        skips = []
        for i, block in enumerate(self.input_blocks):
            hcur = block(hcur, emb, context, frames)
            if i == 0 and cfg.addition_attention:
                hcur = self.init_attn(hcur, emb, context, frames)
            skips.append(hcur)
        hcur = self.middle_block(hcur, emb, context, frames)
        for block in self.output_blocks:
            hcur = block(torch.cat([hcur, skips.pop()], dim=1), emb, context, frames)
        y = self.out(hcur.type(x.dtype))
        return y.reshape(b, frames, -1, h, w).transpose(1, 2)
