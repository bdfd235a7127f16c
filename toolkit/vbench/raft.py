"""Dynamic Degree: RAFT-large optical flow, read from the original ``raft-things.pth`` that VBench loads.

torchvision's ``raft_large`` is the same network (its ``Raft_Large_Weights.C_T_V1`` are this very checkpoint,
ported); :func:`original_to_torchvision` is that port's key map, from princeton-vl/RAFT's module names
(``module.fnet.layer1.0.conv1`` ...) to torchvision's. Checked once against princeton-vl/RAFT's own ``core/`` code
with random weights in its layout: 179 keys, strict load, flows after 20 updates identical (max difference 0.0). Two conventions differ and are handled here: the original
network takes 0-255 images and normalises them itself (``raft.py``: ``2 * (image / 255) - 1``), torchvision takes
[-1, 1]; the original ``InputPadder`` pads to a multiple of 8 with edge replication, split evenly ("sintel" mode).
The per-video rule is VBench's (``vbench/dynamic_degree.py`` at 45e79ec, lines cited below).
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.optical_flow import raft_large

from ..errors import PriorswapError
from ..metrics.extractor import load_exactly, load_state_dict_file, require_file

_RULES = [  # (original, torchvision), applied in order to the key without "module."
    (r"^fnet\.conv1\.", "feature_encoder.convnormrelu.0."),
    (r"^cnet\.conv1\.", "context_encoder.convnormrelu.0."),
    (r"^cnet\.norm1\.", "context_encoder.convnormrelu.1."),
    (r"^fnet\.conv2\.", "feature_encoder.conv."),
    (r"^cnet\.conv2\.", "context_encoder.conv."),
    (r"^(f|c)net\.(layer\d\.\d)\.conv1\.", r"\1net.\2.convnormrelu1.0."),
    (r"^(f|c)net\.(layer\d\.\d)\.conv2\.", r"\1net.\2.convnormrelu2.0."),
    (r"^(f|c)net\.(layer\d\.\d)\.norm1\.", r"\1net.\2.convnormrelu1.1."),
    (r"^(f|c)net\.(layer\d\.\d)\.norm2\.", r"\1net.\2.convnormrelu2.1."),
    (r"^fnet\.", "feature_encoder."),
    (r"^cnet\.", "context_encoder."),
    (r"^update_block\.encoder\.convc1\.", "update_block.motion_encoder.convcorr1.0."),
    (r"^update_block\.encoder\.convc2\.", "update_block.motion_encoder.convcorr2.0."),
    (r"^update_block\.encoder\.convf1\.", "update_block.motion_encoder.convflow1.0."),
    (r"^update_block\.encoder\.convf2\.", "update_block.motion_encoder.convflow2.0."),
    (r"^update_block\.encoder\.conv\.", "update_block.motion_encoder.conv.0."),
    (r"^update_block\.gru\.conv(z|r|q)1\.", r"update_block.recurrent_block.convgru1.conv\1."),
    (r"^update_block\.gru\.conv(z|r|q)2\.", r"update_block.recurrent_block.convgru2.conv\1."),
    (r"^update_block\.mask\.0\.", "mask_predictor.convrelu.0."),
    (r"^update_block\.mask\.2\.", "mask_predictor.conv."),
]


def original_to_torchvision(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The original RAFT state dict (DataParallel ``module.`` keys) under torchvision's ``raft_large`` names.

    The original ResidualBlock registers its downsample norm twice (``norm3`` and ``downsample.1``); the copies
    are checked to be the same tensors and one is kept."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        k = key[len("module.") :] if key.startswith("module.") else key
        m = re.match(r"^(cnet|fnet)\.(layer\d\.\d)\.norm3\.(.*)$", k)
        if m:
            twin = f"{'module.' if key.startswith('module.') else ''}{m[1]}.{m[2]}.downsample.1.{m[3]}"
            if twin not in state or not torch.equal(state[twin], value):
                raise PriorswapError(
                    f"RAFT weights: {key} has no identical downsample.1 twin; not an original RAFT file"
                )
            continue
        for pattern, repl in _RULES:  # each rule matches one family; layer rules keep the prefix for the last two
            k = re.sub(pattern, repl, k)
        out[k] = value
    return out


def load_raft(weights: str):
    """torchvision ``raft_large`` with the weights of ``raft-things.pth`` (or a torchvision-named state dict), loaded
    strictly."""
    path = require_file(weights, "RAFT weights", "expected raft-things.pth (princeton-vl/RAFT)")
    state = load_state_dict_file(path)
    model = raft_large(weights=None, progress=False)
    mapped = original_to_torchvision(state) if any(k.startswith(("module.", "fnet.")) for k in state) else state
    load_exactly(model, mapped, f"RAFT weights {path!r} do not fit RAFT-large")
    return model.eval().requires_grad_(False)


def pad8(x: Tensor) -> Tensor:
    """The original ``InputPadder`` ("sintel" mode): replicate-pad H and W up to multiples of 8, split evenly."""
    h, w = x.shape[-2:]
    ph, pw = (((h // 8) + 1) * 8 - h) % 8, (((w // 8) + 1) * 8 - w) % 8
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2], mode="replicate")


def top5_magnitude(flow: Tensor) -> float:
    """Mean of the largest ``int(h * w * 0.05)`` flow magnitudes (``dynamic_degree.py`` 42-56)."""
    f = flow[0].permute(1, 2, 0).cpu().numpy()
    rad = np.sqrt(np.square(f[..., 0]) + np.square(f[..., 1]))
    h, w = rad.shape
    return np.mean(abs(np.sort(-rad.flatten()))[: int(h * w * 0.05)]).item()


def is_dynamic(scores: list[float], height: int, width: int, frames: int) -> bool:
    """At least round(4 n / 16) pairs move more than 6 min(H, W) / 256 px (``dynamic_degree.py`` 59-61, 84-93;
    Python's round is half-to-even, as VBench's)."""
    thres, count_num = 6.0 * (min(height, width) / 256.0), round(4 * (frames / 16.0))
    return sum(s > thres for s in scores) >= count_num


@torch.no_grad()
def pair_scores(raft, frames: np.ndarray, fps: float) -> tuple[list[float], int]:
    """Per consecutive pair of the subsampled frames (every max(1, round(fps / 8))-th, ``dynamic_degree.py`` 99-112):
    the top-5% flow magnitude after 20 updates on the padded frames. Returns the scores and the frame count."""
    step = max(1, round(fps / 8))
    x = torch.from_numpy(np.ascontiguousarray(frames[::step])).permute(0, 3, 1, 2).float()  # 0-255, RGB
    if min(x.shape[-2:]) < 128:
        raise PriorswapError(
            f"Dynamic Degree needs frames of at least 128x128 pixels (RAFT's correlation pyramid), got {tuple(x.shape[-2:])}"
        )
    device = next(raft.parameters()).device
    scores = []
    for a, b in zip(x[:-1], x[1:]):
        a, b = pad8(a[None]), pad8(b[None])
        flows = raft((2 * (a / 255.0) - 1).to(device), (2 * (b / 255.0) - 1).to(device), num_flow_updates=20)
        scores.append(top5_magnitude(flows[-1]))
    return scores, len(x)


def dynamic_degree(raft, frames: np.ndarray, fps: float) -> bool:
    scores, n = pair_scores(raft, frames, fps)
    return is_dynamic(scores, frames.shape[1], frames.shape[2], n)
