"""Tiny random SDXL, SD3 and PixArt pipeline folders for the text-to-image training tests (no hub access).

The SD1.x folder comes from ``priorswap.toolkit.unet.tiny.save_sd``. These reuse its tokenizer (one token per
character) and sizes; the T5 encoders are 1-layer ``T5EncoderModel``s read through that same tokenizer, which
the pipelines accept (they only call ``tokenizer(...)``).
"""

from __future__ import annotations

import os

import torch

from priorswap.toolkit.unet.tiny import (
    CLIP_LAYERS,
    EMBED_DIM,
    SD_SCHEDULER,
    TEXT_LEN,
    tiny_text_encoder,
    tiny_tokenizer,
    tiny_vae,
)


def _clip_with_projection(seed: int):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        hidden_size=EMBED_DIM,
        projection_dim=EMBED_DIM,
        **CLIP_LAYERS,
        vocab_size=200,
        max_position_embeddings=TEXT_LEN,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModelWithProjection(cfg).eval()


def _t5(width: int, seed: int):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=200, d_model=width, d_ff=37, d_kv=8, num_layers=1, num_heads=2, pad_token_id=1)
    return T5EncoderModel(cfg).eval()


def save_sdxl(folder: str, seed: int = 0) -> str:
    """SDXL: two CLIP encoders (concatenated 64-wide context, pooled from the second) and text_time micro-conditioning."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        cross_attention_dim=2 * EMBED_DIM,
        attention_head_dim=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=EMBED_DIM + 6 * 8,
    )
    tok = tiny_tokenizer(os.path.join(folder, "_vocab"))
    StableDiffusionXLPipeline(
        vae=tiny_vae(0, 0.13025),
        text_encoder=tiny_text_encoder(seed),
        text_encoder_2=_clip_with_projection(seed + 1),
        tokenizer=tok,
        tokenizer_2=tok,
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_config(SD_SCHEDULER),
    ).save_pretrained(folder)
    return folder


def save_sd3(folder: str, seed: int = 0) -> str:
    """SD3: an MMDiT over two CLIP encoders and a T5, a shifted-latent VAE and a flow-matching scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=2 * EMBED_DIM,
        caption_projection_dim=16,
        pooled_projection_dim=2 * EMBED_DIM,
        pos_embed_max_size=32,
    )
    vae = tiny_vae(0, 1.5)
    vae.register_to_config(shift_factor=0.1)
    tok = tiny_tokenizer(os.path.join(folder, "_vocab"))
    StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=_clip_with_projection(seed),
        tokenizer=tok,
        text_encoder_2=_clip_with_projection(seed + 1),
        tokenizer_2=tok,
        text_encoder_3=_t5(2 * EMBED_DIM, seed),
        tokenizer_3=tok,
    ).save_pretrained(folder)
    return folder


def save_pixart(folder: str, seed: int = 0) -> str:
    """PixArt-Sigma layout: a learned-sigma DiT (8 output channels) over a 1-layer T5 encoder, eps on a DDPM schedule."""
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(
        sample_size=16,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=2,
        in_channels=4,
        out_channels=8,
        cross_attention_dim=16,
        caption_channels=EMBED_DIM,
    )
    sched = {k: v for k, v in SD_SCHEDULER.items() if k not in ("clip_sample", "set_alpha_to_one")}
    PixArtSigmaPipeline(
        tokenizer=tiny_tokenizer(os.path.join(folder, "_vocab")),
        text_encoder=_t5(EMBED_DIM, seed),
        vae=tiny_vae(0, 0.13025),
        transformer=transformer,
        scheduler=DPMSolverMultistepScheduler.from_config({**sched, "beta_schedule": "linear", "beta_end": 0.02}),
    ).save_pretrained(folder)
    return folder
