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

from ..errors import PriorswapError
from ..shipped import packaged
from .denoisers import LatentSpace

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
    from diffusers import DiffusionPipeline

    from .hub import cached, offline_hint, unreachable_reason

    if not cached(ref, "model_index.json"):
        reason = unreachable_reason()
        if reason:
            raise PriorswapError(
                f"{what} {ref!r} is not a local folder, not in the hub cache, and {reason}; {offline_hint(ref)}"
            )
    try:
        return dict(DiffusionPipeline.load_config(ref))
    except Exception as e:  # noqa: BLE001 - classified below
        raise fetch_error(ref, what, "model_index.json", e) from None


def model_name(ref: str) -> str:
    """How errors name a model: the full path of a local folder (export folders often share a basename), else its hub id."""
    ref = os.path.expanduser(str(ref))
    return os.path.abspath(ref) if os.path.isdir(ref) else ref


def hub_problem(ref: str, error: BaseException) -> str | None:
    """What kept ``ref`` from being fetched (offline, unreachable, gated, not found, not logged in), in words,
    or None when the hub answered and the file is simply not there (or the error is not the hub's)."""
    from huggingface_hub import errors as hf

    from .hub import offline_hint

    chain, e = [], error
    while e is not None and e not in chain:  # diffusers and transformers re-raise hub errors as OSError
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if isinstance(e, hf.OfflineModeIsEnabled):
            return f"is not in the local hub cache and HF_HUB_OFFLINE is set; {offline_hint(ref)}"
        if isinstance(e, hf.GatedRepoError):
            return f"is a gated hub repository: accept its terms at https://huggingface.co/{ref}, then log in with `hf auth login`"
        if isinstance(e, hf.RevisionNotFoundError):
            return "has no such revision on the hub"
        if isinstance(e, hf.RepositoryNotFoundError):
            return "is not on the hub, or is private (log in with `hf auth login` if you have access)"
        if isinstance(e, hf.HfHubHTTPError) and getattr(e.response, "status_code", None) in (401, 403):
            return "was refused by the hub (not logged in, or no access): log in with `hf auth login`"
    for e in chain:
        if isinstance(e, hf.LocalEntryNotFoundError) or type(e).__name__ in (
            "ConnectError",
            "ConnectTimeout",
            "ConnectionError",
        ):
            return f"is not in the local hub cache and the hub cannot be reached; {offline_hint(ref)}"
    return None


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def fetch_error(ref: str, what: str, file: str, e: BaseException) -> PriorswapError:
    """A one-line error for a failed read of ``file`` from ``ref``: the hub's problem if there was one, a missing
    file if that is what it was, else the error itself."""
    problem = hub_problem(ref, e)
    if problem:
        return PriorswapError(f"{what} {ref!r} {problem}")
    if missing_file(e):
        return PriorswapError(f"{what} {ref!r} has no {file}")
    return PriorswapError(f"{what} {ref!r}: cannot read {file} ({first_line(e)})")


def missing_file(error: BaseException) -> bool:
    from huggingface_hub import errors as hf

    e, seen = error, []
    while e is not None and e not in seen:
        if isinstance(e, (hf.EntryNotFoundError, FileNotFoundError)):
            return True
        seen.append(e)
        e = e.__cause__ or e.__context__
    text = str(error)
    return "does not appear to have a file named" in text or "no file named" in text


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
    from diffusers import DDPMScheduler

    file = "scheduler/scheduler_config.json"
    if os.path.isdir(ref) and not os.path.isfile(os.path.join(ref, file)):
        raise PriorswapError(f"{what} folder {ref!r} has no {file}")
    try:
        return dict(DDPMScheduler.load_config(ref, subfolder="scheduler"))
    except Exception as e:  # noqa: BLE001 - classified by fetch_error
        raise fetch_error(ref, what, file, e) from None


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


def _vae(ref: str, index: dict, dtype, what: str):
    if component_class(index, "vae") is None:
        return None
    vae = load_component(ref, index, "vae", dtype, what).eval().requires_grad_(False)
    return vae


def load_dit(
    ref: str, what: str = "model", dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> Loaded:
    """A class-conditional DiT pipeline folder (``DiTPipeline.save_pretrained``, VAE optional) or hub id, or a DiT
    LoRA folder (``priorswap.toolkit.dit.lora_files``: loaded on the base it names)."""
    from ..dit.denoiser import DiTDenoiser
    from ..dit.lora_files import is_lora_folder, load_dit_lora

    ref = packaged(ref)  # toolkit/assets/...: the package's own, from any working folder
    if is_lora_folder(ref):
        return load_dit_lora(ref, None, what, dtype, device)
    index = read_model_index(ref, what)
    if component_class(index, "transformer") != "DiTTransformer2DModel":
        raise PriorswapError(
            f"{what} {ref!r} is a {index.get('_class_name', 'pipeline')} without a DiTTransformer2DModel; expected a DiT pipeline"
        )
    sched = scheduler_config(ref, what)
    transformer = load_component(ref, index, "transformer", dtype, what)
    vae = _vae(ref, index, dtype, what)
    space = latent_space(ref, sched, vae, int(transformer.config.in_channels))
    den = DiTDenoiser(transformer, space, name=model_name(ref))
    den.to(device)
    if vae is not None:
        vae.to(device)
    return Loaded(den, sched, vae, read_id2label(ref, index), ref)


def load_prior(ref: str, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> Loaded:
    """Any supported unconditional prior: a DiT, an SD-family UNet pipeline, or PixArt-alpha.

    The text encoder of a text-to-image prior runs once on the empty prompt and is then dropped.
    """
    from ..unet.text_prior import PixArtPrior, UNetPrior, empty_prompt_embedding

    what = "prior"
    ref = packaged(ref)
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
    name = model_name(ref)
    if transformer_cls == "PixArtTransformer2DModel":
        emb, mask = empty_prompt_embedding(tokenizer, encoder, max_length=120)  # PixArt pads T5 to 120 tokens
        net = load_component(ref, index, "transformer", dtype, what)
        den = PixArtPrior(net, emb, mask, latent_space(ref, sched, vae, int(net.config.in_channels)), name)
    else:
        emb, _ = empty_prompt_embedding(tokenizer, encoder)
        net = load_component(ref, index, "unet", dtype, what)
        den = UNetPrior(net, emb, latent_space(ref, sched, vae, int(net.config.out_channels)), name)
    del encoder  # only the empty prompt is ever needed (docs/method.md trap 6)
    den.to(device)
    return Loaded(den, sched, vae, {}, ref)


def read_id2label(ref: str, index: dict | None = None) -> dict[int, str]:
    """Class names: ``id2label.json`` next to an exported fine-tune, else the ``id2label`` that DiTPipeline keeps in
    ``model_index.json`` (the hub's DiT-XL-2 has ImageNet's there), else none."""
    path = os.path.join(os.path.expanduser(str(ref)), "id2label.json")
    if os.path.isfile(path):
        with open(path) as f:
            return {int(k): str(v) for k, v in json.load(f).items()}
    return {int(k): str(v) for k, v in ((index or {}).get("id2label") or {}).items()}
