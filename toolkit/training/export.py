"""Export a trained DiT as a diffusers pipeline folder that both ``priorswap sample dit`` and diffusers load."""

from __future__ import annotations

import copy
import json
import os

import diffusers
import torch
from diffusers import DDIMScheduler, DiTPipeline

from ..files import atomic_dir


def export_pipeline(
    transformer: torch.nn.Module, vae: torch.nn.Module | None, scheduler_config: dict, class_names: list[str], path: str
) -> str:
    """Write ``transformer`` (+ ``vae``, a DDIM scheduler on the training schedule, id2label.json) to ``path``.

    Written into a temporary sibling folder and renamed into place (an existing export is replaced only then),
    so an interrupted export never leaves a folder that looks complete. A pixel-space model (no VAE) is saved
    with ``vae: null``, which ``DiTPipeline`` cannot run but :func:`priorswap.toolkit.core.loading.load_dit` can.
    """
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_dir(path) as tmp:
        model = copy.deepcopy(transformer).float().eval()
        model = getattr(model, "_orig_mod", model)
        sched = DDIMScheduler.from_config({**scheduler_config, "clip_sample": False})
        pipe = DiTPipeline(transformer=model, vae=vae, scheduler=sched) if vae is not None else None
        if pipe is not None:
            pipe.save_pretrained(tmp, safe_serialization=True)
        else:
            model.save_pretrained(os.path.join(tmp, "transformer"), safe_serialization=True)
            sched.save_pretrained(os.path.join(tmp, "scheduler"))
            index = {
                "_class_name": "DiTPipeline",
                "_diffusers_version": _diffusers_version(),
                "transformer": ["diffusers", type(model).__name__],
                "scheduler": ["diffusers", "DDIMScheduler"],
                "vae": [None, None],
            }
            with open(os.path.join(tmp, "model_index.json"), "w") as f:
                json.dump(index, f, indent=2)
        with open(os.path.join(tmp, "id2label.json"), "w") as f:
            json.dump({str(i): name for i, name in enumerate(class_names)}, f, indent=2)
    return path


def _diffusers_version() -> str:
    return diffusers.__version__
