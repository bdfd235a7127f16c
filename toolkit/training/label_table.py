"""Label tables and CFG dropout for diffusers' DiT, which keeps one label embedder per block (docs/method.md trap 2)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..dit.denoiser import label_embedders


def replace_label_table(transformer: torch.nn.Module, num_classes: int, seed: int = 0) -> None:
    """Give every block a table of ``num_classes + 1`` rows for a new dataset.

    - the new null row (index ``num_classes``) copies the base's null row, so the fine-tune starts from the
      base's unconditional prediction;
    - the class rows start at the mean of the base's class rows plus N(0, 0.02^2) noise (DiT's init std),
      i.e. near the centre of the embeddings the blocks were trained on, and distinct from each other.
    Per-block label dropout is switched off: :func:`drop_labels` does it once per sample instead.
    """
    gen = torch.Generator().manual_seed(seed)
    for emb in label_embedders(transformer):
        old = emb.embedding_table.weight.data  # (K_old + 1, D)
        k_old = emb.num_classes
        new = torch.empty(num_classes + 1, old.shape[1], dtype=old.dtype)
        centre = old[:k_old].mean(dim=0)
        new[:num_classes] = centre + 0.02 * torch.randn(num_classes, old.shape[1], generator=gen).to(old.dtype)
        new[num_classes] = old[k_old]
        emb.embedding_table = torch.nn.Embedding.from_pretrained(new.to(old.device), freeze=False)
        emb.num_classes = num_classes
    transformer.register_to_config(num_embeds_ada_norm=num_classes)
    disable_block_dropout(transformer)


def disable_block_dropout(transformer: torch.nn.Module) -> None:
    """Stop diffusers' per-block random label drop in train mode (each block would draw its own mask)."""
    for emb in label_embedders(transformer):
        emb.dropout_prob = 0.0


def drop_labels(labels: Tensor, null_id: int, p: float, generator: torch.Generator | None = None) -> Tensor:
    """CFG dropout: replace each sample's label by the null id with probability p, one draw per sample."""
    if p <= 0:
        return labels
    u = torch.rand(labels.shape, generator=generator, device="cpu" if generator is not None else labels.device)
    return torch.where(u.to(labels.device) < p, torch.full_like(labels, null_id), labels)
