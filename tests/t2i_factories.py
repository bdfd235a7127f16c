"""Tiny random SDXL and SD3 components for diffusers' modular pipelines (no hub access).

The modular pipelines are built from diffusers' own blocks (``StableDiffusionXLAutoBlocks``,
``StableDiffusion3AutoBlocks``) and given tiny components with ``update_components``; the components are saved
to a folder and loaded back first, so the tests run what a user's ``from_pretrained`` would give them.
Text encoders and the tokenizer come from ``priorswap.toolkit.unet.tiny`` (a vocab written locally).
"""

from __future__ import annotations

import os

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, UNet2DConditionModel
from peft import LoraConfig
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from priorswap.toolkit.unet.tiny import CLIP_LAYERS, EMBED_DIM, TEXT_LEN, tiny_tokenizer, tiny_vae

IMAGE_SIZE = 32  # pixels; the 2-level VAE gives 16x16 latents
TIME_EMBED = 8  # SDXL's addition_time_embed_dim (6 micro-conditions)
SDXL_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "prediction_type": "epsilon",
}


def _clip(seed: int, with_projection: bool):
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        hidden_size=EMBED_DIM,
        **CLIP_LAYERS,
        vocab_size=200,
        max_position_embeddings=TEXT_LEN,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        projection_dim=EMBED_DIM,
    )
    return (CLIPTextModelWithProjection(cfg) if with_projection else CLIPTextModel(cfg)).eval()


def tiny_sdxl_unet(seed: int = 0) -> UNet2DConditionModel:
    """An SDXL-shaped UNet: text-time added conditions, cross-attention over both encoders (2 x 32 wide)."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=4,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED,
        projection_class_embeddings_input_dim=6 * TIME_EMBED + EMBED_DIM,
        cross_attention_dim=2 * EMBED_DIM,
    ).eval()


def save_sdxl_components(folder: str, seed: int = 0) -> str:
    """Tiny SDXL components, one diffusers/transformers folder each under ``folder``."""
    parts = {
        "unet": tiny_sdxl_unet(seed),
        "vae": tiny_vae(seed),
        "text_encoder": _clip(seed, with_projection=False),
        "text_encoder_2": _clip(seed + 1, with_projection=True),
        "scheduler": EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
    }
    for name, part in parts.items():
        part.save_pretrained(os.path.join(folder, name))
    for name in ("tokenizer", "tokenizer_2"):
        tiny_tokenizer(os.path.join(folder, "_vocab")).save_pretrained(os.path.join(folder, name))
    return folder


def load_sdxl_components(folder: str) -> dict:
    return {
        "unet": UNet2DConditionModel.from_pretrained(os.path.join(folder, "unet")).eval(),
        "vae": AutoencoderKL.from_pretrained(os.path.join(folder, "vae")).eval(),
        "text_encoder": CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder")).eval(),
        "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(os.path.join(folder, "text_encoder_2")).eval(),
        "tokenizer": CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer")),
        "tokenizer_2": CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer_2")),
        "scheduler": EulerDiscreteScheduler.from_pretrained(os.path.join(folder, "scheduler")),
    }


def sdxl_modular_pipeline(folder: str):
    """diffusers' own modular SDXL pipeline (all its blocks), with the tiny components from ``folder``."""
    from diffusers.modular_pipelines import StableDiffusionXLAutoBlocks

    pipe = StableDiffusionXLAutoBlocks().init_pipeline()
    pipe.update_components(**load_sdxl_components(folder))
    return pipe


def add_lora(denoiser: torch.nn.Module, seed: int = 3, rank: int = 4, name: str = "ft") -> torch.nn.Module:
    """A random (non-zero) LoRA on the attention projections, through diffusers' ``add_adapter``."""
    denoiser.add_adapter(
        LoraConfig(
            r=rank, lora_alpha=rank, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v", "to_out.0"]
        ),
        adapter_name=name,
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        for pname, p in denoiser.named_parameters():
            if "lora_B" in pname:
                p.normal_(0.0, 0.5)
    return denoiser.eval()


def flow_scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)


def tiny_sd3_transformer(seed: int = 0):
    """An SD3-shaped MMDiT: one joint block, 32 wide (the caption projection), 4 latent channels on 16x16."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=IMAGE_SIZE // 2,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=SD3_TEXT_DIM,
        pooled_projection_dim=SD3_POOLED_DIM,
        out_channels=4,
    ).eval()


SD3_TEXT_DIM, SD3_POOLED_DIM = 32, 64


def sd3_modular_pipeline(transformer: torch.nn.Module):
    """diffusers' own SD3 text-to-image core (text inputs, latents, timesteps, denoise) around ``transformer``.

    The core takes prompt embeddings, so no text encoder is needed: SD3's third encoder is a T5, whose
    sentencepiece tokenizer cannot be built without a download. Its denoise step is the one the full pipeline runs.
    """
    from diffusers.modular_pipelines.stable_diffusion_3.modular_blocks_stable_diffusion_3 import (
        StableDiffusion3T2ICoreDenoiseStep,
    )

    pipe = StableDiffusion3T2ICoreDenoiseStep().init_pipeline()
    pipe.update_components(transformer=transformer, scheduler=flow_scheduler())
    return pipe


def randomize_lora(*nets: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> None:
    """Seeded random LoRA B matrices (peft starts them at zero, which makes a fresh adapter the identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for net in nets:
            for name, p in net.named_parameters():
                if "lora_B" in name:
                    p.copy_(scale * torch.randn(p.shape, generator=gen))
