"""VBench-I2V's per-video dimensions (motion smoothness in ``amt.py``, dynamic degree in ``raft.py``), with VBench's own preprocessing (``vbench/utils.py`` and
``vbench2_beta_i2v/utils.py`` at commit 45e79ec; file:line cited at each step).

Frames are (T, H, W, 3) uint8 arrays as a video reader gives them; VBench turns them into float32 (T, 3, H, W)
tensors of 0-255 values before any resize (``load_video``), and so do these functions. The quality dimensions use
``vbench/utils.py``'s transforms (tensor resizes with ``antialias=False``); I2V subject uses the I2V module's
(tensor ``Resize(256, bicubic)`` with torchvision's default antialias, PIL for the input image), and so does I2V
background (``Resize((224, 224))``, DreamSim's ensemble in ``dreamsim.py``). Dynamic degree is in ``raft.py``,
motion smoothness (AMT-S) in ``amt.py``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from . import formulas

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def as_tensor(frames: np.ndarray) -> Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, H, W) float32 of 0-255 values (``vbench/utils.py`` load_video)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()


def dino_frames(frames: np.ndarray) -> Tensor:
    """``dino_transform(224)`` (``vbench/utils.py`` 49-54): shorter side to 224, bilinear, no antialias, no crop."""
    x = TF.resize(as_tensor(frames), 224, InterpolationMode.BILINEAR, antialias=False) / 255.0
    return TF.normalize(x, *IMAGENET)


def clip_frames(frames: np.ndarray) -> Tensor:
    """``clip_transform(224)`` (``vbench/utils.py`` 33-39): bicubic without antialias, centre crop, CLIP statistics."""
    x = TF.center_crop(TF.resize(as_tensor(frames), 224, InterpolationMode.BICUBIC, antialias=False), 224) / 255.0
    return TF.normalize(x, *CLIP)


def dino_internet_frames(frames: np.ndarray) -> Tensor:
    """``dino_transform_internet`` (``vbench2_beta_i2v/utils.py`` 56-62): tensor bicubic resize to 256 (antialias,
    torchvision's default), centre crop 224; the bicubic overshoot is not clamped."""
    x = TF.center_crop(TF.resize(as_tensor(frames), 256, InterpolationMode.BICUBIC, antialias=True), 224) / 255.0
    return TF.normalize(x, *IMAGENET)


def dino_internet_image(image) -> Tensor:
    """``dino_transform_Image_internet`` (``vbench2_beta_i2v/utils.py`` 64-70): PIL bicubic resize to 256 (PIL's own
    kernel), centre crop 224, ToTensor; the image is used as opened, without ``.convert('RGB')`` (``i2v_subject.py`` 32)."""
    x = TF.to_tensor(TF.center_crop(TF.resize(image, 256, InterpolationMode.BICUBIC), 224))
    return TF.normalize(x, *IMAGENET)[None]


@torch.no_grad()
def subject_consistency(dino, frames: np.ndarray) -> formulas.PairSums:
    """DINO features one frame at a time (``vbench/subject_consistency.py`` 49-53)."""
    x = dino_frames(frames)
    feats = torch.cat([dino(x[i : i + 1].to(_device(dino))) for i in range(len(x))]).cpu()
    return formulas.consistency(feats)


@torch.no_grad()
def background_consistency(clip, frames: np.ndarray) -> formulas.PairSums:
    """CLIP ViT-B/32 on all frames in one batch (``vbench/background_consistency.py`` 41-43)."""
    return formulas.consistency(clip.encode_image(clip_frames(frames).to(_device(clip))).float().cpu())


@torch.no_grad()
def aesthetic_quality(clip, head, frames: np.ndarray, batch_size: int = 32) -> float:
    """Mean over frames of the LAION aesthetic score / 10, CLIP ViT-L/14 in batches of 32
    (``vbench/aesthetic_quality.py`` 20, 53-67)."""
    x = clip_frames(frames)
    scores = [
        head(clip.encode_image(x[i : i + batch_size].to(_device(clip))).float()).cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.mean(torch.cat(scores) / 10, dim=0, keepdim=True).item()


@torch.no_grad()
def i2v_subject(dino, image, frames: np.ndarray) -> float:
    """0.4 max / 0.3 mean / 0.3 min of DINO similarities (``vbench2_beta_i2v/i2v_subject.py`` 27-60)."""
    d = _device(dino)
    img = dino(dino_internet_image(image).to(d)).cpu()
    x = dino_internet_frames(frames)
    feats = torch.cat([dino(x[i : i + 1].to(d)) for i in range(len(x))]).cpu()
    return formulas.i2v_score(img[0], feats)


def dreamsim_frames(frames: np.ndarray) -> Tensor:
    """``dreamsim_transform(224)`` (``vbench2_beta_i2v/utils.py`` 72-76): tensor bicubic resize to 224x224 (the
    aspect ratio is not kept; antialias, torchvision's default), /255, no clamp, no normalisation (DreamSim
    normalises each branch itself)."""
    return TF.resize(as_tensor(frames), [224, 224], InterpolationMode.BICUBIC, antialias=True) / 255.0


def dreamsim_image(image) -> Tensor:
    """``dreamsim_transform_Image(224)`` (``vbench2_beta_i2v/utils.py`` 78-82): PIL bicubic resize to 224x224 (PIL's
    own kernel), ToTensor; the image as opened, without ``.convert('RGB')`` (``i2v_background.py`` 33)."""
    return TF.to_tensor(TF.resize(image, [224, 224], InterpolationMode.BICUBIC))[None]


@torch.no_grad()
def i2v_background(dreamsim, image, frames: np.ndarray) -> float:
    """0.4 max / 0.3 mean / 0.3 min of DreamSim similarities, the I2V subject formula on ``dreamsim.embed`` (its
    ``normalize_embeds``) one frame at a time (``vbench2_beta_i2v/i2v_background.py`` 20-65)."""
    d = _device(dreamsim)
    img = dreamsim.embed(dreamsim_image(image).to(d)).cpu()
    x = dreamsim_frames(frames)
    feats = torch.cat([dreamsim.embed(x[i : i + 1].to(d)) for i in range(len(x))]).cpu()
    return formulas.i2v_score(img[0], feats)


@torch.no_grad()
def imaging_quality(musiq, frames: np.ndarray) -> float:
    """Mean MUSIQ MOS over frames, in MUSIQ's 0-100 units (the dimension divides the mean over videos by 100).
    Frames are resized only when the longer side exceeds 512, to int(scale * side), without antialias
    (``vbench/imaging_quality.py`` 17-37, 'longer' mode), then /255; one frame per call (45-53)."""
    x = as_tensor(frames)
    h, w = x.shape[-2:]
    if max(h, w) > 512:
        scale = 512.0 / max(h, w)
        x = TF.resize(x, [int(scale * h), int(scale * w)], antialias=False)
    x = x / 255.0
    d = _device(musiq)
    total = 0.0
    for i in range(len(x)):
        total += float(musiq(x[i : i + 1].to(d)))
    return total / len(x)


def temporal_flickering(frames: np.ndarray) -> float:
    return formulas.temporal_flickering(frames)


def _device(module) -> torch.device:
    return next(module.parameters()).device
