"""The DiT LoRA export: a base reference, the adapter as safetensors, and the class names.

    EXPORT/adapter_config.json        peft's LoraConfig (base_model_name_or_path = the base)
    EXPORT/adapter_model.safetensors  LoRA A/B matrices and the K new label rows (peft's state-dict names)
    EXPORT/priorswap_lora.json        base reference, N, K and a fingerprint of the base
    EXPORT/id2label.json              the fine-tune's class names

This is what ``PeftModel.save_pretrained`` writes plus two small JSON files, so peft users read it with
``LoraConfig.from_pretrained`` and ``set_peft_model_state_dict`` (docs/lora.md).
"""

from __future__ import annotations

import json
import os

import torch
from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from ..core.loading import Loaded, model_name
from ..errors import PriorswapError
from ..files import atomic_dir
from .lora import LoRADiTDenoiser, add_class_rows, inject, label_embedders, new_classes

CONFIG, WEIGHTS, META, LABELS = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "priorswap_lora.json",
    "id2label.json",
)


def is_lora_folder(ref: str) -> bool:
    return os.path.isfile(os.path.join(os.path.expanduser(str(ref)), CONFIG))


def fingerprint(transformer: torch.nn.Module) -> dict:
    """What a LoRA must match in its base: the architecture, and 16 weights of block 0's query projection
    (compared with a bf16-sized tolerance, so a base loaded in half precision still matches)."""
    cfg = transformer.config
    q = next(m for n, m in transformer.named_modules() if n.endswith("transformer_blocks.0.attn1.to_q"))
    w = getattr(q, "base_layer", q).weight.detach().float().flatten().cpu()
    idx = torch.linspace(0, w.numel() - 1, 16).long()
    keys = ("num_layers", "num_attention_heads", "attention_head_dim", "in_channels", "patch_size", "sample_size")
    return {"config": {k: int(getattr(cfg, k)) for k in keys}, "probe": w[idx].tolist()}


def fingerprint_problem(expected: dict, transformer: torch.nn.Module) -> str | None:
    seen = fingerprint(transformer)
    if seen["config"] != expected.get("config", seen["config"]):
        diff = {k: v for k, v in seen["config"].items() if expected["config"].get(k) != v}
        return f"architecture differs ({', '.join(f'{k}={v}' for k, v in diff.items())})"
    if "probe" in expected and not torch.allclose(
        torch.tensor(seen["probe"]), torch.tensor(expected["probe"]), rtol=1e-2, atol=1e-3
    ):
        return "its weights differ from the ones the LoRA was trained on"
    return None


def export_dit_lora(
    transformer: torch.nn.Module, base_ref: str, base_fingerprint: dict, class_names: list[str], path: str
) -> str:
    """Write the adapter of ``transformer`` (a DiT with a LoRA and K new class rows) to the folder ``path``."""
    config = transformer.peft_config["default"]
    first, k = new_classes(config)
    n = int(label_embedders(transformer)[0].num_classes)
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    state = {
        k_: v.detach().float().cpu().contiguous()
        for k_, v in get_peft_model_state_dict(transformer, save_embedding_layers=False).items()
    }
    with atomic_dir(path) as tmp:
        config.base_model_name_or_path = base_ref
        config.save_pretrained(tmp)
        save_file(state, os.path.join(tmp, WEIGHTS), metadata={"format": "pt"})
        meta = {
            "kind": "dit",
            "base": base_ref,
            "base_classes": n,
            "num_classes": k,
            "base_fingerprint": base_fingerprint,
        }
        with open(os.path.join(tmp, META), "w") as f:
            json.dump(meta, f, indent=2)
        with open(os.path.join(tmp, LABELS), "w") as f:
            json.dump({str(i): name for i, name in enumerate(class_names)}, f, indent=2)
    return path


def read_lora(ref: str, what: str = "LoRA") -> tuple[object, dict, dict]:
    """(peft LoraConfig, priorswap metadata or {}, adapter weights) of a LoRA folder, or a one-line error."""
    folder = os.path.expanduser(str(ref))
    if not (os.path.isfile(os.path.join(folder, CONFIG)) and os.path.isfile(os.path.join(folder, WEIGHTS))):
        raise PriorswapError(
            f"{what} {ref!r} is not a LoRA format priorswap reads: expected a folder with {CONFIG} and {WEIGHTS} "
            "(priorswap's export, or peft's save_pretrained)"
        )
    try:
        config = LoraConfig.from_pretrained(folder)
    except (TypeError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise PriorswapError(f"{what} {ref!r}: {CONFIG} is not a peft LoRA config ({str(e)[:160]})") from None
    if str(getattr(config, "peft_type", "")) not in ("LORA", "PeftType.LORA"):
        raise PriorswapError(f"{what} {ref!r} is a {config.peft_type} adapter; priorswap reads LoRA adapters")
    meta = {}
    if os.path.isfile(os.path.join(folder, META)):
        with open(os.path.join(folder, META)) as f:
            meta = json.load(f)
    return config, meta, load_file(os.path.join(folder, WEIGHTS))


def apply_lora(
    ref: str,
    base: Loaded,
    config,
    meta: dict,
    weights: dict,
    id2label: dict[int, str],
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> Loaded:
    """The LoRA read from folder ``ref`` (:func:`read_lora`) put on an already loaded DiT ``base``, as a
    :class:`Loaded` whose denoiser is a :class:`LoRADiTDenoiser`. A base the LoRA was not trained on is a
    one-line error. ``id2label``: the LoRA's own class names (empty: the base's)."""
    base_ref = base.ref
    tr = base.denoiser.transformer
    n = base.denoiser.num_classes
    first, k = new_classes(config)
    problem = fingerprint_problem(meta["base_fingerprint"], tr) if "base_fingerprint" in meta else None
    if problem is None and k and first != n + 1:
        problem = f"the LoRA's class rows start at id {first}, but a base of {n} classes puts them at {n + 1}"
    if problem:
        raise PriorswapError(f"LoRA {model_name(ref)!r} does not fit base {model_name(base_ref)!r}: {problem}")
    if k:
        add_class_rows(tr, k)
    tr = inject(tr, config)
    try:
        result = set_peft_model_state_dict(tr, weights)
    except RuntimeError as e:  # size mismatch: a LoRA of another architecture
        raise PriorswapError(
            f"LoRA {model_name(ref)!r} does not fit base {model_name(base_ref)!r}: {str(e).splitlines()[-1][:160]}"
        ) from None
    missing = [key for key in result.missing_keys if "lora_" in key or "trainable_tokens_delta" in key]
    if missing or result.unexpected_keys:
        bad = (missing or result.unexpected_keys)[0]
        raise PriorswapError(f"LoRA {model_name(ref)!r} does not fit base {model_name(base_ref)!r} (weight {bad})")
    den = LoRADiTDenoiser(tr, base.denoiser.space, k or n, name=model_name(ref))
    den.to(device, dtype)
    if base.vae is not None:
        base.vae.to(device)
    return Loaded(den, base.scheduler_config, base.vae, id2label or base.id2label, ref)
