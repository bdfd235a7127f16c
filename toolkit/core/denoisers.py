"""The one denoiser protocol every model is wrapped in, and the base class adapters share.

A denoiser is a callable ``(x_t, t, cond) -> eps`` where ``t`` is a timestep of the *sampler's*
schedule and ``cond=None`` means the model's own null condition. Each family's denoisers (``priorswap.toolkit.dit``,
``unet``, ``video``) own their model's quirks: null id or null embedding, learned sigma, prediction type, timestep mapping.
Nothing downstream (guidance, samplers, callbacks) knows which model it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from ..errors import PriorswapError
from .schedules import alpha_bar_at, to_eps


@runtime_checkable
class Denoiser(Protocol):
    """``(x_t, t, cond) -> eps``; ``predict`` evaluates several conditions at once (batched when it can)."""

    def __call__(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor: ...

    def predict(self, x_t: Tensor, t: Tensor, conds: Sequence[Any]) -> list[Tensor]: ...


@dataclass(frozen=True, eq=False)
class LatentSpace:
    """What a model denoises, as one frozen value: its training schedule, what its network predicts, and the
    space x_t lives in (channels, and the VAE's scaling factor and name; ``vae_scaling_factor=None`` is pixel
    space). Two models can share an unconditional term only if their spaces match (see ``pairing``)."""

    alphas_cumprod: Tensor  # (T,) alpha_bar of the model's own training schedule, float64 on the CPU
    prediction_type: str  # "epsilon", "v_prediction" or "sample"
    channels: int
    vae_scaling_factor: float | None = None
    vae_name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "alphas_cumprod", torch.as_tensor(self.alphas_cumprod).detach().to(torch.float64).cpu()
        )

    def describe(self) -> str:
        """The space in words, for pairing errors."""
        if self.vae_scaling_factor is None:
            return f"pixel space ({self.channels} channels)"
        return f"{self.vae_name or 'its VAE'} latents ({self.channels} channels, scaling {self.vae_scaling_factor:g})"


class ModelDenoiser:
    """Shared machinery for wrapping a network as a :class:`Denoiser`.

    Subclasses implement :meth:`forward_batch` (the raw network call on a batch that stacks every
    condition). This class then:
      1. splits off learned-sigma channels (DiT, PixArt: out_channels = 2 * C);
      2. converts v / x0 predictions to eps with the model's own alpha_bar(t) (docs/method.md traps 4-5).
    ``t`` is a timestep of the model's own schedule; a prior sampled on another model's schedule is wrapped by
    ``priorswap.toolkit.core.pairing.pair``, which maps the sampler's t to the nearest alpha_bar (paper Sec. 4.2).

    ``name`` is how errors refer to the model: its full folder path or hub id.
    """

    def __init__(self, space: LatentSpace, name: str = "model"):
        self.space, self.name = space, name

    @property
    def alphas_cumprod(self) -> Tensor:
        return self.space.alphas_cumprod

    @property
    def prediction_type(self) -> str:
        return self.space.prediction_type

    @property
    def latent_channels(self) -> int:
        return self.space.channels

    @property
    def vae_scaling_factor(self) -> float | None:
        return self.space.vae_scaling_factor

    def _check_channels(self, network_channels: int) -> None:
        """A one-line error when the network's own channel count disagrees with the space it was given."""
        if network_channels != self.space.channels:
            raise PriorswapError(
                f"{self.name}: the network predicts {network_channels} channels but its latent space has {self.space.channels}"
            )

    # -- to override ---------------------------------------------------------------------------
    def forward_batch(self, x: Tensor, t: Tensor, conds: Sequence[Any]) -> Tensor:
        """Raw network output for ``x`` = cat of len(conds) copies of x_t, ``t`` of shape (len(conds) * B,)."""
        raise NotImplementedError

    def size_problem(self, height: int, width: int) -> str | None:
        """Why this model cannot denoise a (height, width) latent, or None if it can."""
        return None

    def modules(self) -> list[torch.nn.Module]:
        """The networks this denoiser runs (for .to(), offload and eval())."""
        return []

    # -- protocol ------------------------------------------------------------------------------
    def predict(self, x_t: Tensor, t: Tensor, conds: Sequence[Any]) -> list[Tensor]:
        n, b = len(conds), x_t.shape[0]
        t = torch.as_tensor(t, device=x_t.device)
        t = t.reshape(1).expand(b) if t.ndim == 0 else t
        x_in = x_t.repeat(n, *([1] * (x_t.ndim - 1)))  # (n*B, C, H, W)
        out = self.forward_batch(x_in, t.repeat(n), conds)
        out = out[:, : self.latent_channels].to(x_t.dtype)  # drop learned-sigma channels
        a_model = alpha_bar_at(self.alphas_cumprod, t.cpu()).repeat(n)
        eps = to_eps(out, x_in, a_model, self.prediction_type)
        return list(eps.chunk(n, dim=0))

    def __call__(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        return self.predict(x_t, t, [cond])[0]

    # -- placement -----------------------------------------------------------------------------
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "ModelDenoiser":
        kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        for m in self.modules():
            m.to(**kwargs)
        return self

    @property
    def device(self) -> torch.device:
        mods = self.modules()
        return next(mods[0].parameters()).device if mods else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        mods = self.modules()
        return next(mods[0].parameters()).dtype if mods else torch.float32


def same_table(a: Tensor, b: Tensor) -> bool:
    """Whether two alpha_bar tables are the same schedule."""
    return a.shape == b.shape and bool(torch.allclose(a.to(torch.float64), b.to(torch.float64), rtol=0, atol=1e-7))
