"""What ``priorswap fit`` checks from the recipe alone, before any dataset is read or any weights load.

A pixel-space DiT takes images of exactly its own channel count and size; a latent DiT takes what its VAE encodes,
at ``sample_size`` times the VAE's downscale. Both are in the models' ``config.json`` files, so a mismatch (RGB
photos for the grey demo base, 256 px for a 32 px model) is refused here in one line naming the settings to change,
instead of failing at the first training step after the model has loaded. ``channels: auto`` is resolved here to
the model's channel count. Models whose config cannot be read without the network (a hub id not in the local
cache) are left to the model's own loading.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from dataclasses import dataclass

from huggingface_hub import try_to_load_from_cache

from ..errors import PriorswapError
from ..launch import is_launch_rank_zero
from ..shipped import packaged

FLAG = "--data.init_args."


@dataclass
class ModelInput:
    """What the model takes: image channels and side (None: not known without loading it), and how it says so."""

    channels: int | None
    resolution: int | None
    how: str


def check_model_and_data(cfg) -> None:
    """Packaged model folders found from any working folder; the data's images checked against the model."""
    model = cfg.get("model")
    if model is None:
        return
    shown = model.get("pretrained") or "model"  # the name the user wrote, for the error
    model.pretrained, model.vae = packaged(model.get("pretrained")), packaged(model.get("vae"))
    for callback in (cfg.get("trainer") or {}).get("callbacks") or []:
        args = callback.get("init_args") if hasattr(callback, "get") else None
        if args is not None and isinstance(args.get("prior"), str):
            args.prior = packaged(args.prior)
    data = cfg.get("data")
    args = data.get("init_args") if data is not None and hasattr(data, "get") else None
    if args is None or "channels" not in args or "resolution" not in args:
        return  # not one of priorswap's image datamodules: it says nothing about its images
    want = model_input(model)
    if args.channels == "auto":
        if want.channels is None:
            return
        args.channels = want.channels
    fixes = []
    if want.channels is not None and int(args.channels) != want.channels:
        fixes.append(
            (f"{want.channels}-channel ({'grey' if want.channels == 1 else 'RGB'})", "channels", want.channels)
        )
    if want.resolution is not None and int(args.resolution) != want.resolution:
        fixes.append((f"{want.resolution} px", "resolution", want.resolution))
    if fixes:
        takes = " ".join(what for what, _, _ in fixes)
        gives = ", ".join(f"{name} {args[name]}" for _, name, _ in fixes)
        flags = " ".join(f"{FLAG}{name} {value}" for _, name, value in fixes)
        auto = " (or channels auto: the model's)" if any(name == "channels" for _, name, _ in fixes) else ""
        raise PriorswapError(
            f"model {shown} takes {takes} images ({want.how}) but the datamodule gives {gives}; set {flags}{auto}"
        )


def model_input(model) -> ModelInput:
    """The images ``model`` (the fit config's model namespace) trains on, read from config files only."""
    if model.get("pretrained"):
        net = read_config(model.pretrained, "transformer")
        if net is None:
            return ModelInput(None, None, "")
        in_channels, size = net.get("in_channels"), net.get("sample_size")
    else:
        in_channels, size = model.get("in_channels"), model.get("sample_size")
    if not model.get("vae"):
        return ModelInput(in_channels, size, f"pixel space, in_channels {in_channels}, sample_size {size}")
    vae = read_config(model.vae, "vae")
    if vae is None:
        return ModelInput(None, None, "")
    latent = vae.get("latent_channels")
    if in_channels is not None and latent is not None and latent != in_channels:
        raise PriorswapError(
            f"model.vae {model.vae} makes {latent}-channel latents but the DiT takes {in_channels} channels; "
            "use the VAE the DiT was trained with"
        )
    factor = 2 ** (len(vae.get("block_out_channels") or [0]) - 1)
    resolution = None if size is None else size * factor
    return ModelInput(
        vae.get("in_channels", 3), resolution, f"latents of {model.vae}: sample_size {size} x {factor} px"
    )


def read_config(ref: str, component: str) -> dict | None:
    """``<ref>/<component>/config.json`` (or ``<ref>/config.json`` of a lone component) from a local folder or
    the local hub cache; None when it is not there without the network."""
    ref = os.path.expanduser(str(ref))
    names = (f"{component}/config.json", "config.json")
    for name in names:
        path = os.path.join(ref, name) if os.path.isdir(ref) else _hub_cached(ref, name)
        if path and os.path.isfile(path):
            with open(path) as f:
                found = json.load(f)
            if name == "config.json" and component == "transformer" and "in_channels" not in found:
                return None
            return found
    return None


def _hub_cached(repo: str, name: str) -> str | None:
    if os.path.exists(repo) or repo.count("/") != 1:
        return None

    found = try_to_load_from_cache(repo, name)
    return found if isinstance(found, str) else None


# -- a failed start leaves no run folder -------------------------------------------------------------
def new_run_folder(trainer) -> str | None:
    """The log folder this fit is about to create, or None when it exists already (a resumed or named run: never
    ours to remove) or this is not the launching process. Read before fit: the logger makes it on first use."""
    folder = getattr(trainer.logger, "log_dir", None) if trainer.logger is not None else None
    if not folder or not is_launch_rank_zero() or os.path.exists(folder):
        return None
    return os.path.abspath(folder)


def remove_failed_start(trainer, folder: str | None, made: str | None = None) -> None:
    """Remove ``folder`` (from :func:`new_run_folder`) when the fit failed before its first step and saved no
    checkpoint: it holds only an empty event file and config.yaml, and would pass for a run to resume. Its parents
    up to ``made`` (the highest one the fit created) go too, while they are empty."""
    if not folder or trainer.global_step > 0 or not os.path.isdir(folder):
        return
    if glob.glob(os.path.join(glob.escape(folder), "**", "*.ckpt"), recursive=True):
        return
    shutil.rmtree(folder, ignore_errors=True)
    parent = os.path.dirname(folder)
    while made and parent.startswith(made) and os.path.isdir(parent) and not os.listdir(parent):
        os.rmdir(parent)  # empty, and made by this fit (a concurrent run's files would keep it)
        parent = os.path.dirname(parent)


def first_missing(folder: str | None) -> str | None:
    """The highest ancestor of ``folder`` (or itself) that does not exist yet."""
    if not folder:
        return None
    missing = None
    while not os.path.exists(folder):
        missing, folder = folder, os.path.dirname(folder)
    return missing
