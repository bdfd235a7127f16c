"""Priors: the model whose unconditional eps stands in for a fine-tune's (paper Eq. 7), of any family.

- :func:`load_prior`: a DiT, an SD-family UNet pipeline or PixArt-alpha, from a folder or hub id;
- :func:`load_unet_prior`: what ``load_prior`` takes, or an InstructPix2Pix / Zero-1-to-3 / Versatile Diffusion
  fine-tune used with its own null (swapped then equals vanilla);
- :func:`resolve_prior`: the ``--prior`` value of a DiT run, where ``base`` is a LoRA's own base (free).

This sits above the families: it is the one place that knows which family a prior belongs to.
"""

from __future__ import annotations

import torch

from .checks import FREE_PRIOR
from .core.loading import (
    Loaded,
    component_class,
    load_component,
    load_network,
    model_name,
    read_model_index,
    scheduler_config,
)
from .dit.load import load_dit
from .dit.lora import LoRADiTDenoiser
from .errors import PriorswapError
from .lora import BasePrior
from .shipped import packaged
from .unet.load import LOADERS, detect_kind
from .unet.text_prior import PixArtPrior, UNetPrior, empty_prompt_embedding


def load_prior(ref: str, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> Loaded:
    """Any supported unconditional prior: a DiT, an SD-family UNet pipeline, or PixArt-alpha.

    The text encoder of a text-to-image prior runs once on the empty prompt and is then dropped.
    """
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
    name = model_name(ref)
    if transformer_cls == "PixArtTransformer2DModel":
        emb, mask = empty_prompt_embedding(tokenizer, encoder, max_length=120)  # PixArt pads T5 to 120 tokens
        net, vae, space = load_network(ref, index, "transformer", sched, dtype, what)
        den = PixArtPrior(net, emb, mask, space, name)
    else:
        emb, _ = empty_prompt_embedding(tokenizer, encoder)
        net, vae, space = load_network(ref, index, "unet", sched, dtype, what, channels="out_channels")
        den = UNetPrior(net, emb, space, name)
    del encoder  # only the empty prompt is ever needed (docs/method.md trap 6)
    den.to(device)
    return Loaded(den, sched, vae, {}, ref)


def load_unet_prior(ref: str, dtype: torch.dtype | None = None, device="cpu") -> Loaded:
    """A prior for a UNet fine-tune: whatever :func:`load_prior` accepts (SD1.x/2.x, PixArt-alpha, DiT), or one of
    the UNet fine-tunes used with its own null condition (swapped then equals vanilla)."""
    kind = detect_kind(read_model_index(ref, "prior"))
    if kind is None:
        return load_prior(ref, dtype, device)
    own = LOADERS[kind](ref, dtype, device, what="prior")
    own.free_encoders()
    return own


def resolve_prior(
    model: Loaded, prior: str | None, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> Loaded | None:
    """The prior of a loaded DiT ``model``: None (vanilla CFG), ``"base"`` (a LoRA's own base, run in the same
    batched forward: :class:`priorswap.toolkit.lora.BasePrior`), or a model folder / hub id loaded in ``dtype``."""
    if prior is None:
        return None
    if prior != FREE_PRIOR:
        return load_prior(prior, dtype, device)
    den = model.denoiser
    if not isinstance(den, LoRADiTDenoiser):
        raise PriorswapError(
            f"--prior base is the base inside a LoRA fine-tune, but {den.name} is a full model (a merged LoRA is one too); "
            "give its base model's folder or hub id as --prior"
        )
    return Loaded(BasePrior(den), model.scheduler_config, None, {}, FREE_PRIOR)
