"""DynamiCrafter / VideoCrafter1: ``priorswap convert`` (released ``.ckpt`` -> a safetensors folder) and loading.

A converted folder holds ``model_index.json``, ``config.json`` (the architecture read from the upstream YAML plus
the OpenCLIP tower configs), ``unet.safetensors``, ``text_encoder.safetensors``, ``vae/`` (a diffusers
``AutoencoderKL`` folder) and, for DynamiCrafter, ``image_encoder.safetensors`` and ``image_proj.safetensors``.
It loads without unpickling anything. ``--model`` / ``--prior`` take such a folder, a released ``.ckpt`` or a hub
id (``Doubiiu/DynamiCrafter``, ``VideoCrafter/Text2Video-512``); the last two are converted once into
``~/.cache/priorswap/converted`` (written whole or not at all) and read from there afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL
from huggingface_hub import hf_hub_download
from safetensors.torch import save_file

from ..core.hub import cached, fetch_error, unreachable_reason
from ..errors import PriorswapError
from ..files import atomic_dir
from .checkpoint import check_schedule, load_safetensors_strict, load_strict, looks_like, read_state_dict, split
from .config import VideoModelConfig, read_config, released_config_path
from .ddim import alphas_cumprod
from .encoders import OpenCLIPImageEncoder, OpenCLIPTextEncoder, build_openclip, openclip_config
from .resampler import Resampler, ResamplerConfig
from .unet3d import UNet3D
from .vae import ldm_vae_to_diffusers

FORMAT = 1
CLASS_NAMES = {"dynamicrafter": "DynamiCrafterPipeline", "videocrafter": "VideoCrafterPipeline"}
HUB_CHECKPOINTS = {  # hub id -> (file, flavour of the released config)
    "Doubiiu/DynamiCrafter": ("model.ckpt", "dynamicrafter"),
    "VideoCrafter/Text2Video-512": ("model.ckpt", "videocrafter"),
}
CACHE = os.path.join("~", ".cache", "priorswap", "converted")


@dataclass
class VideoModel:
    """The networks of one converted model (``image_encoder`` / ``resampler`` only for DynamiCrafter)."""

    kind: str  # "dynamicrafter" or "videocrafter"
    config: VideoModelConfig
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module | None
    image_encoder: torch.nn.Module | None
    resampler: torch.nn.Module | None
    ref: str
    null_text: torch.Tensor | None = None  # its text encoder's "" embedding, once computed (pipeline.null_text_of)

    def free_encoders(self) -> None:
        """Drop the text and image encoders once the prompt, ``""`` and the images are embedded."""
        self.text_encoder = self.image_encoder = self.resampler = None


# -- building the networks from a config ---------------------------------------------------------------
def build_networks(cfg: VideoModelConfig, text_clip: dict, image_clip: dict | None) -> dict[str, torch.nn.Module]:
    """Randomly initialised networks of ``cfg`` (weights come next, strictly)."""
    nets: dict[str, torch.nn.Module] = {
        "unet": UNet3D(cfg.unet),
        "text_encoder": OpenCLIPTextEncoder(build_openclip(text_clip), cfg.text.layer),
    }
    if cfg.flavour == "dynamicrafter":
        nets["image_encoder"] = OpenCLIPImageEncoder(build_openclip(image_clip))
        nets["image_proj"] = Resampler(ResamplerConfig(**cfg.resampler))
    return nets


def convert(ckpt: str, out: str, flavour: str, config: str | None = None, openclip_file: str | None = None) -> str:
    """Convert a released checkpoint into a safetensors folder at ``out`` (written whole or not at all)."""
    cfg = read_config(config or released_config_path(flavour))
    if cfg.flavour != flavour:
        raise PriorswapError(f"--config describes a {cfg.flavour} model, not {flavour}")
    text_clip = openclip_config(cfg.text.arch, openclip_file)
    image_clip = openclip_config(cfg.image.arch, openclip_file) if cfg.image is not None else None
    sd = read_state_dict(ckpt)
    kind_seen = looks_like(sd)
    if flavour not in kind_seen.lower():
        raise PriorswapError(f"checkpoint {ckpt!r} looks like {kind_seen}, not a {flavour} checkpoint")
    check_schedule(sd, alphas_cumprod(cfg), ckpt)
    parts = split(sd, ckpt)
    nets = build_networks(cfg, text_clip, image_clip)
    for name, net in nets.items():
        load_strict(net, parts[name], name.replace("_", " "), ckpt, sd)
    leftover = [n for n in ("image_encoder", "image_proj") if parts[n] and n not in nets]
    if leftover:
        raise PriorswapError(f"checkpoint {ckpt!r} has {leftover[0]} weights, which a {flavour} model has not")
    vae = ldm_vae_to_diffusers(parts["vae"], cfg.ddconfig, cfg.scale_factor)
    with atomic_dir(out) as tmp:
        for name, net in nets.items():
            state = {k: v.contiguous() for k, v in net.state_dict().items()}
            save_file(state, os.path.join(tmp, f"{name}.safetensors"), metadata={"format": "pt"})
        vae.save_pretrained(os.path.join(tmp, "vae"))
        meta = {
            "format": FORMAT,
            "model": cfg.to_json(),
            "text_openclip": text_clip,
            "image_openclip": image_clip,
            "source": os.path.basename(ckpt),
        }
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(meta, f, indent=2)
        with open(os.path.join(tmp, "model_index.json"), "w") as f:
            json.dump({"_class_name": CLASS_NAMES[flavour], "_priorswap_format": FORMAT}, f, indent=2)
    return out


# -- loading --------------------------------------------------------------------------------------------
def _converted_cache(ckpt: str, flavour: str) -> str:
    st = os.stat(ckpt)
    key = hashlib.sha256(f"{os.path.abspath(ckpt)}|{st.st_size}|{st.st_mtime_ns}|{flavour}".encode()).hexdigest()[:16]
    return os.path.join(os.path.expanduser(CACHE), f"{flavour}-{key}")


def resolve(ref: str, flavour: str, what: str) -> str:
    """A converted folder for ``ref``: the folder itself, or the cached conversion of a ``.ckpt`` or hub id."""
    ref = os.path.expanduser(str(ref))
    if os.path.isdir(ref):
        return ref
    if os.path.isfile(ref):
        ckpt = ref
    elif ref in HUB_CHECKPOINTS:
        ckpt = _download(ref, HUB_CHECKPOINTS[ref][0], what)
        if HUB_CHECKPOINTS[ref][1] != flavour:
            raise PriorswapError(f"{what} {ref!r} is a {HUB_CHECKPOINTS[ref][1]} model, not {flavour}")
    else:
        raise PriorswapError(
            f"{what} {ref!r} does not exist; expected a folder written by `priorswap convert {flavour}`, a released "
            f".ckpt, or one of the hub ids {', '.join(HUB_CHECKPOINTS)}"
        )
    cached = _converted_cache(ckpt, flavour)
    if not os.path.isdir(cached):
        print(f"priorswap: converting {ckpt} once into {cached} (safetensors; later runs load that)")
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        convert(ckpt, cached, flavour)
    return cached


def _download(repo: str, filename: str, what: str) -> str:
    hint = (
        f"on a machine with internet run `hf download {repo} {filename} --local-dir DIR` and pass "
        f"DIR/{filename} (or its `priorswap convert` folder)"
    )
    if not cached(repo, filename):
        reason = unreachable_reason()
        if reason:
            raise PriorswapError(f"{what} {repo!r} is not in the local hub cache, and {reason}; {hint}")
    try:
        return hf_hub_download(repo, filename)
    except Exception as e:  # noqa: BLE001 - classified: offline, gated, missing
        raise fetch_error(repo, what, filename, e) from None


def peek_config(ref: str) -> VideoModelConfig | None:
    """The architecture of a converted folder without loading its weights (None for a .ckpt or hub id)."""
    path = os.path.join(os.path.expanduser(str(ref)), "config.json")
    try:
        with open(path) as f:
            return VideoModelConfig.from_json(json.load(f)["model"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_video_model(
    ref: str, flavour: str, what: str = "model", dtype: torch.dtype | None = None, device: torch.device | str = "cpu"
) -> VideoModel:
    """A converted folder, released ``.ckpt`` or hub id of ``flavour`` ("dynamicrafter" or "videocrafter")."""
    folder = resolve(ref, flavour, what)
    try:
        with open(os.path.join(folder, "config.json")) as f:
            meta = json.load(f)
        with open(os.path.join(folder, "model_index.json")) as f:
            index = json.load(f)
    except (OSError, ValueError):
        raise PriorswapError(
            f"{what} {ref!r} is not a folder written by `priorswap convert` (no readable config.json / model_index.json)"
        ) from None
    seen = {v: k for k, v in CLASS_NAMES.items()}.get(index.get("_class_name"))
    if seen != flavour:
        raise PriorswapError(f"{what} {ref!r} is a {seen or index.get('_class_name')} folder, not {flavour}")
    if meta.get("format") != FORMAT:
        raise PriorswapError(f"{what} {ref!r} was converted by another priorswap version; convert it again")
    try:
        cfg = VideoModelConfig.from_json(meta["model"])
    except (KeyError, TypeError, ValueError):
        raise PriorswapError(f"{what} {ref!r} was converted by another priorswap version; convert it again") from None
    nets = build_networks(cfg, meta["text_openclip"], meta.get("image_openclip"))
    for name, net in nets.items():
        path = os.path.join(folder, f"{name}.safetensors")
        if not os.path.isfile(path):
            raise PriorswapError(f"{what} {ref!r} lacks {name}.safetensors; convert it again")
        net.eval().requires_grad_(False).to(device=device, dtype=dtype)
        load_safetensors_strict(net, path, name.replace("_", " "))
    vae = AutoencoderKL.from_pretrained(os.path.join(folder, "vae"), torch_dtype=dtype).eval().requires_grad_(False)
    return VideoModel(
        flavour,
        cfg,
        nets["unet"],
        vae.to(device),
        nets["text_encoder"],
        nets.get("image_encoder"),
        nets.get("image_proj"),
        ref,
    )
