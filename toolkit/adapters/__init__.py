"""Adapters: each wraps one model family as a :class:`priorswap.toolkit.denoisers.Denoiser`."""

from .dit import DiTDenoiser
from .text_prior import PixArtPrior, UNetPrior

__all__ = ["DiTDenoiser", "UNetPrior", "PixArtPrior"]
