"""Load models from a diffusers pipeline folder or a hub id, and wrap them as denoisers.

Every reference is either an existing local folder (what tests and offline machines use) or a hub id
``owner/name`` (what users have). Anything else, or a hub id that cannot be reached, is a one-line
:class:`PriorswapError` raised before any sampling starts.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import PriorswapError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def locate(ref: str, what: str = "model") -> str:
    """``ref`` if it is a local folder or a plausible hub id; otherwise a one-line error."""
    ref = os.path.expanduser(str(ref))
    if os.path.isdir(ref):
        return ref
    if os.path.exists(ref):
        raise PriorswapError(f"{what} {ref!r} is a file; expected a diffusers pipeline folder or a hub id (owner/name)")
    if not _HUB_ID.match(ref):
        raise PriorswapError(f"{what} {ref!r} does not exist; expected a diffusers pipeline folder or a hub id (owner/name)")
    return ref


def read_model_index(ref: str, what: str = "model") -> dict:
    """The pipeline's ``model_index.json`` as a dict (components and their classes)."""
    ref = locate(ref, what)
    if os.path.isdir(ref):
        path = os.path.join(ref, "model_index.json")
        if not os.path.isfile(path):
            raise PriorswapError(f"{what} folder {ref!r} has no model_index.json; expected a folder written by a diffusers pipeline's save_pretrained")
        with open(path) as f:
            return json.load(f)
    from diffusers import DiffusionPipeline

    from .hub import cached, offline_hint, unreachable_reason

    if not cached(ref, "model_index.json"):
        reason = unreachable_reason()
        if reason:
            raise PriorswapError(f"{what} {ref!r} is not a local folder, not in the hub cache, and {reason}; {offline_hint(ref)}")
    try:
        return dict(DiffusionPipeline.load_config(ref))
    except Exception as e:  # offline, unknown id, gated repo...
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise PriorswapError(
            f"{what} {ref!r} is not a local folder and could not be fetched from the hub ({reason}); {offline_hint(ref)}"
        ) from None


def component_class(index: dict, name: str) -> str | None:
    """Class name of component ``name`` in a model index, or None if absent or saved as null."""
    entry = index.get(name)
    if not isinstance(entry, (list, tuple)) or len(entry) != 2 or entry[1] is None:
        return None
    return str(entry[1])


def load_component(ref: str, index: dict, name: str, dtype: torch.dtype | None = None, what: str = "model"):
    """Load one component (``unet``, ``vae``, ``text_encoder``, ...) with its own class's from_pretrained."""
    import diffusers
    import transformers

    cls_name = component_class(index, name)
    if cls_name is None:
        raise PriorswapError(f"{what} {ref!r} has no {name!r} component")
    cls = getattr(diffusers, cls_name, None) or getattr(transformers, cls_name, None)
    if cls is None:
        raise PriorswapError(f"{what} {ref!r}: unknown component class {cls_name!r} for {name!r}")
    kwargs: dict[str, Any] = {"subfolder": name}
    if dtype is not None and hasattr(cls, "dtype"):
        kwargs["torch_dtype"] = dtype
    try:
        if "Tokenizer" in cls_name or "Processor" in cls_name:
            return cls.from_pretrained(ref, subfolder=name)
        return cls.from_pretrained(ref, **kwargs)
    except (OSError, ValueError, EnvironmentError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise PriorswapError(f"{what} {ref!r}: cannot load {name!r} ({first}); are its weights missing?") from None


def scheduler_config(ref: str, what: str = "model") -> dict:
    """The pipeline's scheduler config (its training noise schedule)."""
    from diffusers import DDPMScheduler

    try:
        return dict(DDPMScheduler.load_config(ref, subfolder="scheduler"))
    except Exception:
        raise PriorswapError(f"{what} {ref!r} has no readable scheduler/scheduler_config.json") from None


def alphas_cumprod(config: dict) -> torch.Tensor:
    """alpha_bar table of a scheduler config, computed by diffusers' own beta-schedule code."""
    from diffusers import DDPMScheduler

    clean = {k: v for k, v in config.items() if not k.startswith("_")}
    return DDPMScheduler.from_config(clean).alphas_cumprod.to(torch.float64)


@dataclass
class Loaded:
    """A wrapped denoiser plus what sampling needs next to it."""

    denoiser: Any
    scheduler_config: dict
    vae: torch.nn.Module | None = None
    id2label: dict[int, str] = field(default_factory=dict)
    ref: str = ""


def _vae(ref: str, index: dict, dtype, what: str):
    if component_class(index, "vae") is None:
        return None
    vae = load_component(ref, index, "vae", dtype, what).eval().requires_grad_(False)
    return vae


def load_dit(ref: str, what: str = "model", dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> Loaded:
    """A class-conditional DiT pipeline folder (``DiTPipeline.save_pretrained``, VAE optional) or hub id."""
    from .adapters.dit import DiTDenoiser

    index = read_model_index(ref, what)
    if component_class(index, "transformer") != "DiTTransformer2DModel":
        raise PriorswapError(
            f"{what} {ref!r} is a {index.get('_class_name', 'pipeline')} without a DiTTransformer2DModel; expected a DiT pipeline"
        )
    sched = scheduler_config(ref, what)
    transformer = load_component(ref, index, "transformer", dtype, what)
    vae = _vae(ref, index, dtype, what)
    den = DiTDenoiser(
        transformer,
        alphas_cumprod(sched),
        prediction_type=sched.get("prediction_type", "epsilon"),
        vae_scaling_factor=None if vae is None else float(vae.config.scaling_factor),
        vae_latent_channels=None if vae is None else int(vae.config.latent_channels),
        name=os.path.basename(os.path.normpath(ref)) or ref,
    )
    den.vae_name = _vae_name(ref, vae)
    den.to(device)
    if vae is not None:
        vae.to(device)
    return Loaded(den, sched, vae, read_id2label(ref), ref)


def load_prior(ref: str, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> Loaded:
    """Any supported unconditional prior: a DiT, an SD-family UNet pipeline, or PixArt-alpha.

    The text encoder of a text-to-image prior runs once on the empty prompt and is then dropped.
    """
    from .adapters.text_prior import PixArtPrior, UNetPrior, empty_prompt_embedding

    what = "prior"
    index = read_model_index(ref, what)
    transformer_cls = component_class(index, "transformer")
    if transformer_cls == "DiTTransformer2DModel":
        return load_dit(ref, what, dtype, device)
    if component_class(index, "unet") is None and transformer_cls != "PixArtTransformer2DModel":
        raise PriorswapError(
            f"prior {ref!r} is a {index.get('_class_name', 'pipeline')}; supported priors are DiT, SD-family UNet "
            "(StableDiffusionPipeline and compatible) and PixArt-alpha pipelines"
        )
    sched = scheduler_config(ref, what)
    tokenizer = load_component(ref, index, "tokenizer", None, what)
    encoder = load_component(ref, index, "text_encoder", dtype, what).to(device).eval()
    vae = _vae(ref, index, dtype, what)
    common = dict(
        alphas_cumprod=alphas_cumprod(sched),
        prediction_type=sched.get("prediction_type", "epsilon"),
        vae_scaling_factor=None if vae is None else float(vae.config.scaling_factor),
        vae_latent_channels=None if vae is None else int(vae.config.latent_channels),
        name=os.path.basename(os.path.normpath(ref)) or ref,
    )
    if transformer_cls == "PixArtTransformer2DModel":
        emb, mask = empty_prompt_embedding(tokenizer, encoder, max_length=120)  # PixArt pads T5 to 120 tokens
        den = PixArtPrior(load_component(ref, index, "transformer", dtype, what), emb, mask, **common)
    else:
        emb, _ = empty_prompt_embedding(tokenizer, encoder)
        den = UNetPrior(load_component(ref, index, "unet", dtype, what), emb, **common)
    del encoder  # only the empty prompt is ever needed (trap 6)
    den.vae_name = _vae_name(ref, vae)
    den.to(device)
    return Loaded(den, sched, vae, {}, ref)


def read_id2label(ref: str) -> dict[int, str]:
    """Class names saved next to an exported fine-tune (``id2label.json``), if any."""
    path = os.path.join(ref, "id2label.json")
    if os.path.isfile(path):
        with open(path) as f:
            return {int(k): str(v) for k, v in json.load(f).items()}
    return {}


def _vae_name(ref: str, vae) -> str | None:
    if vae is None:
        return None
    return getattr(vae.config, "_name_or_path", None) or f"{ref}/vae"
