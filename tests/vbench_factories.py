"""Fabricated weight files in the formats VBench loads (OpenAI CLIP TorchScript archives, original RAFT keys, AMT's
trainer checkpoint)."""

import re
import warnings

import numpy as np
import torch
from torch import nn


def openai_archive(path, seed=0):
    """A tiny OpenAI-architecture CLIP saved as a TorchScript archive holding only its tensors, as the releases do."""
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    model = CLIP(
        embed_dim=32,
        vision_cfg={"image_size": 224, "layers": 2, "width": 64, "patch_size": 32},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
        quick_gelu=True,
    )
    root = nn.Module()
    for key, t in model.state_dict().items():
        if key == "attn_mask":
            continue
        *parents, name = key.split(".")
        m = root
        for p in parents:
            if not hasattr(m, p):
                m.add_module(p, nn.Module())
            m = getattr(m, p)
        m.register_parameter(name, nn.Parameter(t.half().clone(), requires_grad=False))  # release weights are fp16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(root), path)
    return model


def original_raft_state(seed=0):
    """torchvision's random raft_large under princeton-vl/RAFT's names (DataParallel ``module.``, the duplicate
    ``norm3`` of each downsampling block), the layout of ``raft-things.pth``."""
    from torchvision.models.optical_flow import raft_large

    torch.manual_seed(seed)
    tv = raft_large(weights=None)
    back = [
        (r"^feature_encoder\.convnormrelu\.0\.", "fnet.conv1."), (r"^context_encoder\.convnormrelu\.0\.", "cnet.conv1."),
        (r"^context_encoder\.convnormrelu\.1\.", "cnet.norm1."), (r"^feature_encoder\.conv\.", "fnet.conv2."),
        (r"^context_encoder\.conv\.", "cnet.conv2."), (r"^feature_encoder\.", "fnet."), (r"^context_encoder\.", "cnet."),
        (r"\.convnormrelu1\.0\.", ".conv1."), (r"\.convnormrelu2\.0\.", ".conv2."), (r"\.convnormrelu1\.1\.", ".norm1."),
        (r"\.convnormrelu2\.1\.", ".norm2."), (r"motion_encoder\.convcorr(\d)\.0\.", r"encoder.convc\1."),
        (r"motion_encoder\.convflow(\d)\.0\.", r"encoder.convf\1."), (r"motion_encoder\.conv\.0\.", "encoder.conv."),
        (r"recurrent_block\.convgru(\d)\.conv(z|r|q)\.", r"gru.conv\2\1."),
        (r"^mask_predictor\.convrelu\.0\.", "update_block.mask.0."), (r"^mask_predictor\.conv\.", "update_block.mask.2."),
    ]  # fmt: skip
    out = {}
    for k, v in tv.state_dict().items():
        for pattern, repl in back:
            k = re.sub(pattern, repl, k)
        out[f"module.{k}"] = v.clone()
        m = re.match(r"^cnet\.(layer\d\.\d)\.downsample\.1\.(.*)$", k)
        if m:
            out[f"module.cnet.{m[1]}.norm3.{m[2]}"] = v.clone()
    return tv.eval(), out


def musiq_file(path: str, seed: int = 0) -> None:
    """Random MUSIQ (SPAQ layout: one output) weights as pyiqa saves them: a bare state dict."""
    from pyiqa.archs.musiq_arch import MUSIQ

    torch.manual_seed(seed)
    torch.save(MUSIQ(pretrained=False).state_dict(), path)


# -- DreamSim's cache folder (``dreamsim(pretrained=True, cache_dir=DIR)``, dreamsim 0.2.1) --------------------
DREAMSIM_LORA_CONFIG = {  # peft 0.12's adapter_config.json fields; r / alpha / dropout of train_ensemble_model_lora.yaml
    "alpha_pattern": {}, "auto_mapping": {"base_model_class": "PerceptualModel", "parent_library": "dreamsim.model"},
    "base_model_name_or_path": None, "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
    "init_lora_weights": True, "layer_replication": None, "layers_pattern": None, "layers_to_transform": None,
    "loftq_config": {}, "lora_alpha": 8, "lora_dropout": 0.3, "megatron_config": None, "megatron_core": "megatron.core",
    "modules_to_save": None, "peft_type": "LORA", "r": 16, "rank_pattern": {}, "revision": None,
    "target_modules": ["qkv"], "task_type": None, "use_dora": False, "use_rslora": False,
}  # fmt: skip


def _vit_shapes(w: int = 768) -> dict:
    """Key -> shape of a 12-block ViT/16 of width ``w`` in facebookresearch/dino's names (== timm's
    ``vit_base_patch16_224`` at w = 768)."""
    shapes = {"cls_token": (1, 1, w), "pos_embed": (1, 197, w), "patch_embed.proj.weight": (w, 3, 16, 16),
              "patch_embed.proj.bias": (w,), "norm.weight": (w,), "norm.bias": (w,)}  # fmt: skip
    for i in range(12):
        b = f"blocks.{i}."
        shapes.update({b + "norm1.weight": (w,), b + "norm1.bias": (w,), b + "attn.qkv.weight": (3 * w, w),
                       b + "attn.qkv.bias": (3 * w,), b + "attn.proj.weight": (w, w), b + "attn.proj.bias": (w,),
                       b + "norm2.weight": (w,), b + "norm2.bias": (w,), b + "mlp.fc1.weight": (4 * w, w),
                       b + "mlp.fc1.bias": (4 * w,), b + "mlp.fc2.weight": (w, 4 * w), b + "mlp.fc2.bias": (w,)})  # fmt: skip
    return shapes


def _fill(shapes: dict, gen: torch.Generator) -> dict:
    """Random weights from a seeded generator (stable across torch and timm versions): LayerNorm scales near 1,
    everything else N(0, 0.02)."""
    out = {}
    for key, shape in shapes.items():
        t = torch.randn(shape, generator=gen) * 0.02
        if ".norm" in key or key.startswith("norm") or key.startswith("pos_drop"):
            t = t + 1.0 if key.endswith("weight") else t
        out[key] = t
    return out


def dreamsim_folder(root, seed: int = 0, width: int = 768, adapter: str = "adapter_model.safetensors") -> str:
    """Fabricated random weights laid out as ``dreamsim(pretrained=True, cache_dir=root)`` leaves its folder
    (dreamsim 0.2.1 ``model.py`` 215-248, ``feature_extraction/extractor.py`` 67-83): the unzipped
    ``dreamsim_ensemble_checkpoint.zip`` (``ensemble_lora/``, ``clip_vitb16_pretrain.pth.tar``,
    ``open_clip_vitb16_pretrain.pth.tar``, ``dino_vitb16_pretrain.pth``) and torch.hub's DINO download
    (``checkpoints/dino_vitbase16_pretrain.pth``). Full ViT-B/16 size: DreamSim's loaders fix the architecture.
    ``width`` 64 makes the same files for a 64-wide ViT (one head) that loads in a blink; only 768 fits dreamsim's
    own code. torch.hub's copy of the facebookresearch/dino code (``facebookresearch_dino_main/``) is not made."""
    import json
    import os

    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    os.makedirs(os.path.join(root, "checkpoints"), exist_ok=True)
    os.makedirs(os.path.join(root, "ensemble_lora"), exist_ok=True)
    vit, hid = _vit_shapes(width), 2048 if width == 768 else 32
    torch.save(_fill(vit, gen), os.path.join(root, "checkpoints", "dino_vitbase16_pretrain.pth"))  # a bare state dict
    head = {"module.head.mlp.0.weight": (hid, width), "module.head.mlp.0.bias": (hid,),
            "module.head.mlp.2.weight": (hid, hid), "module.head.mlp.2.bias": (hid,),
            "module.head.mlp.4.weight": (256, hid), "module.head.mlp.4.bias": (256,),
            "module.head.last_layer.weight": (2048, 256)}  # fmt: skip
    torch.save({"student": _fill(head, gen)}, os.path.join(root, "dino_vitb16_pretrain.pth"))  # only its head is read
    for name in ("clip_vitb16_pretrain.pth.tar", "open_clip_vitb16_pretrain.pth.tar"):
        state = _fill({**vit, "pos_drop.weight": (width,), "pos_drop.bias": (width,)}, gen)  # ln_pre as pos_drop
        state["proj"] = torch.randn(width, 512 * width // 768, generator=gen) * 0.03
        torch.save({"state_dict": state}, os.path.join(root, name))
    lora = {}
    for e in range(3):
        for i in range(12):
            key = f"base_model.model.extractor_list.{e}.model.blocks.{i}.attn.qkv"
            lora[f"{key}.lora_A.weight"] = torch.randn(16, width, generator=gen) * 0.05
            lora[f"{key}.lora_B.weight"] = torch.randn(3 * width, 16, generator=gen) * 0.05  # trained: B is not zero
    path = os.path.join(root, "ensemble_lora", adapter)
    save_file(lora, path) if adapter.endswith(".safetensors") else torch.save(lora, path)
    with open(os.path.join(root, "ensemble_lora", "adapter_config.json"), "w") as f:
        json.dump(DREAMSIM_LORA_CONFIG, f, indent=2)
    return str(root)


def fabricated_amt(shapes: dict, seed: int = 0) -> dict:
    """Seeded AMT-S weights keyed by name: each tensor from its own generator, seeded with crc32(f"{seed}:{name}"), so
    the recipe needs only names and shapes (the upstream reference in tests/fixtures was made with this very function
    on upstream's own state dict). Convs ~ N(0, 1 / fan-in), biases ~ N(0, 0.02^2), PReLU slopes ~ 0.25 + N(0, 0.05^2)."""
    import zlib

    out = {}
    for name, shape in shapes.items():
        g = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{name}".encode()))
        z = torch.randn(tuple(shape), generator=g)
        if len(shape) == 1:
            out[name] = 0.25 + 0.05 * z if name.endswith(".weight") else 0.02 * z
        else:
            fan = 1
            for d in shape[1:]:
                fan *= d
            out[name] = z / fan**0.5
    return out


def amt_state(seed: int = 0) -> dict:
    from priorswap.toolkit.vbench.amt_net import AMTS

    return fabricated_amt({k: tuple(v.shape) for k, v in AMTS().state_dict().items()}, seed)


def amt_file(path, seed: int = 0) -> None:
    """``amt-s.pth`` as AMT's trainer saves it (``trainers/base_trainer.py`` 219-227): epoch, state_dict, optim."""
    torch.save(
        {"epoch": 299, "state_dict": amt_state(seed), "optim": {"state": {}, "param_groups": [{"lr": 2e-5}]}}, path
    )


def amt_pattern(h: int, w: int, shift: int) -> np.ndarray:
    """An (h, w, 3) uint8 test image from integer arithmetic only (exact everywhere): two triangle waves, the first
    moved right by ``shift`` pixels, plus a small hashed texture."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    c = np.arange(3, dtype=np.int64)
    tri = lambda v: np.abs(v % 256 - 128) * 2
    a = tri((x[..., None] - shift) * 3 + y[..., None] * (1 + c) + 40 * c)
    b = tri(y[..., None] * 2 - x[..., None] + 70 * c + shift)
    noise = ((x[..., None] * 73856093) ^ (y[..., None] * 19349663) ^ (c * 83492791)) % 23
    return np.clip((a + b) // 2 + noise - 11, 0, 255).astype(np.uint8)
