"""The swap as a diffusers hook on a pipeline's denoiser: the unconditional half of each CFG call answered by a prior.

Every pipeline here calls its denoiser once per step on cat([uncond, cond]) (2n rows) and combines the halves
itself (CFG, guidance rescale, learned-sigma split). :class:`SwapHook` (a ``diffusers.hooks.ModelHook`` with
``new_forward``, the mechanism PAG and skip-layer guidance use) keeps that call and only changes who answers the
first n rows:

- the free prior (a LoRA's adapter-off self): ONE forward of the same 2n rows, the first n with the adapter off
  (peft's per-sample ``adapter_names``) and the base's own null condition;
- a separate prior: the model answers the n conditional rows, the prior the n unconditional ones, at its own
  timestep with its own null condition, its prediction converted to the model's.

The null condition is whatever the prior's own pipeline feeds its denoiser for the negative prompt (its text
encoders, SDXL's zeroed empty prompt and micro-conditioning, PixArt's attention mask): :func:`null_condition` runs
that pipeline up to its first denoiser call and keeps the unconditional half of the arguments.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from diffusers.hooks import HookRegistry, ModelHook
from torch import Tensor

from ..core.guidance import in_interval, mix_prior
from ..lora import BASE, per_sample_adapters
from ..lora.mixed import active_adapter, adapter_layers
from .timeline import Timeline, convert, map_timestep

HOOK = "priorswap_swap"


def named_arguments(module: torch.nn.Module, args: tuple, kwargs: dict) -> dict[str, Any]:
    """A forward call's arguments by name (positional ones too), so halves can be cut and swapped by name."""
    bound = inspect.signature(type(module).forward).bind(module, *args, **kwargs)
    named = dict(bound.arguments)
    named.pop("self", None)
    for p in inspect.signature(type(module).forward).parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            named.update(named.pop(p.name, {}))
    return named


def sample_key(module: torch.nn.Module) -> str:
    """The name of the noisy-latent argument (``sample`` for UNets, ``hidden_states`` for transformers)."""
    return list(inspect.signature(type(module).forward).parameters)[1]


def rows(value: Any, start: int, stop: int, batch: int) -> Any:
    """Rows [start, stop) of every per-sample tensor in ``value`` (nested in dicts); shared values as they are."""
    if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == batch:
        return value[start:stop]
    if isinstance(value, dict):
        return {k: rows(v, start, stop, batch) for k, v in value.items()}
    return value


def cat(parts: list[Any], batch: int) -> Any:
    """Per-sample tensors of each part (``batch`` rows each) stacked in order; shared values from the first part."""
    first = parts[0]
    if isinstance(first, Tensor) and first.ndim > 0 and first.shape[0] == batch:
        return torch.cat(parts)
    if isinstance(first, dict):
        return {k: cat([p[k] for p in parts], batch) for k in first}
    return first


def first(output: Any) -> Tensor:
    return output[0] if isinstance(output, tuple) else output.sample


def rewrap(output: Any, tensor: Tensor) -> Any:
    return (tensor, *output[1:]) if isinstance(output, tuple) else type(output)(sample=tensor)


@dataclass
class Prior:
    """Who answers the unconditional half: ``denoiser`` (None: the model's own adapter-off self), its timeline,
    and its null condition per batch size (the denoiser's keyword arguments for n rows, noisy input excluded)."""

    denoiser: torch.nn.Module | None
    timeline: Timeline
    nulls: dict[int, dict[str, Any]] = field(default_factory=dict)


class SwapHook(ModelHook):
    """Answer the first half of a CFG call with ``prior`` (None: vanilla, only the guidance interval applies)."""

    def __init__(self, timeline: Timeline, prior: Prior | None, prior_mix: float, interval):
        super().__init__()
        self.timeline, self.prior, self.lam, self.interval = timeline, prior, float(prior_mix), interval
        self.n = 0  # prompts in the current pipeline call, set by the caller

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        named = named_arguments(module, args, kwargs)
        key, n = sample_key(module), self.n
        x, t = named[key], named["timestep"]
        if x.shape[0] != 2 * n:  # no CFG in this call (scale <= 1): nothing to swap
            return self.fn_ref.original_forward(*args, **kwargs)
        call = self.fn_ref.original_forward
        if not in_interval(self.timeline.fraction(t), self.interval):  # guidance off: uncond := cond
            out = call(**rows(named, n, 2 * n, 2 * n))
            return rewrap(out, torch.cat([first(out)] * 2))
        if self.prior is None:
            return call(**named)
        if self.prior.denoiser is None:
            return self.free_prior(module, named, n)
        return self.separate_prior(module, named, key, n)

    def free_prior(self, module: torch.nn.Module, named: dict, n: int):
        """One forward: [base null, adapter off] (+ [own null, adapter on] when mixing) + [cond, adapter on]."""
        null = {**rows(named, 0, n, 2 * n), **self.prior.nulls[n]}
        uncond, cond = rows(named, 0, n, 2 * n), rows(named, n, 2 * n, 2 * n)
        parts = [null, cond] if self.lam == 1.0 else [null, uncond, cond]
        batch = cat(parts, n)  # a single timestep tensor (SD's UNet call) stays shared
        adapter = active_adapter(module) if adapter_layers(module) else BASE
        names = [BASE] * n + [adapter] * (len(parts) - 1) * n
        with per_sample_adapters(module, names):
            out = self.fn_ref.original_forward(**batch)
        pred = first(out)
        u = pred[:n] if self.lam == 1.0 else mix_prior(pred[:n], pred[n : 2 * n], self.lam)
        return rewrap(out, torch.cat([u, pred[-n:]]))

    def separate_prior(self, module: torch.nn.Module, named: dict, key: str, n: int):
        """The model on the conditional rows (all 2n when mixing), the prior on the unconditional ones."""
        call = self.fn_ref.original_forward
        out = call(**(named if self.lam != 1.0 else rows(named, n, 2 * n, 2 * n)))
        pred = first(out)
        cond = pred[-n:]
        x, t = named[key][:n], named["timestep"]
        t = (t.reshape(1) if t.ndim == 0 else t[:n]).expand(n)
        prior = self.prior
        t_prior = map_timestep(self.timeline, prior.timeline, t)
        param = next(prior.denoiser.parameters())
        p_in = x.to(param.device, param.dtype)
        p_out = first(prior.denoiser(**{sample_key(prior.denoiser): p_in, "timestep": t_prior, **prior.nulls[n]}))
        c = x.shape[1]  # latent channels: learned-sigma channels beyond them are the model's own (dropped later)
        u = convert(p_out[:, :c].to(x.device, torch.float32), x.float(), self.timeline, t, prior.timeline, t_prior)
        u = torch.cat([u.to(cond.dtype), cond[:, c:]], dim=1)  # pad with the cond's: CFG leaves them the cond's
        if self.lam != 1.0:
            u = mix_prior(u, pred[:n], self.lam)
        return rewrap(out, torch.cat([u, cond]))


class _Captured(Exception):
    def __init__(self, named: dict):
        super().__init__("captured")
        self.named = named


class _Capture(ModelHook):
    def new_forward(self, module, *args, **kwargs):
        raise _Captured(named_arguments(module, args, kwargs))


@contextlib.contextmanager
def hooked(module: torch.nn.Module, hook: ModelHook, name: str = HOOK) -> Iterator[ModelHook]:
    """``hook`` on ``module`` for the length of the block only."""
    registry = HookRegistry.check_if_exists_or_initialize(module)
    registry.register_hook(hook, name)
    try:
        yield hook
    finally:
        registry.remove_hook(name, recurse=False)


def null_condition(pipe, denoiser: str, n: int, call: dict, adapters_off: bool) -> dict[str, Any]:
    """The denoiser's keyword arguments for the negative prompt of n rows, as ``pipe`` itself builds them.

    ``call``: the pipeline arguments that shape the condition (negative prompt, height, width, ...).
    ``adapters_off``: with the LoRA off (the base's own null: text encoders without their LoRA).
    """
    module = getattr(pipe, denoiser)
    args = {**call, "prompt": [""] * n, "guidance_scale": 2.0, "num_inference_steps": 1, "output_type": "latent"}
    args["generator"] = torch.Generator("cpu").manual_seed(0)
    # only the text encoders' adapters shape the null; a pipeline without diffusers' LoRA loader (PixArt: a peft
    # folder on the transformer, never on T5) has none to switch off
    adapters_off = adapters_off and hasattr(pipe, "disable_lora")
    if adapters_off:
        pipe.disable_lora()
    pipe.set_progress_bar_config(disable=True)  # one aborted step: no bar
    try:
        with hooked(module, _Capture(), "priorswap_capture"):
            pipe(**args)
    except _Captured as c:
        named = c.named
    else:
        raise RuntimeError(f"{type(pipe).__name__} never called its {denoiser} with classifier-free guidance")
    finally:
        if adapters_off:
            pipe.enable_lora()
    named.pop(sample_key(module))
    named.pop("timestep")
    return {k: rows(v, 0, n, 2 * n) for k, v in named.items()}
