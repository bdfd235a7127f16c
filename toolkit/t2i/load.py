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


def check_lora_file(info: Info, lora: str) -> str:
    """``lora`` expanded, or a one-line error: missing file, or a pipeline diffusers has no LoRA loader for."""
    if not info.takes_lora:
        raise PriorswapError(
            f"--lora: diffusers has no LoRA loader for {info.pipeline}; merge the LoRA into a full fine-tune and "
            "pass it as --model (with the base as --prior)"
        )
    path = os.path.expanduser(lora)
    if not os.path.exists(path):
        raise PriorswapError(f"--lora {lora!r} does not exist")
    return path


def load_lora(pipe, info: Info, lora: str) -> None:
    """Load a LoRA file or folder onto the denoiser (and text encoders) with diffusers' own ``load_lora_weights``."""
    try:
        pipe.load_lora_weights(check_lora_file(info, lora))
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        raise PriorswapError(
            f"--lora {lora!r} is not a LoRA of {info.name!r} that diffusers reads ({first_line(e)})"
        ) from None
    if not any("lora" in n for n, _ in getattr(pipe, info.denoiser).named_parameters()) and not any(
        "lora" in n for enc in text_encoders(pipe) for n, _ in enc.named_parameters()
    ):
        raise PriorswapError(f"--lora {lora!r} matched no layer of {info.name!r} (is it a LoRA of another model?)")


def text_encoders(pipe) -> list[torch.nn.Module]:
    return [m for k, m in pipe.components.items() if k.startswith("text_encoder") and m is not None]
