"""Samplers as plain functions over denoiser callables, driving a diffusers scheduler.

- :func:`cfg_eps` / :func:`dual_cfg_eps` turn denoisers + guidance settings into one ``(x_t, t) -> eps``;
  vanilla and swapped differ only in who supplies the unconditional term (paper Eq. 6 vs Eq. 7).
- :func:`denoise` runs one batch through any diffusers scheduler.
- :func:`generate` chunks N samples into batches with *paired randomness*: sample i always starts from
  ``randn((1, C, H, W), generator=Generator("cpu").manual_seed(seed + i))`` and draws any later noise from
  its own generator, so it is the same for any batch size, device count or guidance mode.
- :func:`sample` is the one entry point every caller uses: model, conditions, guidance settings, optional prior,
  seeds, shape, steps, scheduler and decoder in; images out. It picks single (Eq. 6/7) or dual (Eq. 8/9) CFG
  from the guidance type.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import diffusers
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import PriorswapError
from .denoisers import Denoiser
from .guidance import cfg, dual_cfg, in_interval, mix_prior, rescale
from .scheduler_kinds import SCHEDULER_KINDS, SCHEDULERS

EpsFn = Callable[[Tensor, Tensor], Tensor]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # checks.DTYPE_NAMES -> torch


@dataclass(frozen=True)
class Guidance:
    """Single-condition CFG settings. ``prior_mix`` (lambda) only matters when a prior is given."""

    scale: float = 1.5
    prior_mix: float = 1.0  # uncond = lam * eps_prior + (1 - lam) * eps_ft; 1 is the paper's swap
    guided_channels: int | None = None  # 3 reproduces the original DiT code; None guides all (diffusers)
    interval: tuple[float, float] | None = None  # guide only for t/T in [lo, hi]
    rescale_phi: float = 0.0


@dataclass(frozen=True)
class DualGuidance:
    """Dual-condition CFG settings (Eq. 8/9): image scale gI and text scale gT."""

    image_scale: float = 1.5
    text_scale: float = 7.5
    prior_mix: float = 1.0
    interval: tuple[float, float] | None = None
    rescale_phi: float = 0.0


def cfg_eps(
    model: Denoiser, cond: Any, guidance: Guidance, prior: Denoiser | None = None, num_train_timesteps: int = 1000
) -> EpsFn:
    """Guided eps: Eq. 6 when ``prior`` is None (one batched pass), Eq. 7 when it is given (two models).

    A scale of exactly 1 (or a step outside the guidance interval) returns the conditional eps alone.
    """
    lam = guidance.prior_mix

    def eps(x: Tensor, t: Tensor) -> Tensor:
        if guidance.scale == 1.0 or not in_interval(float(t.max()) / num_train_timesteps, guidance.interval):
            return model(x, t, cond)
        if prior is None:
            c, u = model.predict(x, t, [cond, None])  # (B, C, H, W) each, one forward pass
        elif lam == 1.0:
            c, u = model(x, t, cond), prior(x, t, None)
        else:
            c, u_own = model.predict(x, t, [cond, None])
            u = mix_prior(prior(x, t, None), u_own, lam)
        return rescale(cfg(c, u, guidance.scale, guidance.guided_channels), c, guidance.rescale_phi)

    return eps


def dual_cfg_eps(
    model: Denoiser,
    full_cond: Any,
    image_cond: Any,
    guidance: DualGuidance,
    prior: Denoiser | None = None,
    num_train_timesteps: int = 1000,
) -> EpsFn:
    """Dual-condition guided eps (Eq. 9). Only u = eps(null, null) may come from ``prior``."""
    lam = guidance.prior_mix

    def eps(x: Tensor, t: Tensor) -> Tensor:
        if not in_interval(float(t.max()) / num_train_timesteps, guidance.interval):
            return model(x, t, full_cond)
        if prior is None or lam != 1.0:
            full, img, u = model.predict(x, t, [full_cond, image_cond, None])
            if prior is not None:
                u = mix_prior(prior(x, t, None), u, lam)
        else:
            full, img = model.predict(x, t, [full_cond, image_cond])
            u = prior(x, t, None)
        out = dual_cfg(full, img, u, guidance.image_scale, guidance.text_scale)
        return rescale(out, full, guidance.rescale_phi)

    return eps


def make_scheduler(name: str, model_scheduler_config: dict):
    """A fresh diffusers scheduler of kind ``name`` (:data:`SCHEDULER_KINDS`: its class and settings) on the model's
    own training schedule, predicting eps (what every denoiser returns)."""
    if name not in SCHEDULER_KINDS:
        raise PriorswapError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    cls_name, overrides = SCHEDULER_KINDS[name]
    cls = getattr(diffusers, cls_name)
    config = {k: v for k, v in dict(model_scheduler_config).items() if not k.startswith("_")}
    return cls.from_config({**config, **overrides, "prediction_type": "epsilon"})


def initial_noise(
    seeds: Sequence[int], shape: tuple[int, int, int], dtype: torch.dtype = torch.float32
) -> tuple[Tensor, list[torch.Generator]]:
    """Per-sample noise (B, C, H, W) on the CPU, and each sample's generator for any later noise."""
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    noise = torch.cat([torch.randn((1, *shape), generator=g, dtype=dtype) for g in gens])
    return noise, gens


def denoise(
    eps_fn: EpsFn,
    scheduler,
    noise: Tensor,
    steps: int,
    generators: list[torch.Generator] | None = None,
    callback: Callable[[int, Tensor, Tensor], None] | None = None,
) -> Tensor:
    """Run one batch from ``noise`` to x_0 with ``scheduler``; ``callback(i, t, x)`` after each step."""
    if steps < 1:
        raise PriorswapError(f"the number of steps must be at least 1, got {steps}")
    scheduler.set_timesteps(steps, device=noise.device)
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    x = noise * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        x_in = scheduler.scale_model_input(x, t)
        with torch.no_grad():
            e = eps_fn(x_in, t)
        kwargs = {"generator": generators} if takes_generator and generators is not None else {}
        x = scheduler.step(e, t, x, **kwargs).prev_sample
        if callback is not None:
            callback(i, t, x)
    return x


def generate(
    make_eps: Callable[[slice], EpsFn],
    scheduler,
    seeds: Sequence[int],
    shape: tuple[int, int, int],
    steps: int,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    decode: Callable[[Tensor], Tensor] | None = None,
    progress: bool = True,
    desc: str = "sampling",
) -> Tensor:
    """Sample ``len(seeds)`` images in batches; ``make_eps(slice)`` builds the guided eps for a batch.

    Returns (N, C, H, W) float32 on the CPU: images in [0, 1] (decoded through ``decode`` or, in pixel
    space, mapped from [-1, 1]).
    """
    if batch_size < 1:
        raise PriorswapError(f"batch size must be at least 1, got {batch_size}")
    out = []
    bar = tqdm(total=len(seeds) * steps, desc=desc, unit="img-step", disable=not progress, leave=False)
    for start in range(0, len(seeds), batch_size):
        part = slice(start, min(start + batch_size, len(seeds)))
        noise, gens = initial_noise(seeds[part], shape)
        sched = type(scheduler).from_config(scheduler.config)  # fresh multistep state per batch
        n = part.stop - part.start
        x = denoise(make_eps(part), sched, noise.to(device), steps, gens, callback=lambda *_, n=n: bar.update(n))
        with torch.no_grad():
            img = decode(x) if decode is not None else (x / 2 + 0.5).clamp(0, 1)
        out.append(img.float().cpu())
    bar.close()
    return torch.cat(out)


def batch_conds(conds: Any, part: slice, n: int) -> Any:
    """The conditions of samples ``part`` of ``n``.

    ``conds`` is None (unconditional), a callable ``conds(part)``, or batched values: a tensor, a dataclass of
    tensors (IP2P's, Zero-1-to-3's conditions) or a tuple of these, each with n rows or 1 row (shared by every
    sample, as an encoded input image or prompt is); None fields stay None.
    """
    if conds is None:
        return None
    if callable(conds) and not torch.is_tensor(conds):
        return conds(part)
    if isinstance(conds, tuple):
        return tuple(batch_conds(c, part, n) for c in conds)
    if dataclasses.is_dataclass(conds):
        fields = {f.name: batch_conds(getattr(conds, f.name), part, n) for f in dataclasses.fields(conds)}
        return dataclasses.replace(conds, **fields)
    if torch.is_tensor(conds):
        rows = conds.shape[0] if conds.ndim else 1
        if rows == 1 and n != 1 or conds.ndim == 0:
            return conds
        if rows != n:
            raise PriorswapError(
                f"a condition has {rows} rows for {n} samples; give one row per sample, or one shared row"
            )
        return conds[part]
    return conds  # anything else (e.g. a test's string condition) is shared by every sample


def guided_eps(
    model: Denoiser, cond: Any, guidance: Guidance | DualGuidance, prior: Denoiser | None, t_max: int
) -> EpsFn:
    """The guided eps of one batch: Eq. 6/7 for :class:`Guidance`, Eq. 8/9 for :class:`DualGuidance` (then ``cond``
    is the pair (full condition, image-only condition)); ``cond=None`` is the model's own unconditional eps.
    A prior with ``fuse(model, prior_mix)`` (``priorswap.toolkit.lora.BasePrior``) lives inside the model's own
    weights: it returns one denoiser whose null is the prior's, and vanilla-shaped guidance then gives Eq. 7/9."""
    if cond is None:
        return lambda x, t: model(x, t, None)
    fuse = getattr(prior, "fuse", None)
    if fuse is not None:  # a prior inside the model's weights (a LoRA's base): both terms from one forward
        model, prior = fuse(model, guidance.prior_mix), None
    if isinstance(guidance, DualGuidance):
        if not (isinstance(cond, tuple) and len(cond) == 2):
            raise PriorswapError("dual-condition guidance needs the pair (full condition, image-only condition)")
        full, image_only = cond
        return dual_cfg_eps(model, full, image_only, guidance, prior, t_max)
    return cfg_eps(model, cond, guidance, prior, t_max)


def sample(
    model: Denoiser,
    conds: Any,
    guidance: Guidance | DualGuidance,
    *,
    prior: Denoiser | None = None,
    seeds: Sequence[int],
    shape: tuple[int, int, int],
    steps: int,
    scheduler: Any = "ddim",
    scheduler_config: dict | None = None,
    decode: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    progress: bool = False,
    desc: str = "sampling",
) -> Tensor:
    """Images (len(seeds), C, H, W) in [0, 1]: vanilla CFG (Eq. 6/8) without ``prior``, swapped (Eq. 7/9) with it.

    - ``conds``: the samples' conditions (see :func:`batch_conds`); for :class:`DualGuidance` the pair
      (full condition, image-only condition). ``None`` samples ``model`` unconditionally (its own null, no
      guidance); to sample a prior unconditionally pass it as ``model``.
    - ``prior``: already paired with ``model`` (``priorswap.toolkit.core.pairing.pair``).
    - ``scheduler``: a name from :data:`SCHEDULERS` (built on ``scheduler_config``, the model's training
      schedule) or a diffusers scheduler, copied afresh for each batch.
    - sample i starts from ``seeds[i]`` whatever the batch size, so vanilla and swapped runs pair up.
    """
    if conds is None and prior is not None:
        raise PriorswapError("unconditional sampling takes no prior: pass the prior itself as the model")
    if isinstance(scheduler, str):
        if scheduler_config is None:
            raise PriorswapError(f"scheduler {scheduler!r} needs the model's scheduler_config (its training schedule)")
        scheduler = make_scheduler(scheduler, scheduler_config)
    t_max = int(scheduler.config.num_train_timesteps)
    device = device if device is not None else getattr(model, "device", "cpu")
    n = len(seeds)

    def make_eps(part: slice) -> EpsFn:
        return guided_eps(model, batch_conds(conds, part, n), guidance, prior, t_max)

    return generate(make_eps, scheduler, seeds, shape, steps, batch_size, device, decode, progress, desc)


def vae_decoder(vae: torch.nn.Module) -> Callable[[Tensor], Tensor]:
    """Latents -> images in [0, 1] through ``vae`` (latents are divided by its scaling factor first)."""
    scale = float(vae.config.scaling_factor)

    def decode(latents: Tensor) -> Tensor:
        p = next(vae.parameters())
        img = vae.decode(latents.to(device=p.device, dtype=p.dtype) / scale).sample
        return (img.float() / 2 + 0.5).clamp(0, 1)

    return decode
