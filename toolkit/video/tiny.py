"""Random DynamiCrafter / VideoCrafter1 checkpoints in the **released** layout: tiny ones for tests and
``bench --tiny``, and ones at the released size (the released YAMLs, open_clip's ViT-H-14) for the real-size test.

Each is what upstream would write for its YAML: ``{"state_dict": ...}`` with the schedule buffers and the
prefixes ``model.diffusion_model.`` (DynamiCrafter's fs MLP under its released 256 name ``framestride_embed``),
``first_stage_model.`` (the LDM VAE key layout), ``cond_stage_model.model.`` (OpenCLIP text tower),
``embedder.model.`` (OpenCLIP vision tower plus the text leftovers upstream keeps) and ``image_proj_model.``. It goes
through exactly the loading code a released file does: ``priorswap convert``.
"""

from __future__ import annotations

import json
import os
from typing import Callable

import torch
import yaml

from ..files import atomic_write
from .config import VideoModelConfig, read_config, released_config_path
from .ddim import alphas_cumprod
from .encoders import OpenCLIPImageEncoder, OpenCLIPTextEncoder, build_openclip, openclip_config
from .resampler import Resampler, ResamplerConfig
from .unet3d import UNet3D

OPENCLIP = {  # a ViT-H-14-shaped open_clip architecture at toy size (vision width 64 = the Resampler's input)
    "embed_dim": 16,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 3},
}
ARCH = "priorswap-tiny-ViT-P32"


def tiny_yaml(flavour: str) -> dict:
    """An upstream inference YAML for a toy model (8x8 latents, 64 px), in upstream's own keys."""
    unet = {
        "in_channels": 8 if flavour == "dynamicrafter" else 4,
        "out_channels": 4,
        "model_channels": 32,
        "attention_resolutions": [2, 1],
        "num_res_blocks": 1,
        "channel_mult": [1, 2],
        "num_head_channels": 8,
        "transformer_depth": 1,
        "context_dim": 16,
        "use_linear": True,
        "temporal_conv": flavour == "dynamicrafter",
        "temporal_attention": True,
        "temporal_selfatt_only": True,
        "use_relative_position": flavour == "videocrafter",
        "use_causal_attention": False,
        "temporal_length": 16,
        "addition_attention": True,
    }
    if flavour == "dynamicrafter":
        unet.update(
            image_cross_attention=True, image_cross_attention_scale_learnable=True, default_fs=3, fs_condition=True
        )
    params = {
        "linear_start": 0.00085,
        "linear_end": 0.012,
        "timesteps": 1000,
        "conditioning_key": "hybrid" if flavour == "dynamicrafter" else "crossattn",
        "image_size": [8, 8],
        "channels": 4,
        "scale_factor": 0.18215,
        "uncond_type": "empty_seq",
        "unet_config": {"target": "lvdm.modules.networks.openaimodel3d.UNetModel", "params": unet},
        "first_stage_config": {
            "target": "lvdm.models.autoencoder.AutoencoderKL",
            "params": {
                "embed_dim": 4,
                "ddconfig": {
                    "double_z": True,
                    "z_channels": 4,
                    "resolution": 64,
                    "in_channels": 3,
                    "out_ch": 3,
                    "ch": 32,
                    "ch_mult": [1, 1, 1, 2],
                    "num_res_blocks": 1,
                    "attn_resolutions": [],
                    "dropout": 0.0,
                },
            },
        },
        "cond_stage_config": {
            "target": "lvdm.modules.encoders.condition.FrozenOpenCLIPEmbedder",
            "params": {"arch": ARCH, "layer": "penultimate"},
        },
    }
    if flavour == "dynamicrafter":
        params["img_cond_stage_config"] = {
            "target": "lvdm.modules.encoders.condition.FrozenOpenCLIPImageEmbedderV2",
            "params": {"arch": ARCH},
        }
        params["image_proj_stage_config"] = {
            "target": "lvdm.modules.encoders.resampler.Resampler",
            "params": {
                "dim": 16,
                "depth": 2,
                "dim_head": 8,
                "heads": 3,
                "num_queries": 16,
                "embedding_dim": 64,
                "output_dim": 16,
                "ff_mult": 4,
                "video_length": 16,
            },
        }
    target = (
        "lvdm.models.ddpm3d.LatentVisualDiffusion"
        if flavour == "dynamicrafter"
        else "lvdm.models.ddpm3d.LatentDiffusion"
    )
    return {"model": {"target": target, "params": params}}


def ldm_vae_state_dict(ddconfig: dict, embed_dim: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random weights under the LDM VAE's key names (``ae_modules.Encoder`` / ``Decoder`` plus the quant convs)."""
    sd: dict[str, torch.Tensor] = {}

    def conv(name: str, cout: int, cin: int, k: int) -> None:
        sd[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=generator) / (cin * k * k) ** 0.5
        sd[f"{name}.bias"] = torch.randn(cout, generator=generator) * 0.05

    def norm(name: str, c: int) -> None:
        sd[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=generator)
        sd[f"{name}.bias"] = 0.1 * torch.randn(c, generator=generator)

    def resnet(name: str, cin: int, cout: int) -> None:
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cout, cin, 3)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cout, cin, 1)

    def mid(name: str, c: int) -> None:
        resnet(f"{name}.block_1", c, c)
        norm(f"{name}.attn_1.norm", c)
        for p in ("q", "k", "v", "proj_out"):
            conv(f"{name}.attn_1.{p}", c, c, 1)
        resnet(f"{name}.block_2", c, c)

    ch, mult, n, z = ddconfig["ch"], ddconfig["ch_mult"], ddconfig["num_res_blocks"], ddconfig["z_channels"]
    conv("encoder.conv_in", ch, ddconfig["in_channels"], 3)
    block_in = ch
    for i, m in enumerate(mult):
        for j in range(n):
            resnet(f"encoder.down.{i}.block.{j}", block_in, ch * m)
            block_in = ch * m
        if i != len(mult) - 1:
            conv(f"encoder.down.{i}.downsample.conv", block_in, block_in, 3)
    mid("encoder.mid", block_in)
    norm("encoder.norm_out", block_in)
    conv("encoder.conv_out", 2 * z, block_in, 3)
    conv("quant_conv", 2 * embed_dim, 2 * z, 1)
    conv("post_quant_conv", z, embed_dim, 1)
    block_in = ch * mult[-1]
    conv("decoder.conv_in", block_in, z, 3)
    mid("decoder.mid", block_in)
    for i in reversed(range(len(mult))):
        for j in range(n + 1):
            resnet(f"decoder.up.{i}.block.{j}", block_in, ch * mult[i])
            block_in = ch * mult[i]
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", block_in, block_in, 3)
    norm("decoder.norm_out", block_in)
    conv("decoder.conv_out", ddconfig["out_ch"], block_in, 3)
    return sd


def _randomise(module: torch.nn.Module, generator: torch.Generator, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every entry of ``module.state_dict()`` drawn afresh (zero-initialised output layers made live, so mistakes
    show). Only the shapes are read, so ``module`` may live on the meta device."""
    out = {}
    for name, t in module.state_dict().items():
        if t.ndim >= 2:
            v = torch.randn(t.shape, generator=generator) / t[0].numel() ** 0.5
        elif name.endswith("alpha") or t.ndim == 0:
            v = 0.5 * torch.randn(t.shape, generator=generator)
        elif "norm" in name or name.startswith("ln") or ".ln_" in name:
            v = (1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(t.shape, generator=generator)
        else:
            v = 0.05 * torch.randn(t.shape, generator=generator)
        out[name] = v.to(dtype)
    return out


def _shape_only(build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """A network built on the meta device: its state_dict's names and shapes, no memory and no initialisation (a
    released-size UNet would otherwise hold its 5 GiB of default weights beside the random ones)."""
    with torch.device("meta"):
        return build()


def random_checkpoint(
    cfg: VideoModelConfig, openclip: dict, seed: int = 0, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """The released ``state_dict`` of a model of ``cfg`` (open_clip towers of config ``openclip``), random weights
    in ``dtype``, plus the schedule buffers upstream keeps (always fp32, as upstream's)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    unet = _randomise(_shape_only(lambda: UNet3D(cfg.unet)), g, dtype)
    sd.update({f"model.diffusion_model.{k.replace('fps_embedding', 'framestride_embed')}": v for k, v in unet.items()})
    del unet
    vae_g = torch.Generator().manual_seed(1234)  # the two models share their frozen VAE and text tower, as the releases
    vae = ldm_vae_state_dict(cfg.ddconfig, cfg.ddconfig["z_channels"], vae_g)
    sd.update({f"first_stage_model.{k}": v.to(dtype) for k, v in vae.items()})
    text_net = _shape_only(lambda: OpenCLIPTextEncoder(build_openclip(openclip), cfg.text.layer))
    text = _randomise(text_net, torch.Generator().manual_seed(4321), dtype)
    sd.update({f"cond_stage_model.model.{k}": v for k, v in text.items()})
    if cfg.flavour == "dynamicrafter":
        image = _randomise(_shape_only(lambda: OpenCLIPImageEncoder(build_openclip(openclip))), g, dtype)
        sd.update({f"embedder.model.{k}": v for k, v in image.items()})
        proj = _randomise(_shape_only(lambda: Resampler(ResamplerConfig(**cfg.resampler))), g, dtype)
        sd.update({f"image_proj_model.{k}": v for k, v in proj.items()})
    ac = alphas_cumprod(cfg)
    sd["alphas_cumprod"] = ac
    sd["betas"] = 1 - ac / torch.cat([torch.ones(1), ac[:-1]])
    return sd


def _write_checkpoint(folder: str, config_text: str, openclip: dict | None, seed: int, dtype: torch.dtype) -> dict:
    """``config.yaml`` (``config_text``), the open_clip JSON (when the arch is not one open_clip ships) and
    ``model.ckpt`` (written whole or not at all) in ``folder``; returns their paths (``openclip``: None when none)."""
    os.makedirs(folder, exist_ok=True)
    paths = {
        "ckpt": os.path.join(folder, "model.ckpt"),
        "config": os.path.join(folder, "config.yaml"),
        "openclip": None,
    }
    with atomic_write(paths["config"]) as f:
        f.write(config_text)
    cfg = read_config(paths["config"])
    if openclip is not None:
        paths["openclip"] = os.path.join(folder, f"{cfg.text.arch}.json")
        with atomic_write(paths["openclip"]) as f:
            json.dump(openclip, f, indent=2)
    clip = openclip_config(cfg.text.arch, paths["openclip"])
    sd = random_checkpoint(cfg, clip, seed, dtype)
    with atomic_write(paths["ckpt"], "wb") as f:
        torch.save({"state_dict": sd}, f)
    return paths


def save_tiny_checkpoint(folder: str, flavour: str, seed: int = 0) -> dict[str, str]:
    """Write ``model.ckpt``, ``config.yaml`` and the open_clip JSON into ``folder``; returns their paths."""
    return _write_checkpoint(folder, yaml.safe_dump(tiny_yaml(flavour), sort_keys=False), OPENCLIP, seed, torch.float32)


def save_released_size_checkpoint(
    folder: str, flavour: str, seed: int = 0, dtype: torch.dtype = torch.float32
) -> dict[str, str | None]:
    """A random checkpoint at the released size: ``config.yaml`` is the released inference YAML (the one `priorswap
    convert` reads by default), the towers open_clip's own ViT-H-14. The releases hold fp32 weights (DynamiCrafter-256
    about 10 GB, VideoCrafter1 T2V 512 about 6 GB); ``dtype=torch.float16`` halves the file, and converts the same.
    ``paths["openclip"]`` is None: the arch is open_clip's own."""
    with open(released_config_path(flavour)) as f:
        text = f.read()
    return _write_checkpoint(folder, text, None, seed, dtype)
