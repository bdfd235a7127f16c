"""Load diffusers pipeline components from a folder or a hub id; no model family is known here.

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

import diffusers
import torch
import transformers
from diffusers import DDPMScheduler, DiffusionPipeline

from ..errors import PriorswapError
from ..shipped import packaged
from . import hub
from .denoisers import LatentSpace
from .hub import fetch_error, first_line, hub_problem, missing_file

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def locate(ref: str, what: str = "model") -> str:
    """``ref`` if it is a local folder or a plausible hub id; otherwise a one-line error."""
    ref = packaged(os.path.expanduser(str(ref)))
    if os.path.isdir(ref):
        return ref
    if os.path.exists(ref):
        raise PriorswapError(f"{what} {ref!r} is a file; expected a diffusers pipeline folder or a hub id (owner/name)")
    if not _HUB_ID.match(ref):
        raise PriorswapError(
            f"{what} {ref!r} does not exist; expected a diffusers pipeline folder or a hub id (owner/name)"
        )
    return ref


def read_model_index(ref: str, what: str = "model") -> dict:
    """The pipeline's ``model_index.json`` as a dict (components and their classes)."""
    ref = locate(ref, what)
    if os.path.isdir(ref):
        path = os.path.join(ref, "model_index.json")
        if not os.path.isfile(path):
            raise PriorswapError(
                f"{what} folder {ref!r} has no model_index.json; expected a folder written by a diffusers pipeline's save_pretrained"
            )
        with open(path) as f:
            return json.load(f)

    if not hub.cached(ref, "model_index.json"):
        reason = hub.unreachable_reason()
        if reason:
            raise PriorswapError(
                f"{what} {ref!r} is not a local folder, not in the hub cache, and {reason}; {hub.offline_hint(ref)}"
            )
    try:
        return dict(DiffusionPipeline.load_config(ref))
    except Exception as e:  # noqa: BLE001 - classified below
        raise fetch_error(ref, what, "model_index.json", e) from None


def model_name(ref: str) -> str:
    """How errors name a model: the full path of a local folder (export folders often share a basename), else its hub id."""
    ref = os.path.expanduser(str(ref))
    return os.path.abspath(ref) if os.path.isdir(ref) else ref


def component_class(index: dict, name: str) -> str | None:
    """Class name of component ``name`` in a model index, or None if absent or saved as null."""
    entry = index.get(name)
    if not isinstance(entry, (list, tuple)) or len(entry) != 2 or entry[1] is None:
        return None
    return str(entry[1])


def load_component(ref: str, index: dict, name: str, dtype: torch.dtype | None = None, what: str = "model"):
    """Load one component (``unet``, ``vae``, ``text_encoder``, ...) with its own class's from_pretrained."""
    cls_name = component_class(index, name)
    if cls_name is None:
        raise PriorswapError(f"{what} {ref!r} has no {name!r} component")
    cls = getattr(diffusers, cls_name, None) or getattr(transformers, cls_name, None)
    if cls is None:
        raise PriorswapError(f"{what} {ref!r}: unknown component class {cls_name!r} for {name!r}")
    kwargs: dict[str, Any] = {"subfolder": name}
    if dtype is not None and hasattr(cls, "dtype"):
        kwargs["torch_dtype"] = dtype
    if os.path.isdir(ref) and not os.path.isdir(os.path.join(ref, name)):
        raise PriorswapError(f"{what} folder {ref!r} has no {name}/ folder, which its model_index.json lists")
    try:
        if "Tokenizer" in cls_name or "Processor" in cls_name:
            return cls.from_pretrained(ref, subfolder=name)
        return cls.from_pretrained(ref, **kwargs)
    except (OSError, ValueError) as e:
        problem = hub_problem(ref, e)
        if problem:
            raise PriorswapError(f"{what} {ref!r} {problem}") from None
        if missing_file(e):
            raise PriorswapError(f"{what} {ref!r} has no {name!r} weights or config ({first_line(e)})") from None
        raise PriorswapError(f"{what} {ref!r}: cannot load {name!r} ({first_line(e)})") from None


def scheduler_config(ref: str, what: str = "model") -> dict:
    """The pipeline's scheduler config (its training noise schedule)."""
    file = "scheduler/scheduler_config.json"
    if os.path.isdir(ref) and not os.path.isfile(os.path.join(ref, file)):
        raise PriorswapError(f"{what} folder {ref!r} has no {file}")
    try:
        return dict(DDPMScheduler.load_config(ref, subfolder="scheduler"))
    except Exception as e:  # noqa: BLE001 - classified by fetch_error
        raise fetch_error(ref, what, file, e) from None


def alphas_cumprod(config: dict) -> torch.Tensor:
    """alpha_bar table of a scheduler config, computed by diffusers' own beta-schedule code."""
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


def latent_space(
    ref: str, sched: dict, vae: torch.nn.Module | None, channels: int, schedule: torch.Tensor | None = None
) -> LatentSpace:
    """The :class:`LatentSpace` of a pipeline: its scheduler config's schedule and prediction type, and its VAE
    (None: pixel space with ``channels`` channels). ``schedule``: the alpha_bar table when the caller already
    holds the one its model trains on (a fine-tune computes it in float64), instead of the config's."""
    if vae is not None:
        channels = int(vae.config.latent_channels)
    return LatentSpace(
        alphas_cumprod(sched) if schedule is None else schedule,
        sched.get("prediction_type", "epsilon"),
        channels,
        None if vae is None else float(vae.config.scaling_factor),
        None if vae is None else getattr(vae.config, "_name_or_path", None) or f"{model_name(ref)}/vae",
    )


def load_vae(ref: str, index: dict, dtype: torch.dtype | None, what: str = "model") -> torch.nn.Module | None:
    """The pipeline's VAE, frozen and in eval mode, or None when it has none (pixel space)."""
    if component_class(index, "vae") is None:
        return None
    vae = load_component(ref, index, "vae", dtype, what).eval().requires_grad_(False)
    return vae


def load_network(
    ref: str, index: dict, name: str, sched: dict, dtype: torch.dtype | None, what: str, channels: str = "in_channels"
) -> tuple[Any, torch.nn.Module | None, LatentSpace]:
    """A pipeline's denoising network (component ``name``), its VAE (None: pixel space) and their
    :class:`LatentSpace`; ``channels`` names the network config's latent width (a pixel-space model's only)."""
    net = load_component(ref, index, name, dtype, what)
    vae = load_vae(ref, index, dtype, what)
    return net, vae, latent_space(ref, sched, vae, int(getattr(net.config, channels)))
