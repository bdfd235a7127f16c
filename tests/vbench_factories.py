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
