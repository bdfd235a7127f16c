"""LoRA set-up and export of a text-to-image fine-tune: adapters where diffusers' LoRA training scripts put them, and
files the pipeline class reads back (``load_lora_weights``), or a whole pipeline folder (``from_pretrained``)."""

from __future__ import annotations

import copy
import inspect
import os
from dataclasses import dataclass

import torch
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from safetensors.torch import save_file

from ..files import atomic_dir
from ..t2i.load import PEFT_FOLDER, PEFT_PREFIX
from .t2i_text import TEXT_LORA_TARGETS, Family


@dataclass
class T2ILoRA:
    """LoRA of a text-to-image fine-tune.

    Args:
        rank: adapter rank r.
        alpha: scale numerator (the update is alpha / r * B A); default r, as diffusers' scripts use.
        targets: denoiser module names to adapt; default the family's (attention projections; SD3 also its
            context-stream projections).
        text_encoders: also adapt the CLIP text encoders' attention (SD, SDXL, SD3; not with a latent cache).
    """

    rank: int = 4
    alpha: float | None = None
    targets: list[str] | None = None
    text_encoders: bool = False


def add_lora(net: torch.nn.Module, spec: T2ILoRA, family: Family, seed: int, text_encoder: bool = False) -> None:
    """Inject a gaussian-initialised LoRA (B = 0, so the first step starts at the base) into ``net``, base frozen."""
    targets = list(TEXT_LORA_TARGETS) if text_encoder else list(spec.targets or family.lora_targets)
    cfg = LoraConfig(
        r=spec.rank, lora_alpha=spec.alpha or spec.rank, init_lora_weights="gaussian", target_modules=targets
    )
    net.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):  # peft draws A from the global RNG: same seed, same adapter
        torch.manual_seed(seed)
        if hasattr(net, "add_adapter") and not text_encoder:  # diffusers' own peft integration
            net.add_adapter(cfg)
        else:  # PixArt's transformer (no diffusers LoRA loader), text encoders: peft's own injection, as diffusers
            # loads a text encoder LoRA (transformers' add_adapter would need a newer peft)
            inject_adapter_in_model(cfg, net)
            net.peft_config = {"default": cfg}


def _lora_state(net: torch.nn.Module, convert: bool = True) -> dict[str, torch.Tensor]:

    state = get_peft_model_state_dict(net)
    return convert_state_dict_to_diffusers(state) if convert else state


def export_lora(pipe, family: Family, nets: dict[str, torch.nn.Module], path: str) -> str:
    """The adapters of ``nets`` ({"net": denoiser, "text_encoder": ...}) as the pipeline class's LoRA file.

    SD/SDXL/SD3: ``pytorch_lora_weights.safetensors`` by the pipeline class's ``save_lora_weights`` (read back by
    ``pipe.load_lora_weights(path)``). PixArt, which diffusers gives no LoRA loader: peft's adapter folder
    (``adapter_config.json`` + ``adapter_model.safetensors``), read by ``peft.PeftModel.from_pretrained(transformer,
    path)``.
    """
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_dir(path) as tmp:
        if not hasattr(type(pipe), "save_lora_weights"):
            net = nets["net"]
            net.peft_config["default"].save_pretrained(tmp)
            state = {PEFT_PREFIX + k: v.contiguous() for k, v in get_peft_model_state_dict(net).items()}
            save_file(state, os.path.join(tmp, PEFT_FOLDER[1]))
            return path
        # the SD3 loader reads the transformer's peft names as they are (converting drops its attention keys)
        layers = {f"{family.net}_lora_layers": _lora_state(nets["net"], convert=family.name != "sd3")}
        for name in ("text_encoder", "text_encoder_2"):
            if name in nets:
                layers[f"{name}_lora_layers"] = _lora_state(nets[name])
        type(pipe).save_lora_weights(tmp, **layers)
    return path


def export_pipeline(pipe, family: Family, net: torch.nn.Module, path: str) -> str:
    """The pipeline with ``net`` (the EMA denoiser) in place of its own, as a diffusers folder (``from_pretrained``)."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    net = copy.deepcopy(getattr(net, "_orig_mod", net)).float().eval()
    with atomic_dir(path) as tmp:
        pipeline_with(pipe, **{family.net: net}).save_pretrained(tmp, safe_serialization=True)
    return path


def pipeline_with(pipe, **components: torch.nn.Module):
    """A pipeline of ``pipe``'s class sharing its components and config (SDXL's zeros), ``components`` replaced;
    nothing is copied, so it costs no memory (the evaluation callback samples the EMA weights through it)."""
    params = inspect.signature(type(pipe).__init__).parameters
    parts = {k: getattr(pipe, k) if k in pipe.components else pipe.config[k] for k in params if k in pipe.config}
    return type(pipe)(**{**parts, **components})
