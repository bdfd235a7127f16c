"""Motion Smoothness: AMT-S (``amt_net.py``) read from the ``amt-s.pth`` that VBench loads, and VBench's per-video
rule (``vbench/motion_smoothness.py`` at 45e79ec, lines cited below): interpolate between the even frames, compare
each result with the odd frame it stands for.

Checked once against upstream's own code (``networks/AMT-S.py`` and ``MotionSmoothness.motion_score``) with a
seeded fabricated state dict in upstream's layout: ``imgt_pred`` identical in float32 (max difference 0.0) on
256x256, 128x160 and replicate-padded 201x137 pairs, and the scores of synthetic 16-frame 256x256 and 15-frame
201x137 videos identical; ``tests/vbench/test_amt.py`` keeps a reference made by upstream.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import PriorswapError
from ..metrics.extractor import load_state_dict_file, require_file
from .amt_net import AMTS

MIN_SIDE = 128  # padded side below which the 4th correlation level is 1 pixel wide (see ``check_size``)


def load_amt(weights: str) -> AMTS:
    """AMT-S with the weights of ``amt-s.pth`` (AMT's trainer checkpoint: ``{'epoch', 'state_dict', 'optim'}``,
    ``base_trainer.py`` 219-227) or a bare state dict, read weights-only and loaded strictly."""
    path = require_file(weights, "AMT-S weights", "expected amt-s.pth (MCG-NKU/AMT, as VBench downloads it)")
    state = load_state_dict_file(path)
    model = AMTS()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise PriorswapError(
            f"AMT-S weights {path!r} do not fit AMT-S ({first[:150]}); expected amt-s.pth's state_dict"
        ) from None
    return model.eval().requires_grad_(False)


def check_size(h: int, w: int) -> None:
    """Frames padded to 16 must be at least ``MIN_SIDE`` a side: below it the last correlation level is one pixel
    and upstream's ``2 x / (W - 1)`` divides by zero (``networks/blocks/raft.py`` 14-15): upstream returns NaN frames there."""
    ph, pw = -(-h // 16) * 16, -(-w // 16) * 16
    if min(ph, pw) < MIN_SIDE:
        raise PriorswapError(
            f"Motion Smoothness needs frames of at least {MIN_SIDE - 15}x{MIN_SIDE - 15} pixels (AMT-S's correlation "
            f"pyramid), got {h}x{w}"
        )


def pad16(x: Tensor) -> tuple[Tensor, tuple[int, int, int, int]]:
    """``InputPadder(dims, 16)``: replicate-pad H and W up to multiples of 16, split evenly, the extra pixel after
    (``utils/utils.py`` 54-66; VBench's divisor ``int(16 / scale)`` is 16 at scale 1, ``motion_smoothness.py`` 131)."""
    h, w = x.shape[-2:]
    ph, pw = (16 - h % 16) % 16, (16 - w % 16) % 16
    pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    return F.pad(x, list(pads), mode="replicate"), pads


def to_uint8(x: Tensor, pads: tuple[int, int, int, int]) -> np.ndarray:
    """Unpad (``utils/utils.py`` 74-77), then ``tensor2img``: x 255, clip, ``astype(uint8)`` truncates (86-89)."""
    left, right, top, bottom = pads
    h, w = x.shape[-2:]
    x = x[..., top : h - bottom, left : w - right]
    return (x * 255.0).squeeze(0).permute(1, 2, 0).cpu().numpy().clip(0, 255).astype(np.uint8)


@torch.no_grad()
def interpolated(amt, frames: np.ndarray) -> list[np.ndarray]:
    """The midpoints AMT-S puts between frames 0-2, 2-4, ... (one per consecutive pair of even frames), as uint8
    (``motion_smoothness.py`` 120-150, one iteration at scale 1, VBench's CPU branch 100-105, 126-131). VBench's CUDA
    branch (94-99, 126-128) also gives scale 1 unless a frame exceeds 1024 x 512 x sqrt((VRAM - 2500 MiB) / 1500 MiB)
    pixels (about 2 megapixels on a 24 GiB card); that downscaled path is not reproduced here."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise PriorswapError(f"Motion Smoothness takes (T, H, W, 3) uint8 frames, got {frames.dtype} {frames.shape}")
    even = frames[0::2]  # extract_frame(start_from=0), 63-67
    if len(even) < 2:
        raise PriorswapError(f"Motion Smoothness needs at least 3 frames (two even ones), got {len(frames)}")
    check_size(*frames.shape[1:3])
    device = next(amt.parameters()).device if isinstance(amt, nn.Module) else torch.device("cpu")
    x = torch.from_numpy(np.ascontiguousarray(even)).permute(0, 3, 1, 2) / 255.0  # img2tensor, utils/utils.py 80-83
    x, pads = pad16(x)
    out = []
    for a, b in zip(x[:-1], x[1:]):  # 140-145
        mid = amt(a[None].to(device), b[None].to(device), 0.5, 1.0)
        out.append(to_uint8(mid.cpu(), pads))
    return out


def smoothness_score(frames: np.ndarray, mids: list[np.ndarray]) -> float:
    """(255 - mean over the interpolated frames of mean |odd frame - midpoint|) / 255; odd frames 1, 3, ... are
    taken only as far as there are midpoints, so frame 15 of 16 is never compared (``motion_smoothness.py`` 151-167)."""
    odd = np.asarray(frames)[1::2]
    diffs = [np.mean(np.abs(odd[i].astype(np.int16) - mids[i].astype(np.int16))) for i in range(len(mids))]  # absdiff
    return (255.0 - float(np.mean(np.array(diffs)))) / 255.0


def motion_smoothness(amt, frames: np.ndarray) -> float:
    """One video's Motion Smoothness from its (T, H, W, 3) uint8 RGB frames."""
    return smoothness_score(frames, interpolated(amt, frames))
