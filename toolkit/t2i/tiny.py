"""Tiny random text-to-image pipelines (SDXL, SD3, PixArt-alpha/Sigma), saved as real diffusers folders.

Each builder writes a folder with the pipeline's own ``save_pretrained``, so tests load it back through the real
loading code. Sizes are the smallest that keep every code path alive (32 px images, 16x16 latents). Tokenizers are
built here, nothing is downloaded: the CLIP ones from a written vocab (``unet.tiny``), the T5 one from a unigram
model over printable ASCII, as a fast tokenizer (T5's ids: pad 0, eos 1, unk 2).
"""

from __future__ import annotations

import json
import os
import string

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    PixArtAlphaPipeline,
    PixArtSigmaPipeline,
    PixArtTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from ..unet.tiny import CLIP_LAYERS, IMAGE_SIZE, SD_SCHEDULER, TEXT_LEN, tiny_tokenizer

LATENT = IMAGE_SIZE // 2  # the tiny VAE halves the image size
SDXL_VAE_SCALE = 0.13025  # SDXL's VAE statistics, shared by PixArt-Sigma
SD_VAE_SCALE = 0.18215  # SD1.x/2.x, shared by PixArt-alpha
SD3_VAE = dict(scaling_factor=1.5305, shift_factor=0.0609)
PIXART_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"}


def t5_tokenizer(max_length: int = 32):
    """A ``T5TokenizerFast``: one piece per printable ASCII character, word starts marked as sentencepiece does."""

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(c, -2.0) for c in string.printable[:94]]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0,
        model_max_length=max_length,
    )  # fmt: skip


def t5_encoder(seed: int, d_model: int = 32):

    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=100, d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4, pad_token_id=0, eos_token_id=1
    )
    return T5EncoderModel(cfg).eval()


def clip_encoder(seed: int, hidden: int, projection: bool):
    """A tiny CLIP text encoder; ``projection``: with the pooled projection SDXL's second encoder and SD3 use."""

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        hidden_size=hidden, **CLIP_LAYERS, vocab_size=200, max_position_embeddings=TEXT_LEN, projection_dim=32,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )  # fmt: skip
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def vae(seed: int, scaling_factor: float, shift_factor: float | None = None):

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(16, 32), norm_num_groups=8, in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=IMAGE_SIZE, scaling_factor=scaling_factor, shift_factor=shift_factor,
    ).eval()  # fmt: skip


def save_sdxl(folder: str, seed: int = 0, prediction_type: str = "epsilon") -> str:
    """An SDXL folder: two CLIP encoders (32 + 32 = 64-d cross-attention), ``text_time`` micro-conditioning."""

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, sample_size=LATENT, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=4, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64,
    ).eval()  # fmt: skip
    tok = tiny_tokenizer(os.path.join(folder, "_vocab"))
    StableDiffusionXLPipeline(
        unet=unet,
        vae=vae(0, SDXL_VAE_SCALE),
        text_encoder=clip_encoder(seed, 32, projection=False),
        text_encoder_2=clip_encoder(seed + 1, 32, projection=True),
        tokenizer=tok,
        tokenizer_2=tok,
        scheduler=EulerDiscreteScheduler.from_config({**SD_SCHEDULER, "prediction_type": prediction_type}),
        image_encoder=None,
        feature_extractor=None,
    ).save_pretrained(folder)
    return folder


def save_sd3(folder: str, seed: int = 0, shift: float = 3.0) -> str:
    """An SD3 folder: two CLIP encoders (16 + 16 = 32-d, padded to T5's 32) and a T5; flow matching, shifted."""

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=LATENT, patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16, pooled_projection_dim=64,
    ).eval()  # fmt: skip
    tok = tiny_tokenizer(os.path.join(folder, "_vocab"))
    StableDiffusion3Pipeline(
        transformer=transformer,
        vae=vae(0, **SD3_VAE),
        text_encoder=clip_encoder(seed, 16, projection=True),
        text_encoder_2=clip_encoder(seed + 1, 16, projection=True),
        text_encoder_3=t5_encoder(seed),
        tokenizer=tok,
        tokenizer_2=tok,
        tokenizer_3=t5_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
    ).save_pretrained(folder)
    return folder


def save_pixart(folder: str, seed: int = 0, sigma: bool = True) -> str:
    """A PixArt-Sigma (SDXL's VAE statistics) or PixArt-alpha (SD's) folder: learned sigma, a T5 encoder."""

    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
        sample_size=LATENT, patch_size=2, cross_attention_dim=16, caption_channels=32, norm_num_groups=8,
    ).eval()  # fmt: skip
    cls = PixArtSigmaPipeline if sigma else PixArtAlphaPipeline
    cls(
        tokenizer=t5_tokenizer(),
        text_encoder=t5_encoder(seed),
        vae=vae(0, SDXL_VAE_SCALE if sigma else SD_VAE_SCALE),
        transformer=transformer,
        scheduler=DDIMScheduler.from_config({**PIXART_SCHEDULER, "clip_sample": False}),
    ).save_pretrained(folder)
    return folder


def save_flux_index(folder: str) -> str:
    """A folder holding only a FLUX ``model_index.json``: enough to be refused (no weights are ever read)."""

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump({"_class_name": "FluxPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"]}, f)
    return folder
