"""The paper's settings for each model kind (its appendix B), stated once: the commands' defaults, help texts
and error hints all read them from here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KindDefaults:
    model: str | None  # hub id of the fine-tune the paper evaluates (None: DiT fine-tunes are the user's own)
    prior: str  # hub id of the base model whose unconditional prediction the paper swaps in
    steps: int  # DDIM steps
    scale: float | None = None  # single-condition CFG scale (Eq. 6/7)
    image_scale: float | None = None  # dual CFG gI (Eq. 8/9)
    text_scale: float | None = None  # dual CFG gT
    size: int | None = None  # pixels per side, where the paper fixes it


PAPER = {
    "dit": KindDefaults(model=None, prior="facebook/DiT-XL-2-256", steps=50, scale=1.5),
    "ip2p": KindDefaults(
        model="timbrooks/instruct-pix2pix",
        prior="runwayml/stable-diffusion-v1-5",
        steps=100,
        image_scale=1.5,
        text_scale=7.5,
    ),
    "zero123": KindDefaults(
        model="kxic/zero123-xl", prior="CompVis/stable-diffusion-v1-4", steps=50, scale=5.0, size=256
    ),
    "vd": KindDefaults(
        model="shi-labs/versatile-diffusion", prior="CompVis/stable-diffusion-v1-4", steps=50, scale=2.0
    ),
}
