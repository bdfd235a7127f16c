"""DiT model sizes as one-line factories (as in DiT's ``DiT_models``), built as diffusers models.

``build_dit("S/2", ...)`` gives a randomly initialised ``DiTTransformer2DModel``; pretrained weights come
through :mod:`priorswap.toolkit.core.loading` instead. Sizes follow Peebles & Xie, Table 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import DiTTransformer2DModel

from ..errors import PriorswapError


@dataclass(frozen=True)
class DiTSize:
    layers: int
    hidden: int
    heads: int


DIT_SIZES: dict[str, DiTSize] = {
    "tiny": DiTSize(layers=2, hidden=64, heads=2),
    "S": DiTSize(layers=12, hidden=384, heads=6),
    "B": DiTSize(layers=12, hidden=768, heads=12),
    "L": DiTSize(layers=24, hidden=1024, heads=16),
    "XL": DiTSize(layers=28, hidden=1152, heads=16),
}


def parse_size(name: str) -> tuple[DiTSize, int | None]:
    """'S/2' -> (size, patch 2); 'tiny' -> (size, None)."""
    base, _, patch = name.partition("/")
    if base not in DIT_SIZES or (patch and not patch.isdigit()):
        raise PriorswapError(f"unknown DiT size {name!r}; choose one of tiny, S/2, B/2, L/2, XL/2 (any patch size)")
    return DIT_SIZES[base], int(patch) if patch else None


def build_dit(
    size: str = "XL/2",
    num_classes: int = 1000,
    in_channels: int = 4,
    sample_size: int = 32,
    patch_size: int | None = None,
    learned_sigma: bool = True,
    hidden: int | None = None,
    layers: int | None = None,
    heads: int | None = None,
):
    """A random-init class-conditional ``DiTTransformer2DModel`` (label table has a null row at ``num_classes``)."""
    spec, patch = parse_size(size)
    hidden, layers, heads = hidden or spec.hidden, layers or spec.layers, heads or spec.heads
    if hidden % heads:
        raise PriorswapError(f"hidden size {hidden} is not divisible by {heads} heads")
    return DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=hidden // heads,
        in_channels=in_channels,
        out_channels=2 * in_channels if learned_sigma else in_channels,
        num_layers=layers,
        sample_size=sample_size,
        patch_size=patch_size or patch or 2,
        num_embeds_ada_norm=num_classes,
    )


def dit_scheduler_config() -> dict:
    """DiT's training schedule: 1000 linear betas from 1e-4 to 0.02 (docs/method.md trap 4)."""
    return {
        "num_train_timesteps": 1000,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "prediction_type": "epsilon",
        "clip_sample": False,
    }
