"""Load the SD-derived fine-tunes (InstructPix2Pix, Zero-1-to-3, Versatile Diffusion) and run them.

- ``load_ip2p`` / ``load_zero123`` / ``load_vd``: a hub id or a local diffusers folder -> a :class:`Conditional`
  (the wrapped denoiser, its VAE and the encoders that turn user inputs into conditions). Each null condition
  (docs/method.md trap 6) is computed here once; call :meth:`Conditional.free_encoders` once the conditions are built.
- a prior for them is loaded by ``priorswap.toolkit.priors.load_unet_prior`` (SD, PixArt, DiT, or one of these fine-tunes
  used with its own null, which reproduces vanilla CFG exactly).
- :class:`Offloaded`: keeps a denoiser on the CPU and moves it to the GPU only while it runs.
- :func:`conditional_samples`: a loaded fine-tune (and prior) through ``priorswap.toolkit.core.sampling.sample``, optionally offloaded.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

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
    from .ip2p import IP2PDenoiser, prompt_embedding

    index = read_model_index(ref, what)
    _check_kind(ref, index, "ip2p", what)
    sched = scheduler_config(ref, what)
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
        from huggingface_hub import hf_hub_download

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
        from safetensors.torch import load_file

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
    from .zero123 import CLIP_MEAN, CLIP_STD, Zero123Denoiser

    index = read_model_index(ref, what)
    _check_kind(ref, index, "zero123", what)
    sched = scheduler_config(ref, what)
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
    from .versatile import VersatileDenoiser, grey_null_embedding

    index = read_model_index(ref, what)
    _check_kind(ref, index, "vd", what)
    sched = scheduler_config(ref, what)
    extractor = load_component(ref, index, "image_feature_extractor", None, what)
    encoder = load_component(ref, index, "image_encoder", dtype, what).to(device).eval()
    null = grey_null_embedding(extractor, encoder).cpu()  # (1, T, D)
    vae = load_component(ref, index, "vae", dtype, what).eval().requires_grad_(False)
    den = VersatileDenoiser(
        load_component(ref, index, "image_unet", dtype, what), null, _space(ref, sched, vae), model_name(ref)
    )
    return _finish(den, ref, sched, vae, "vd", {"feature_extractor": extractor, "image_encoder": encoder}, device)


LOADERS = {"ip2p": load_ip2p, "zero123": load_zero123, "vd": load_vd}


# -- placement -------------------------------------------------------------------------------------
class Offloaded:
    """A denoiser whose networks live on the CPU and visit ``device`` only for their own forward pass.

    With a prior this keeps one UNet on the GPU at a time (peak ~ one model), at the cost of two
    host<->device copies per model per step. Everything else is forwarded to the wrapped denoiser.
    """

    def __init__(self, denoiser, device: torch.device | str):
        self.inner = denoiser.to("cpu")
        self.run_device = torch.device(device)

    def predict(self, x_t: Tensor, t: Tensor, conds: Sequence[Any]) -> list[Tensor]:
        self.inner.to(self.run_device)
        try:
            return self.inner.predict(x_t, t, conds)
        finally:
            self.inner.to("cpu")

    def __call__(self, x_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        return self.predict(x_t, t, [cond])[0]

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def offloaded_decoder(vae: torch.nn.Module, device) -> Callable[[Tensor], Tensor]:
    """``priorswap.toolkit.core.sampling.vae_decoder`` that moves the VAE to ``device`` only while decoding."""
    from ..core.sampling import vae_decoder

    decode = vae_decoder(vae)

    def run(latents: Tensor) -> Tensor:
        vae.to(device)
        try:
            return decode(latents)
        finally:
            vae.to("cpu")

    return run


# -- sampling glue ---------------------------------------------------------------------------------
def conditional_samples(
    model: Conditional,
    cond: Any,
    latent_hw: tuple[int, int],
    guidance,
    prior: Loaded | None = None,
    image_cond: Any = None,
    steps: int = 50,
    seed: int = 0,
    num_samples: int = 1,
    scheduler: str = "ddim",
    batch_size: int = 8,
    device="cpu",
    offload: bool = False,
    progress: bool = True,
    desc: str = "sampling",
) -> Tensor:
    """Images (N, 3, H, W) in [0, 1]; sample i starts from seed + i, so vanilla and swapped runs pair up.

    ``guidance`` is a :class:`priorswap.toolkit.core.sampling.Guidance` (Eq. 6/7, Zero-1-to-3, VD) or a
    :class:`priorswap.toolkit.core.sampling.DualGuidance` (Eq. 9, IP2P; then ``image_cond`` is the (image, null text) condition).
    ``cond`` (and ``image_cond``) may have one row, shared by every sample, or one row per sample.
    """
    from ..core.pairing import pair
    from ..core.sampling import sample, vae_decoder

    den = model.denoiser
    base = None if prior is None else pair(den, prior.denoiser, latent_hw)
    if offload:
        den, base = Offloaded(den, device), None if base is None else Offloaded(base, device)
    decode = offloaded_decoder(model.vae, device) if offload else vae_decoder(model.vae)
    return sample(
        den,
        cond if image_cond is None else (cond, image_cond),
        guidance,
        prior=base,
        seeds=[seed + i for i in range(num_samples)],
        shape=(den.latent_channels, *latent_hw),
        steps=steps,
        scheduler=scheduler,
        scheduler_config=model.scheduler_config,
        decode=decode,
        batch_size=batch_size,
        device=device,
        progress=progress,
        desc=desc,
    )
