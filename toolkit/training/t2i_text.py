"""The text-to-image families a fine-tune knows (SD1.x/2.x, SDXL, SD3/SD3.5, PixArt-alpha/Sigma): which pipeline class,
which denoiser component, which LoRA targets, and how captions become conditions.

Captions are encoded by the pipeline's own ``encode_prompt``, so training conditions on exactly what sampling feeds
the model; the null condition is the pipeline's own unconditional branch (the encoded empty prompt, or zeros where
the pipeline forces zeros for it: SDXL's ``force_zeros_for_empty_prompt``), so caption dropout trains the branch
classifier-free guidance uses.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import diffusers
import torch

from ..core.loading import component_class, load_component, locate, read_model_index
from ..errors import PriorswapError


@dataclass(frozen=True)
class Family:
    name: str  # sd, sdxl, sd3, pixart
    net: str  # the denoiser component: unet or transformer
    text_encoders: tuple[str, ...]  # the components a text-encoder LoRA may adapt (CLIP encoders)
    lora_targets: tuple[str, ...]  # the denoiser modules diffusers' LoRA training scripts adapt
    cond_keys: tuple[str, ...]  # the tensors of one caption's condition, as cached and batched


ATTN = ("to_k", "to_q", "to_v", "to_out.0")
SD3_ATTN = ATTN + ("add_k_proj", "add_q_proj", "add_v_proj", "to_add_out")
TEXT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")  # CLIP attention, as diffusers' scripts adapt it
POOLED = ("prompt_embeds", "pooled_prompt_embeds")
FAMILIES = {
    "StableDiffusionPipeline": Family("sd", "unet", ("text_encoder",), ATTN, ("prompt_embeds",)),
    "StableDiffusionXLPipeline": Family("sdxl", "unet", ("text_encoder", "text_encoder_2"), ATTN, POOLED),
    "StableDiffusion3Pipeline": Family("sd3", "transformer", ("text_encoder", "text_encoder_2"), SD3_ATTN, POOLED),
    "PixArtAlphaPipeline": Family("pixart", "transformer", (), ATTN, ("prompt_embeds", "prompt_attention_mask")),
    "PixArtSigmaPipeline": Family("pixart", "transformer", (), ATTN, ("prompt_embeds", "prompt_attention_mask")),
}


def read_family(ref: str, what: str = "model.pretrained") -> tuple[str, dict, Family]:
    """(local folder, model_index.json, family) of a pipeline, from its index alone: options the family refuses are
    refused from this, before the weights load."""
    ref = locate(ref, what)
    index = read_model_index(ref, what)
    cls_name = str(index.get("_class_name", ""))
    family = FAMILIES.get(cls_name)
    if family is None:
        known = ", ".join(sorted(FAMILIES))
        raise PriorswapError(
            f"{what} {ref!r} is a {cls_name or 'pipeline of unknown class'}; text-to-image fine-tunes take {known}"
        )
    return ref, index, family


def load_pipeline(ref: str, what: str = "model.pretrained"):
    """(family, pipeline) of a diffusers text-to-image folder or hub id, every component loaded by ``core.loading``."""

    ref, index, family = read_family(ref, what)
    cls = getattr(diffusers, str(index["_class_name"]))
    params = inspect.signature(cls.__init__).parameters
    parts = {}
    for name in params:
        if name == "self" or params[name].kind is inspect.Parameter.VAR_KEYWORD:
            continue
        if component_class(index, name) is not None:
            parts[name] = load_component(ref, index, name, what=what)
        elif name in index and not isinstance(index[name], (list, tuple)):
            parts[name] = index[name]  # a config value (SDXL's force_zeros_for_empty_prompt)
        elif params[name].default is inspect.Parameter.empty:
            parts[name] = None  # a component saved as null (SD's safety checker, SD3 without T5)
    if "requires_safety_checker" in params:
        parts["requires_safety_checker"] = False
    pipe = cls(**parts)
    for name in (family.net, "vae", *family_encoders(pipe)):
        getattr(pipe, name).requires_grad_(False).eval()
    return family, pipe


def family_encoders(pipe) -> list[str]:
    """The text encoder components this pipeline holds (SD3 may leave out its T5)."""
    return [n for n in ("text_encoder", "text_encoder_2", "text_encoder_3") if getattr(pipe, n, None) is not None]


def encode(
    family: Family, pipe, captions: list[str], device: torch.device, max_sequence_length: int | None = None
) -> dict[str, torch.Tensor]:
    """The conditions of ``captions`` ({prompt_embeds, pooled_prompt_embeds or prompt_attention_mask}), batch-first."""
    return _encode(family, pipe, captions, device, max_sequence_length, null=False)


def encode_null(family: Family, pipe, device: torch.device, max_sequence_length: int | None = None):
    """The pipeline's unconditional condition (one row): what CFG pairs with a caption at sampling time."""
    return _encode(family, pipe, [""], device, max_sequence_length, null=True)


def _encode(family, pipe, captions, device, max_len, null: bool) -> dict[str, torch.Tensor]:
    # the null condition is the negative half of a CFG encode: encode_prompt then applies the pipeline's own rules
    cfg = bool(null)
    t5 = {} if max_len is None else {"max_sequence_length": max_len}
    if family.name == "sd":
        pos, neg = pipe.encode_prompt(captions, device, 1, cfg)
        out = {"prompt_embeds": neg if null else pos}
    elif family.name == "sdxl":
        pos, neg, pooled, neg_pooled = pipe.encode_prompt(captions, device=device, do_classifier_free_guidance=cfg)
        out = {"prompt_embeds": neg if null else pos, "pooled_prompt_embeds": neg_pooled if null else pooled}
    elif family.name == "sd3":
        pos, neg, pooled, neg_pooled = pipe.encode_prompt(
            captions, None, None, device=device, do_classifier_free_guidance=cfg, **t5
        )
        out = {"prompt_embeds": neg if null else pos, "pooled_prompt_embeds": neg_pooled if null else pooled}
    else:
        pos, mask, neg, neg_mask = pipe.encode_prompt(captions, cfg, negative_prompt="", device=device, **t5)
        out = {"prompt_embeds": neg if null else pos, "prompt_attention_mask": neg_mask if null else mask}
    return {k: v.to(device) for k, v in out.items()}
