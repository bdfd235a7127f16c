"""The frozen VAE of a latent fine-tune, from a VAE folder or hub id, or from the ``vae/`` of a pipeline folder."""

from __future__ import annotations

import os

from diffusers import AutoencoderKL

from ..core.loading import locate
from ..errors import PriorswapError


def load_vae(ref: str):
    """An ``AutoencoderKL`` from a VAE folder/hub id, or from the ``vae/`` of a pipeline folder."""
    ref = locate(ref, "vae")
    sub = "vae" if os.path.isdir(os.path.join(ref, "vae")) else None
    try:
        vae = AutoencoderKL.from_pretrained(ref, subfolder=sub) if sub else AutoencoderKL.from_pretrained(ref)
    except (OSError, ValueError) as e:
        raise PriorswapError(
            f"cannot load VAE {ref!r} ({str(e).splitlines()[0][:160]}); offline, download it and pass the folder"
        ) from None
    return vae.eval().requires_grad_(False)
