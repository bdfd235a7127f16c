"""The training side of a DiT LoRA fine-tune: EMA over the trainable parameters only, and checkpoints that hold
only what trains (the frozen base is re-read from ``pretrained`` on resume)."""

from __future__ import annotations

import copy
from typing import Callable

import torch

from ..dit.denoiser import label_embedders
from ..dit.lora import LoRASpec, add_class_rows, count_parameters, inject, lora_config


class AdapterEMA(torch.nn.Module):
    """An EMA of a network's trainable parameters, as ``AveragedModel`` keeps one (``module``, ``n_averaged``,
    ``update_parameters``), except that ``module`` shares every frozen tensor with the network: the EMA of a LoRA
    costs the LoRA's size, not a second copy of the base."""

    def __init__(self, network: torch.nn.Module, avg_fn: Callable):
        super().__init__()
        shared = {id(t): t for t in (*network.buffers(), *(p for p in network.parameters() if not p.requires_grad))}
        self.module = copy.deepcopy(network, memo=shared)
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long))
        self.avg_fn = avg_fn
        self.names = [n for n, p in network.named_parameters() if p.requires_grad]

    @torch.no_grad()
    def update_parameters(self, network: torch.nn.Module) -> None:
        live, mine = dict(network.named_parameters()), dict(self.module.named_parameters())
        src, dst = [live[n].detach() for n in self.names], [mine[n] for n in self.names]
        if int(self.n_averaged) == 0:
            torch._foreach_copy_(dst, src)
        else:
            self.avg_fn(dst, src, self.n_averaged.to(dst[0].device))
        self.n_averaged += 1


def build_lora(
    transformer: torch.nn.Module, spec: LoRASpec, k: int, base_ref: str | None, seed: int = 0
) -> torch.nn.Module:
    """The base with K new class rows and the LoRA injected (base frozen); prints trainable against total."""
    n = label_embedders(transformer)[0].num_classes
    add_class_rows(transformer, k, seed)
    with torch.random.fork_rng(devices=[]):  # peft draws the A matrices from the global RNG: same seed, same LoRA
        torch.manual_seed(seed)
        transformer = inject(transformer, lora_config(spec, n, k, base_ref))
    trainable, total = count_parameters(transformer)
    print(
        f"priorswap: LoRA r={spec.rank} alpha={spec.alpha:g} on {len(spec.targets)} module kinds + {k} class rows: "
        f"{trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)"
    )
    return transformer


def trainable_state(state: dict, transformer: torch.nn.Module) -> dict:
    """The part of a LightningModule state dict that trains: live and EMA adapter weights, and the EMA count."""
    names = {n for n, p in transformer.named_parameters() if p.requires_grad}
    keep = {f"transformer.{n}" for n in names} | {f"ema.module.{n}" for n in names} | {"ema.n_averaged"}
    return {k: v for k, v in state.items() if k in keep}


def table_size_from_state(state: dict) -> int | None:
    """K, the number of new class rows, from a LoRA checkpoint's trainable-token weights (None: not a LoRA one)."""
    key = next((k for k in state if k.startswith("transformer.") and "trainable_tokens_delta" in k), None)
    return None if key is None else int(state[key].shape[0])
