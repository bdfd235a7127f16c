"""Load the SD-derived fine-tunes (InstructPix2Pix, Zero-1-to-3, Versatile Diffusion).

- ``load_ip2p`` / ``load_zero123`` / ``load_vd``: a hub id or a local diffusers folder -> a :class:`Conditional`
  (the wrapped denoiser, its VAE and the encoders that turn user inputs into conditions). Each null condition
  (docs/method.md trap 6) is computed here once; call :meth:`Conditional.free_encoders` once the conditions are built.
- a prior for them is loaded by ``priorswap.toolkit.priors.load_unet_prior`` (SD, PixArt, DiT, or one of these fine-tunes
  used with its own null, which reproduces vanilla CFG exactly).
Running them (conditions, then vanilla and swapped rows) is :mod:`priorswap.toolkit.unet.run`.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file

from ..core.hub import first_line, hub_problem, missing_file
from ..core.loading import (
    Loaded,
    component_class,
    latent_space,
    load_component,
    model_name,
    read_model_index,
    scheduler_config,
)
from ..errors import PriorswapError
from ..paper import PAPER
from .ip2p import IP2PDenoiser, prompt_embedding
from .versatile import VersatileDenoiser, grey_null_embedding
from .zero123 import CLIP_MEAN, CLIP_STD, Zero123Denoiser

# where each model lives on the hub (named in "missing weights" errors)
HUB_IDS = {kind: PAPER[kind].model for kind in ("ip2p", "zero123", "vd")}
KIND_NAMES = {"ip2p": "InstructPix2Pix", "zero123": "Zero-1-to-3", "vd": "Versatile Diffusion"}
COMPONENTS = {
    "ip2p": ("unet", "vae", "text_encoder", "tokenizer"),
    "zero123": ("unet", "vae", "image_encoder", "cc_projection"),
    "vd": ("image_unet", "vae", "image_encoder", "image_feature_extractor"),
}


@dataclass
class Conditional(Loaded):
    """A fine-tuned conditional model: :class:`priorswap.toolkit.core.loading.Loaded` plus the encoders for its conditions."""

    kind: str = ""
    encoders: dict[str, Any] = field(default_factory=dict)

    def free_encoders(self) -> None:
        """Drop the condition encoders (CLIP text / vision, cc_projection); the VAE is kept for decoding."""
        self.encoders.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def detect_kind(index: dict) -> str | None:
    """'ip2p', 'zero123', 'vd' or None, from a pipeline's model_index.json."""
    if "cc_projection" in index:
        return "zero123"
    if component_class(index, "image_unet") is not None:
        return "vd"
    if index.get("_class_name") == "StableDiffusionInstructPix2PixPipeline":
        return "ip2p"
    return None


def _check_kind(ref: str, index: dict, kind: str, what: str) -> None:
    found = detect_kind(index)
    if found != kind:
        seen = KIND_NAMES.get(found, index.get("_class_name", "an unknown pipeline"))
        raise PriorswapError(f"{what} {ref!r} is {seen}, not {KIND_NAMES[kind]} (e.g. {HUB_IDS[kind]})")
    if os.path.isdir(ref):  # missing weights on an offline machine: say what to fetch and where
        for name in COMPONENTS[kind]:
            sub = os.path.join(ref, name)
            has_weights = glob.glob(os.path.join(sub, "*.safetensors")) + glob.glob(os.path.join(sub, "*.bin"))
            needs_weights = name not in ("tokenizer", "image_feature_extractor")
            if not os.path.isdir(sub) or (needs_weights and not has_weights):
                raise PriorswapError(
                    f"{what} folder {ref!r} lacks its {name!r} {'weights' if needs_weights else 'files'}; download the "
                    f"whole pipeline (`hf download {HUB_IDS[kind]} --local-dir {ref}`) on a machine with internet and copy it here"
                )


def _open(ref: str, kind: str, what: str) -> tuple[dict, dict]:
    """(model_index.json, scheduler config) of a pipeline checked to be ``kind``."""
    index = read_model_index(ref, what)
    _check_kind(ref, index, kind, what)
    return index, scheduler_config(ref, what)


def _space(ref: str, sched: dict, vae):
    return latent_space(ref, sched, vae, int(vae.config.latent_channels))


def _finish(den, ref: str, sched: dict, vae, kind: str, encoders: dict, device) -> Conditional:
    den.to(device)
    vae.to(device)
    for m in encoders.values():
        if isinstance(m, torch.nn.Module):
            m.to(device).eval().requires_grad_(False)
    return Conditional(den, sched, vae, {}, ref, kind, encoders)


def load_ip2p(ref: str, dtype: torch.dtype | None = None, device="cpu", what: str = "model") -> Conditional:
    """InstructPix2Pix (``timbrooks/instruct-pix2pix`` layout); null text = CLIP("")."""
    index, sched = _open(ref, "ip2p", what)
    tokenizer = load_component(ref, index, "tokenizer", None, what)
    text_encoder = load_component(ref, index, "text_encoder", dtype, what).to(device).eval()
    null_text = prompt_embedding(tokenizer, text_encoder, [""]).cpu()  # (1, L, D)
    vae = load_component(ref, index, "vae", dtype, what).eval().requires_grad_(False)
    den = IP2PDenoiser(
        load_component(ref, index, "unet", dtype, what), null_text, _space(ref, sched, vae), model_name(ref)
    )
    return _finish(den, ref, sched, vae, "ip2p", {"tokenizer": tokenizer, "text_encoder": text_encoder}, device)


def load_cc_projection(ref: str, dtype: torch.dtype | None = None, what: str = "model") -> torch.nn.Linear:
    """Zero-1-to-3's ``cc_projection`` (Linear 772 -> 768) from ``ref/cc_projection/`` as a plain ``nn.Linear``.

    The hub folders store it as a custom ``CCProjection`` module (keys ``projection.weight/bias``), which
    diffusers cannot build without the community pipeline; the weights are read directly instead.
    """
    names = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
    path = None
    if os.path.isdir(ref):
        path = next((p for p in (os.path.join(ref, "cc_projection", n) for n in names) if os.path.isfile(p)), None)
    else:
        for n in names:
            try:
                path = hf_hub_download(ref, n, subfolder="cc_projection")
                break
            except Exception as e:  # noqa: BLE001 - offline, gated, not logged in...: say which
                problem = hub_problem(ref, e)
                if problem is not None:
                    raise PriorswapError(f"{what} {ref!r} {problem}") from None
                if missing_file(e):  # the hub answered: this format is not there, try the next
                    continue
                raise PriorswapError(f"{what} {ref!r}: cannot fetch cc_projection/{n} ({first_line(e)})") from None
    if path is None:
        raise PriorswapError(
            f"{what} {ref!r} has no cc_projection weights; download the whole pipeline "
            f"(`hf download {HUB_IDS['zero123']} --local-dir DIR`) and pass DIR"
        )
    if path.endswith(".safetensors"):
        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("projection."): v for k, v in state.items()}
    out_dim, in_dim = state["weight"].shape
    proj = torch.nn.Linear(in_dim, out_dim)
    proj.load_state_dict(state)
    return proj.to(dtype or torch.float32).eval().requires_grad_(False)


def load_zero123(ref: str, dtype: torch.dtype | None = None, device="cpu", what: str = "model") -> Conditional:
    """Zero-1-to-3 in the diffusers layout of ``kxic/zero123-xl`` (unet, vae, image_encoder, cc_projection)."""
    index, sched = _open(ref, "zero123", what)
    vae = load_component(ref, index, "vae", dtype, what).eval().requires_grad_(False)
    den = Zero123Denoiser(load_component(ref, index, "unet", dtype, what), _space(ref, sched, vae), model_name(ref))
    encoders: dict[str, Any] = {
        "image_encoder": load_component(ref, index, "image_encoder", dtype, what),
        "cc_projection": load_cc_projection(ref, dtype, what),
        "mean": CLIP_MEAN,
        "std": CLIP_STD,
    }
    if component_class(index, "feature_extractor") is not None:  # only its normalisation constants are used
        fe = load_component(ref, index, "feature_extractor", None, what)
        encoders["mean"], encoders["std"] = tuple(fe.image_mean), tuple(fe.image_std)
    return _finish(den, ref, sched, vae, "zero123", encoders, device)


def load_vd(ref: str, dtype: torch.dtype | None = None, device="cpu", what: str = "model") -> Conditional:
    """Versatile Diffusion (full ``shi-labs/versatile-diffusion`` or an image-variation pipeline folder)."""
    index, sched = _open(ref, "vd", what)
    extractor = load_component(ref, index, "image_feature_extractor", None, what)
    encoder = load_component(ref, index, "image_encoder", dtype, what).to(device).eval()
    null = grey_null_embedding(extractor, encoder).cpu()  # (1, T, D)
    vae = load_component(ref, index, "vae", dtype, what).eval().requires_grad_(False)
    den = VersatileDenoiser(
        load_component(ref, index, "image_unet", dtype, what), null, _space(ref, sched, vae), model_name(ref)
    )
    return _finish(den, ref, sched, vae, "vd", {"feature_extractor": extractor, "image_encoder": encoder}, device)


LOADERS = {"ip2p": load_ip2p, "zero123": load_zero123, "vd": load_vd}
