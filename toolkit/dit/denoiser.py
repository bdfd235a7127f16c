"""DiT (diffusers ``DiTTransformer2DModel``) as a class-conditional denoiser.

Quirks owned here (docs/method.md traps 1-3):
- the null class id is read from the model's label table (``num_classes``), never hard-coded as 1000;
- diffusers keeps one label embedder per block and drops labels in train mode, so the model is put in eval;
- learned sigma: the network outputs 2 * C channels and only the first C are eps.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from ..core.denoisers import LatentSpace, ModelDenoiser
from ..errors import PriorswapError


def label_embedders(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """Every block's ``LabelEmbedding`` (diffusers' DiT has one per block)."""
    found = [m for m in transformer.modules() if type(m).__name__ == "LabelEmbedding"]
    if not found:
        raise PriorswapError(
            f"{type(transformer).__name__} has no class-label embedding; expected a class-conditional DiT"
        )
    return found


def table(emb: torch.nn.Module) -> torch.nn.Embedding:
    """A block's label table itself (inside peft's trainable-token wrapper once a LoRA is injected)."""
    return next(m for m in emb.modules() if isinstance(m, torch.nn.Embedding))


class DiTDenoiser(ModelDenoiser):
    """Class-conditional DiT. ``cond`` is a (B,) long tensor of labels; ``None`` is the null class.

    ``new_rows``: classes whose rows follow the null row (a LoRA fine-tune's, ids N+1 .. N+K, see
    ``priorswap.toolkit.dit.lora``); then class c is row N+1+c and ``num_classes`` is K. The null id stays N.
    """

    def __init__(self, transformer: torch.nn.Module, space: LatentSpace, name: str = "dit", new_rows: int = 0):
        cfg = transformer.config
        super().__init__(space, name)
        self._check_channels(int(cfg.in_channels))
        self.transformer = transformer.eval().requires_grad_(False)
        emb = label_embedders(transformer)[0]
        self.base_classes: int = int(emb.num_classes)
        rows = table(emb).num_embeddings
        if rows != self.base_classes + 1 + new_rows:
            raise PriorswapError(
                f"{name}: label table has {rows} rows for {self.base_classes} classes; "
                "CFG needs the extra null row (num_classes + 1)"
            )
        self.first_id: int = self.base_classes + 1 if new_rows else 0  # table row of class 0
        self.num_classes: int = new_rows or self.base_classes
        self.null_id: int = self.base_classes  # the extra row (docs/method.md trap 1)
        self.sample_size: int = int(cfg.sample_size)
        self.patch_size: int = int(cfg.patch_size)

    def modules(self) -> list[torch.nn.Module]:
        return [self.transformer]

    def size_problem(self, height: int, width: int) -> str | None:
        if (height, width) != (self.sample_size, self.sample_size):
            return f"{self.name} has fixed position embeddings for {self.sample_size}x{self.sample_size} inputs, not {height}x{width}"
        return None

    def forward_batch(self, x: Tensor, t: Tensor, conds: Sequence[Any]) -> Tensor:
        b = x.shape[0] // len(conds)
        labels = torch.cat(
            [
                torch.full((b,), self.null_id, dtype=torch.long)
                if c is None
                else torch.as_tensor(c).reshape(-1) + self.first_id
                for c in conds
            ]
        ).to(x.device)  # (n*B,) table rows
        out = self.transformer(x.to(self.dtype), timestep=t, class_labels=labels).sample  # (n*B, C or 2C, H, W)
        return out
