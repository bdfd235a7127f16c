"""The two ways a fine-tune holds its classes, one small strategy each, so that ``DiTFineTune`` never branches on it.

- :class:`FullTable`: the model's own label table of K + 1 rows (null row last, index K); every weight trains and
  the EMA is a full copy.
- :class:`LoRARows`: K new rows after a pretrained base's null row, trained with a LoRA while the base stays frozen
  (``dit/lora.py``); the EMA and the checkpoints hold only what trains, and the base is re-read on resume.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.optim.swa_utils import AveragedModel

from ..core.denoisers import LatentSpace
from ..dit.denoiser import DiTDenoiser
from ..dit.lora import LoRADiTDenoiser, LoRASpec
from ..dit.lora_files import export_dit_lora, fingerprint
from .export import export_pipeline
from .label_table import replace_label_table
from .lora import AdapterEMA, build_lora, table_size_from_state, trainable_state

TABLE_SUFFIX = "class_embedder.embedding_table.weight"


class FullTable:
    """A label table of its own: the fine-tune's K classes and its own null row K."""

    def __init__(self, pretrained: str | None, seed: int):
        self.pretrained, self.seed = pretrained, seed

    def build(self, transformer: torch.nn.Module, k: int) -> torch.nn.Module:
        """A new table for K classes, unless a from-scratch model already has exactly that one."""
        if self.pretrained or transformer.config.num_embeds_ada_norm != k:
            replace_label_table(transformer, k, seed=self.seed)
        return transformer

    def table_size(self, state: dict) -> int | None:
        """K from a checkpoint's label table (None: the state holds none)."""
        key = next((k for k in state if k.startswith("transformer.") and k.endswith(TABLE_SUFFIX)), None)
        return None if key is None else int(state[key].shape[0]) - 1

    def null_id(self, num_classes: int) -> int:
        return int(num_classes)

    def class_ids(self, labels: torch.Tensor) -> torch.Tensor:
        return labels

    def ema(self, transformer: torch.nn.Module, avg_fn: Callable) -> torch.nn.Module:
        return AveragedModel(transformer, multi_avg_fn=avg_fn, use_buffers=True).requires_grad_(False)

    def checkpoint_state(self, state: dict, transformer: torch.nn.Module) -> dict:
        return state

    def denoiser(self, net: torch.nn.Module, space: LatentSpace, num_classes: int, ema: bool) -> DiTDenoiser:
        return DiTDenoiser(net, space, name="fine-tune (EMA)" if ema else "fine-tune (live weights)")

    def export(self, module, path: str) -> str:
        """The EMA model as a diffusers DiT pipeline folder (+ id2label.json)."""
        return export_pipeline(
            module.ema_transformer(), module.vae, module.scheduler_config, module.class_names or [], path
        )


class LoRARows:
    """K new rows after the base's null row N (the base's classes and null row stay as they are), with a LoRA."""

    def __init__(self, spec: LoRASpec, pretrained: str, seed: int, base: DiTDenoiser):
        self.spec, self.pretrained, self.seed = spec, pretrained, seed
        self.base_num_classes = base.num_classes
        self.base_fingerprint = fingerprint(base.transformer)

    def build(self, transformer: torch.nn.Module, k: int) -> torch.nn.Module:
        return build_lora(transformer, self.spec, k, self.pretrained, self.seed)

    def table_size(self, state: dict) -> int | None:
        return table_size_from_state(state)

    def null_id(self, num_classes: int) -> int:
        """The base's null row: the LoRA's classes follow it."""
        return int(self.base_num_classes)

    def class_ids(self, labels: torch.Tensor) -> torch.Tensor:
        return labels + self.base_num_classes + 1

    def ema(self, transformer: torch.nn.Module, avg_fn: Callable) -> torch.nn.Module:
        return AdapterEMA(transformer, avg_fn)

    def checkpoint_state(self, state: dict, transformer: torch.nn.Module) -> dict:
        """Only what trains; the base is re-read from ``pretrained``."""
        return trainable_state(state, transformer)

    def denoiser(self, net: torch.nn.Module, space: LatentSpace, num_classes: int, ema: bool) -> DiTDenoiser:
        return LoRADiTDenoiser(net, space, num_classes, name=f"LoRA fine-tune ({'EMA' if ema else 'live'})")

    def export(self, module, path: str) -> str:
        """The adapter folder: base reference + adapter safetensors + id2label.json (``dit/lora_files.py``)."""
        return export_dit_lora(
            module.ema.module, self.pretrained, self.base_fingerprint, module.class_names or [], path
        )


def label_strategy(lora: LoRASpec | None, pretrained: str | None, seed: int, base: DiTDenoiser | None):
    """The strategy for these settings (a LoRA always has a pretrained base: checked before)."""
    if lora is None:
        return FullTable(pretrained, seed)
    return LoRARows(lora, pretrained, seed, base)
