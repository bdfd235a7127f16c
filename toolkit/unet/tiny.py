"""Tiny random components for the UNet adapters, saved as real diffusers pipeline folders (no hub access).

Every builder writes a folder with ``save_pretrained`` so ``priorswap bench unet --tiny`` (and the tests) load
it back through the real loading code. Sizes are the smallest that keep every code path alive:
32 px images, a 2-level VAE (scale factor 2, so 16x16 latents) and a 2-level UNet.
The CLIP tokenizer is built from a vocab written here (docs/method.md trap 12), so nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import string

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    VersatileDiffusionImageVariationPipeline,
)
from PIL import Image
from safetensors.torch import save_file
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

IMAGE_SIZE = 32  # pixels
TEXT_LEN = 16  # tokens (CLIP uses 77)
EMBED_DIM = 32  # cross-attention width (SD1.x: 768)
SD_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


# -- single components ---------------------------------------------------------------------------
def tiny_tokenizer(folder: str):
    """A ``CLIPTokenizer`` over printable ASCII, one token per character (with and without ``</w>``)."""
    os.makedirs(folder, exist_ok=True)
    chars = [c for c in string.printable[:94]]  # the 94 printable, non-space ASCII characters
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(folder, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    return CLIPTokenizer(
        os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"), model_max_length=TEXT_LEN
    )


CLIP_LAYERS = dict(intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)  # both tiny CLIP encoders


def tiny_text_encoder(seed: int = 0):
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        hidden_size=EMBED_DIM,
        **CLIP_LAYERS,
        vocab_size=200,
        max_position_embeddings=TEXT_LEN,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModel(cfg).eval()


def tiny_image_encoder(seed: int = 0, projection_dim: int = EMBED_DIM):
    """``CLIPVisionModelWithProjection`` on 32 px images (4x4 patches of 8 px, so 17 tokens)."""
    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(
        hidden_size=32,
        **CLIP_LAYERS,
        image_size=IMAGE_SIZE,
        patch_size=8,
        projection_dim=projection_dim,
    )
    return CLIPVisionModelWithProjection(cfg).eval()


def tiny_feature_extractor():
    return CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def tiny_unet(in_channels: int = 4, cross_attention_dim: int = EMBED_DIM, seed: int = 0):
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE // 2,
        in_channels=in_channels,
        out_channels=4,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    ).eval()


def tiny_vae(seed: int = 0, scaling_factor: float = 0.18215):
    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(16, 32),
        norm_num_groups=8,
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=IMAGE_SIZE,
        scaling_factor=scaling_factor,
    ).eval()


def ddim(prediction_type: str = "epsilon"):
    return DDIMScheduler.from_config({**SD_SCHEDULER, "prediction_type": prediction_type})


# -- pipeline folders ----------------------------------------------------------------------------
def ip2p_components(folder: str, seed: int = 0) -> dict:
    return dict(
        unet=tiny_unet(in_channels=8, seed=seed),
        vae=tiny_vae(seed),
        text_encoder=tiny_text_encoder(seed),
        tokenizer=tiny_tokenizer(os.path.join(folder, "_vocab")),
        scheduler=ddim(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_ip2p(folder: str, seed: int = 0) -> str:
    """An InstructPix2Pix pipeline folder (8-channel UNet: noisy latent + unscaled image latent)."""
    StableDiffusionInstructPix2PixPipeline(**ip2p_components(folder, seed)).save_pretrained(folder)
    return folder


def save_sd(folder: str, seed: int = 1, prediction_type: str = "epsilon", vae_scaling: float = 0.18215) -> str:
    """A text-to-image SD pipeline folder, usable as a prior (``prediction_type='v_prediction'`` mimics SD2.1)."""
    StableDiffusionPipeline(
        unet=tiny_unet(4, seed=seed),
        vae=tiny_vae(0, vae_scaling),
        text_encoder=tiny_text_encoder(seed),
        tokenizer=tiny_tokenizer(os.path.join(folder, "_vocab")),
        scheduler=ddim(prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder)
    return folder


def save_vd(folder: str, seed: int = 0) -> str:
    """A Versatile Diffusion image-variation pipeline folder (``image_unet`` + CLIP vision encoder)."""
    VersatileDiffusionImageVariationPipeline(
        image_feature_extractor=tiny_feature_extractor(),
        image_encoder=tiny_image_encoder(seed),
        image_unet=tiny_unet(4, seed=seed),
        vae=tiny_vae(seed),
        scheduler=ddim(),
    ).save_pretrained(folder)
    return folder


def save_zero123(folder: str, seed: int = 0) -> str:
    """A Zero-1-to-3 folder laid out like ``kxic/zero123-xl-diffusers``.

    Components: unet (8 in-channels), vae, image_encoder, feature_extractor, scheduler, and
    ``cc_projection`` (Linear(projection_dim + 4 -> cross_attention_dim), keys ``projection.*``) in its own folder.
    """
    os.makedirs(folder, exist_ok=True)
    parts = {
        "unet": tiny_unet(in_channels=8, seed=seed),
        "vae": tiny_vae(seed),
        "image_encoder": tiny_image_encoder(seed),
        "feature_extractor": tiny_feature_extractor(),
        "scheduler": ddim(),
    }
    for name, obj in parts.items():
        obj.save_pretrained(os.path.join(folder, name))
    torch.manual_seed(seed + 7)
    proj = torch.nn.Linear(EMBED_DIM + 4, EMBED_DIM)
    os.makedirs(os.path.join(folder, "cc_projection"), exist_ok=True)
    with open(os.path.join(folder, "cc_projection", "config.json"), "w") as f:
        json.dump({"_class_name": "CCProjection", "in_channel": EMBED_DIM + 4, "out_channel": EMBED_DIM}, f)
    save_file(
        {"projection.weight": proj.weight.detach().contiguous(), "projection.bias": proj.bias.detach().contiguous()},
        os.path.join(folder, "cc_projection", "diffusion_pytorch_model.safetensors"),
    )
    index = {
        "_class_name": "Zero1to3StableDiffusionPipeline",
        "_diffusers_version": "0.18.2",
        "cc_projection": ["pipeline_zero1to3", "CCProjection"],
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
    return folder


def save_image(path: str, size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE), mode: str = "RGB", seed: int = 0) -> str:
    """A smooth random test picture (PNG) of ``size`` (width, height) in PIL ``mode``."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    rgb = np.stack([np.sin(6 * xx + rng.uniform(0, 6)), np.cos(5 * yy + rng.uniform(0, 6)), np.sin(4 * (xx + yy))], -1)
    img = Image.fromarray(((rgb * 0.5 + 0.5) * 255).astype("uint8"), "RGB")
    if mode == "RGBA":
        img.putalpha(Image.fromarray((255 * (xx < 0.5)).astype("uint8")))
    elif mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return path
