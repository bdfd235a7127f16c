"""Reading a released DynamiCrafter / VideoCrafter ``.ckpt``: weights only, every key accounted for.

The releases are pickled Lightning checkpoints. They are read with ``torch.load(weights_only=True)``, which
unpickles tensors and plain containers and nothing else; a file that needs more (code objects, custom classes) is
refused in one line. Keys are split by upstream's module prefixes; a key under no known prefix, or a module whose
keys are missing, is an error, so a checkpoint of another model is named rather than half-loaded.
"""

from __future__ import annotations

import os

import torch
from safetensors import safe_open

from ..errors import PriorswapError

PREFIXES = {  # upstream attribute of LatentDiffusion -> component here
    "model.diffusion_model.": "unet",
    "first_stage_model.": "vae",
    "cond_stage_model.model.": "text_encoder",
    "embedder.model.": "image_encoder",
    "image_proj_model.": "image_proj",
}
SCHEDULE_BUFFERS = (  # register_schedule's buffers; recomputed from the YAML and checked, not kept
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)
RENAMES = {"framestride_embed": "fps_embedding"}  # DynamiCrafter-256's name; upstream inference.py renames it too


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise PriorswapError(f"checkpoint {path!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:  # zip archive problems, truncated files; mmap needs the zip format
        if "mmap" in str(e):
            obj = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise PriorswapError(f"checkpoint {path!r} cannot be read ({str(e).splitlines()[0][:150]})") from None
    except Exception as e:  # noqa: BLE001 - UnpicklingError for anything beyond plain weights
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise PriorswapError(
            f"checkpoint {path!r} needs more than plain weights to load ({msg}); refusing to run pickled code"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PriorswapError(f"checkpoint {path!r} holds no state_dict of tensors")
    return obj


def looks_like(sd: dict[str, torch.Tensor]) -> str:
    """What a checkpoint seems to be, in words, from its keys (for error messages)."""
    w = sd.get("model.diffusion_model.input_blocks.0.0.weight")
    temporal = any(".temopral_conv." in k or ".init_attn." in k for k in sd)
    if w is None:
        return "not a latent diffusion checkpoint (no model.diffusion_model.input_blocks)"
    if not temporal:
        return "an image (2D) latent diffusion checkpoint such as Stable Diffusion"
    if "scale_arr" in sd:
        return "a DynamiCrafter-512/1024-style checkpoint (v-prediction with rescaled latents)"
    fs = any(".framestride_embed." in k or ".fps_embedding." in k for k in sd)
    if any(k.startswith("embedder.model.") for k in sd):
        return f"a DynamiCrafter checkpoint ({w.shape[1]} input channels{', frame-stride input' if fs else ''})"
    if fs:
        return "a VideoCrafter checkpoint with an fps input (VideoCrafter2 or the 1024 model)"
    return f"a VideoCrafter text-to-video checkpoint ({w.shape[1]} input channels)"


def split(sd: dict[str, torch.Tensor], path: str) -> dict[str, dict[str, torch.Tensor]]:
    """Component -> its state dict (prefix stripped, upstream renames applied); unknown keys are an error."""
    parts: dict[str, dict[str, torch.Tensor]] = {name: {} for name in PREFIXES.values()}
    for key, value in sd.items():
        if key in SCHEDULE_BUFFERS:
            continue
        for prefix, part in PREFIXES.items():
            if key.startswith(prefix):
                sub = key[len(prefix) :]
                for old, new in RENAMES.items():
                    sub = sub.replace(old, new)
                parts[part][sub] = value
                break
        else:
            raise PriorswapError(
                f"checkpoint {path!r} has key {key!r}, which no released model has; it looks like {looks_like(sd)}"
            )
    return parts


def check_schedule(sd: dict[str, torch.Tensor], expected: torch.Tensor, path: str) -> None:
    ac = sd.get("alphas_cumprod")
    if ac is not None and (ac.shape != expected.shape or not torch.allclose(ac.float(), expected, rtol=0, atol=1e-6)):
        raise PriorswapError(f"checkpoint {path!r} was trained on another noise schedule than its --config describes")


def _refuse_mismatch(own: dict[str, tuple], theirs: dict[str, tuple], what: str, path: str, sd: dict | None) -> None:
    """A one-line error naming the first key or shape by which ``theirs`` (a file) differs from ``own`` (a module)."""
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    shapes = [k for k in own if k in theirs and own[k] != theirs[k]]
    if not (missing or unexpected or shapes):
        return
    if missing:
        first = f"lacks {what} key {missing[0]!r}"
    elif unexpected:
        first = f"has unexpected {what} key {unexpected[0]!r}"
    else:
        k = shapes[0]
        first = f"has {what} {k!r} of shape {theirs[k]}, the --config gives {own[k]}"
    n = len(missing) + len(unexpected) + len(shapes)
    if sd is None:
        raise PriorswapError(f"{path!r} {first} ({n} mismatches); convert the checkpoint again")
    raise PriorswapError(
        f"checkpoint {path!r} {first} ({n} mismatches); it looks like {looks_like(sd)} — is --config the one it was built from?"
    )


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in state.items()}


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, path: str, sd: dict | None) -> None:
    """``module.load_state_dict(state, strict=True)`` with a one-line error naming the first problem (``sd``: the
    whole released checkpoint, to say what it looks like; None for a converted folder's file)."""
    _refuse_mismatch(_shapes(module.state_dict()), _shapes(state), what, path, sd)
    module.load_state_dict(state, strict=True)


def load_safetensors_strict(module: torch.nn.Module, path: str, what: str) -> None:
    """Copy a converted folder's file into ``module`` one tensor at a time, casting to the module's dtype and device.

    ``load_state_dict(load_file(path))`` holds the whole file next to the module: twice a 1.4B-parameter UNet's
    5.8 GB at fp32. Here the peak is the module plus one tensor, and a bf16 module never holds fp32 weights."""
    own = module.state_dict()  # tensors sharing the parameters' storage: copy_ writes into the module
    with safe_open(path, "pt") as f:
        theirs = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        _refuse_mismatch(_shapes(own), theirs, what, path, None)
        with torch.no_grad():
            for k, v in own.items():
                v.copy_(f.get_tensor(k))
