"""Per-sample adapters in one forward: half a batch with the LoRA on, half with it off (the base).

peft's LoRA layers and its auxiliary wrappers (trainable tokens) accept ``adapter_names``, one name per sample,
``"__base__"`` meaning adapter off. diffusers' model forwards do not pass that keyword on, so
:func:`per_sample_adapters` sets it with a forward pre-hook on each such layer for the length of one call.
peft refuses to mix DoRA or merged adapters per sample; :func:`mixing_problem` says so in one line before
any sampling starts.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from peft.tuners.lora import LoraLayer
from peft.utils.other import AuxiliaryTrainingWrapper

from ..errors import PriorswapError

BASE = "__base__"  # peft's name for "adapter off" in a mixed batch


def _layer_types() -> tuple[type, ...]:
    return LoraLayer, AuxiliaryTrainingWrapper


def adapter_layers(network: torch.nn.Module) -> list[torch.nn.Module]:
    """Every peft layer of ``network`` that takes ``adapter_names`` (LoRA layers, trainable-token wrappers)."""
    types = _layer_types()
    return [m for m in network.modules() if isinstance(m, types)]


def active_adapter(network: torch.nn.Module) -> str:
    """The one active adapter's name, or a one-line error (none, or several at once)."""
    names = {a for m in network.modules() if isinstance(m, LoraLayer) for a in m.active_adapters}
    if len(names) != 1:
        found = ", ".join(sorted(names)) or "none"
        raise PriorswapError(f"the free prior needs exactly one active LoRA adapter; found {found}")
    return names.pop()


def mixing_problem(network: torch.nn.Module) -> str | None:
    """Why ``network`` cannot run adapter-on and adapter-off samples in one batch, or None if it can."""
    loras = [m for m in network.modules() if isinstance(m, LoraLayer)]
    if not loras:
        return "it has no LoRA adapter (the base is not inside it)"
    if any(m.merged for m in loras):
        return "its LoRA is merged into the weights, so the base cannot be switched back on per sample"
    if any(any(m.use_dora.values()) for m in loras):
        return "it is a DoRA adapter, which peft cannot mix per sample"
    if network.training:
        return "it is in train mode (peft mixes adapters per sample only at inference)"
    return None


def check_mixable(network: torch.nn.Module, name: str) -> None:
    problem = mixing_problem(network)
    if problem:
        raise PriorswapError(f"{name} cannot give a free prior: {problem}; pass a separate base model as --prior")


@contextlib.contextmanager
def per_sample_adapters(network: torch.nn.Module, names: Sequence[str]) -> Iterator[None]:
    """Within the block, every forward of ``network`` runs sample i with adapter ``names[i]`` (``BASE``: off)."""
    names = list(names)

    def hook(module, args, kwargs):
        return args, {**kwargs, "adapter_names": names}

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in adapter_layers(network)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
