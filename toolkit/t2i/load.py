"""Which text-to-image pipeline a folder or hub id holds, what it needs from a prior, and loading it (and a LoRA).

Everything a refusal needs is read from small config files (``model_index.json``, the scheduler's and the VAE's
configs) before any weights load, so a wrong pairing answers in one line and at once.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import diffusers
import torch
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
from safetensors.torch import load_file

from ..core.hub import first_line
from ..core.loading import component_class, locate, model_name, read_model_index
from ..errors import PriorswapError

# pipeline class -> its denoiser attribute; the pipelines whose __call__ sends cat([uncond, cond]) through it once
DENOISER = {
    "StableDiffusionPipeline": "unet",
    "StableDiffusionXLPipeline": "unet",
    "StableDiffusion3Pipeline": "transformer",
    "PixArtAlphaPipeline": "transformer",
    "PixArtSigmaPipeline": "transformer",
}
# guidance-distilled families: the guidance scale is an input of one conditional pass, there is no unconditional one
DISTILLED = ("Flux", "HunyuanVideo")


@dataclass(frozen=True)
class Info:
    """What the refusals need to know about a pipeline, from its config files alone."""

    ref: str
    pipeline: str  # diffusers pipeline class name
    denoiser: str  # "unet" or "transformer"
    flow: bool  # flow matching (velocity, sigma-indexed) rather than a DDPM schedule
    vae: tuple[int, float, float]  # latent channels, scaling factor, shift factor (0 when none)

    @property
    def name(self) -> str:
        return model_name(self.ref)

    @property
    def cls(self) -> type:
        return getattr(diffusers, self.pipeline)

    def call_default(self, name: str):
        """The default of the pipeline's ``__call__`` argument ``name`` (guidance scale, steps), as diffusers has it."""
        return inspect.signature(self.cls.__call__).parameters[name].default

    def accepts(self, name: str) -> bool:
        return name in inspect.signature(self.cls.__call__).parameters

    @property
    def takes_lora(self) -> bool:
        return hasattr(self.cls, "load_lora_weights")


def inspect_pipeline(ref: str, what: str = "--model") -> Info:
    """The :class:`Info` of a pipeline folder or hub id, or a one-line refusal (FLUX, unsupported pipeline)."""
    index = read_model_index(ref, what)
    cls = str(index.get("_class_name", ""))
    if any(d in cls for d in DISTILLED):
        raise PriorswapError(
            f"{what} {model_name(ref)!r} is a {cls}: guidance-distilled (the guidance scale is an input of one "
            "conditional pass), so it has no unconditional prediction to swap"
        )
    if cls not in DENOISER:
        raise PriorswapError(
            f"{what} {model_name(ref)!r} is a {cls or 'pipeline of unknown class'}; sample t2i takes "
            + ", ".join(DENOISER)
        )
    vae = _config(ref, index, "vae", what)
    flow = "FlowMatch" in (component_class(index, "scheduler") or "")
    stats = (int(vae.get("latent_channels", 4)), float(vae.get("scaling_factor", 0.18215)))
    return Info(ref, cls, DENOISER[cls], flow, (*stats, float(vae.get("shift_factor") or 0.0)))


def _config(ref: str, index: dict, name: str, what: str) -> dict:
    """A component's config dict (no weights), with the component class's own ``load_config``."""
    cls_name = component_class(index, name)
    cls = getattr(diffusers, cls_name or "", None)
    if cls is None:
        raise PriorswapError(f"{what} {model_name(ref)!r} has no diffusers {name!r} component")
    try:
        return dict(cls.load_config(locate(ref, what), subfolder=name))
    except (OSError, ValueError) as e:
        raise PriorswapError(f"{what} {model_name(ref)!r}: cannot read {name}/ config ({first_line(e)})") from None


def load_pipeline(info: Info, dtype: torch.dtype, device: str, what: str = "--model"):
    """The pipeline on ``device`` in ``dtype``, its progress bars and safety checker off (images are compared)."""
    kwargs = {"safety_checker": None} if info.pipeline == "StableDiffusionPipeline" else {}
    try:
        pipe = info.cls.from_pretrained(locate(info.ref, what), dtype=dtype, **kwargs)
    except (OSError, ValueError, TypeError) as e:
        raise PriorswapError(
            f"{what} {info.name!r} could not be loaded as a {info.pipeline} ({first_line(e)})"
        ) from None
    return pipe.to(device)


PEFT_FOLDER = ("adapter_config.json", "adapter_model.safetensors")  # what peft's save_pretrained writes
PEFT_PREFIX = "base_model.model."  # its weight names: the PeftModel wrapper's path to the adapted network


def is_peft_folder(path: str) -> bool:
    return all(os.path.isfile(os.path.join(path, name)) for name in PEFT_FOLDER)


def check_lora_file(info: Info, lora: str) -> str:
    """``lora`` expanded, or a one-line error: missing, or not a format this pipeline's LoRAs come in."""
    path = os.path.expanduser(lora)
    if not os.path.exists(path):
        raise PriorswapError(f"--lora {lora!r} does not exist")
    if not info.takes_lora and not is_peft_folder(path):
        raise PriorswapError(
            f"--lora: diffusers has no LoRA loader for {info.pipeline}; pass a peft adapter folder "
            f"({' + '.join(PEFT_FOLDER)}, what `priorswap fit` exports for it), or merge the LoRA into a full "
            "fine-tune and pass it as --model (with the base as --prior)"
        )
    return path


def load_peft_folder(net: torch.nn.Module, folder: str) -> None:
    """A peft adapter folder (``PeftModel.save_pretrained``'s layout) injected into ``net`` in place, so the pipeline
    keeps its own denoiser object and the free prior can switch the adapter layers off."""
    config = LoraConfig.from_pretrained(folder)
    state = load_file(os.path.join(folder, PEFT_FOLDER[1]))
    inject_adapter_in_model(config, net)
    result = set_peft_model_state_dict(net, {k.removeprefix(PEFT_PREFIX): v for k, v in state.items()})
    if result.unexpected_keys:
        raise ValueError(
            f"{len(result.unexpected_keys)} weights match no adapter layer, e.g. {result.unexpected_keys[0]}"
        )


def load_lora(pipe, info: Info, lora: str) -> None:
    """Load a LoRA onto the denoiser (and text encoders): diffusers' own ``load_lora_weights``, or for a pipeline
    diffusers has no LoRA loader for (PixArt), peft's adapter folder onto the denoiser."""
    path = check_lora_file(info, lora)
    try:
        if info.takes_lora:
            pipe.load_lora_weights(path)
        else:
            load_peft_folder(getattr(pipe, info.denoiser), path)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        raise PriorswapError(
            f"--lora {lora!r} is not a LoRA of {info.name!r} that diffusers or peft reads ({first_line(e)})"
        ) from None
    if not any("lora" in n for n, _ in getattr(pipe, info.denoiser).named_parameters()) and not any(
        "lora" in n for enc in text_encoders(pipe) for n, _ in enc.named_parameters()
    ):
        raise PriorswapError(f"--lora {lora!r} matched no layer of {info.name!r} (is it a LoRA of another model?)")


def text_encoders(pipe) -> list[torch.nn.Module]:
    return [m for k, m in pipe.components.items() if k.startswith("text_encoder") and m is not None]
