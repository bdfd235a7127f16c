"""DiT LoRA fine-tunes whose adapter-off model is exactly the base.

In diffusers' DiT, class information enters only through each block's label table and then adaLN
(``norm1.linear``). The design keeps "adapter off" bit for bit the base:
- the base is frozen;
- the fine-tune's K classes are K new rows appended to every block's table *after* the base's null row
  (ids N+1 .. N+K), so the null id stays N and ``num_classes`` stays N;
- only those rows train, as peft trainable tokens (``modules_to_save`` copies would survive
  ``disable_adapters()`` and silently break the prior);
- LoRA on attention, MLP and adaLN; labels are dropped once per sample to the base's null id N.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from peft import LoraConfig, inject_adapter_in_model

from ..core.denoisers import LatentSpace
from ..errors import PriorswapError
from .denoiser import DiTDenoiser, label_embedders, table

DIT_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "ff.net.0.proj", "ff.net.2", "norm1.linear")


@dataclass
class LoRASpec:
    """A LoRA of the base: rank r, scale alpha / r, on the modules whose names end with ``targets``."""

    rank: int = 16
    alpha: float = 16.0
    targets: list[str] = field(default_factory=lambda: list(DIT_TARGETS))
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise PriorswapError(f"lora.rank must be at least 1, got {self.rank}")
        if not self.targets:
            raise PriorswapError("lora.targets is empty; name the modules to adapt (e.g. attn1.to_q)")
        if not 0.0 <= self.dropout < 1.0:
            raise PriorswapError(f"lora.dropout must lie in [0, 1), got {self.dropout}")


def add_class_rows(transformer: torch.nn.Module, k: int, seed: int = 0) -> None:
    """Append ``k`` rows after every block's null row (ids N+1 .. N+k), starting near the centre of the base's class
    rows (their mean plus N(0, 0.02^2), DiT's init std). ``num_classes`` and the null id N do not change."""
    gen = torch.Generator().manual_seed(seed)
    for emb in label_embedders(transformer):
        old = emb.embedding_table.weight.data  # (N + 1, D)
        n = emb.num_classes
        if old.shape[0] != n + 1:
            raise PriorswapError(f"a label table has {old.shape[0]} rows for {n} classes; expected the base's N + 1")
        rows = old[:n].mean(dim=0) + 0.02 * torch.randn(k, old.shape[1], generator=gen).to(old)  # (k, D)
        emb.embedding_table = torch.nn.Embedding.from_pretrained(torch.cat([old, rows]), freeze=True)
        emb.dropout_prob = 0.0  # labels are dropped once per sample instead (training.label_table.drop_labels)


def lora_config(spec: LoRASpec, base_classes: int, k: int, base_ref: str | None = None):
    """The peft ``LoraConfig`` of a DiT LoRA with ``k`` new class rows after a base of ``base_classes``."""
    return LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=list(spec.targets),
        trainable_token_indices={"embedding_table": list(range(base_classes + 1, base_classes + 1 + k))},
        base_model_name_or_path=base_ref,
    )


def inject(transformer: torch.nn.Module, config) -> torch.nn.Module:
    """Add the adapter in place (DiT has no PeftAdapterMixin); the base is left frozen, the adapter trainable."""
    transformer.requires_grad_(False)
    try:
        return inject_adapter_in_model(config, transformer)
    except ValueError as e:
        raise PriorswapError(f"cannot add the LoRA: {str(e).splitlines()[0][:200]}") from None


def new_classes(config) -> tuple[int, int]:
    """(first new id, K) from a DiT LoRA config's trainable token indices; (0, 0) when it adds no classes."""
    indices = getattr(config, "trainable_token_indices", None) or {}
    ids = sorted(indices.get("embedding_table", [])) if isinstance(indices, dict) else sorted(indices)
    if not ids:
        return 0, 0
    if ids != list(range(ids[0], ids[0] + len(ids))):
        raise PriorswapError(f"the LoRA's new class rows {ids[:4]}... are not consecutive ids")
    return ids[0], len(ids)


def count_parameters(module: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(module.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


class LoRADiTDenoiser(DiTDenoiser):
    """A DiT LoRA fine-tune: class c is table row ``first_id + c`` (N + 1 + c), the null is the base's row N.

    With the adapter off (``priorswap.toolkit.lora.BasePrior``) the same network is the base.
    """

    def __init__(self, transformer: torch.nn.Module, space: LatentSpace, num_classes: int, name: str = "lora"):
        emb = label_embedders(transformer)[0]
        extra = table(emb).num_embeddings - int(emb.num_classes) - 1  # rows after the null row: 0 or K
        if extra and extra != num_classes:
            raise PriorswapError(f"{name}: label table has {extra} new rows for {num_classes} classes")
        super().__init__(transformer, space, name, new_rows=extra)
