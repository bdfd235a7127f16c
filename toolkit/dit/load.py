"""Load a DiT from a folder or hub id, full or LoRA: the one place that decides which.

``load_dit(ref)`` reads a class-conditional DiT pipeline (``DiTPipeline.save_pretrained``, VAE optional); a LoRA
folder as ``ref`` goes on the base it records, and ``lora=`` puts a LoRA folder on ``ref`` (then ``ref`` is its base).
"""

from __future__ import annotations

import json
import os

import torch

from ..core.loading import Loaded, component_class, load_network, model_name, read_model_index, scheduler_config
from ..errors import PriorswapError
from ..shipped import packaged
from .denoiser import DiTDenoiser
from .lora_files import apply_lora, is_lora_folder, read_lora


def load_dit(
    ref: str,
    what: str = "model",
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    lora: str | None = None,
    lora_what: str = "LoRA",
) -> Loaded:
    """A DiT pipeline folder or hub id, or a DiT LoRA folder (``priorswap.toolkit.dit.lora_files``: loaded on the
    base it names). With ``lora`` (a LoRA folder, named ``lora_what`` in errors) ``ref`` is the base it goes on."""
    ref = packaged(ref)  # toolkit/assets/...: the package's own, from any working folder
    if lora is not None:
        return _load_lora(lora, ref, lora_what, dtype, device)
    if is_lora_folder(ref):
        return _load_lora(ref, None, what, dtype, device)
    index = read_model_index(ref, what)
    if component_class(index, "transformer") != "DiTTransformer2DModel":
        raise PriorswapError(
            f"{what} {ref!r} is a {index.get('_class_name', 'pipeline')} without a DiTTransformer2DModel; expected a DiT pipeline"
        )
    sched = scheduler_config(ref, what)
    transformer, vae, space = load_network(ref, index, "transformer", sched, dtype, what)
    den = DiTDenoiser(transformer, space, name=model_name(ref))
    den.to(device)
    if vae is not None:
        vae.to(device)
    return Loaded(den, sched, vae, read_id2label(ref, index), ref)


def _load_lora(ref: str, base: str | None, what: str, dtype: torch.dtype | None, device: str | torch.device) -> Loaded:
    """A DiT LoRA folder on its base (``base``, else the reference it records)."""
    config, meta, weights = read_lora(ref, what)
    base_ref = base or meta.get("base") or config.base_model_name_or_path
    if not base_ref:
        raise PriorswapError(f"{what} {ref!r} names no base model; give the base's folder or hub id as --model")
    loaded = load_dit(base_ref, "LoRA base", dtype)
    return apply_lora(ref, loaded, config, meta, weights, read_id2label(ref), dtype, device)


def read_id2label(ref: str, index: dict | None = None) -> dict[int, str]:
    """Class names: ``id2label.json`` next to an exported fine-tune, else the ``id2label`` that DiTPipeline keeps in
    ``model_index.json`` (the hub's DiT-XL-2 has ImageNet's there), else none."""
    path = os.path.join(os.path.expanduser(str(ref)), "id2label.json")
    if os.path.isfile(path):
        with open(path) as f:
            return {int(k): str(v) for k, v in json.load(f).items()}
    return {int(k): str(v) for k, v in ((index or {}).get("id2label") or {}).items()}
