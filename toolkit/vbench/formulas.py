"""VBench-I2V's per-video formulas and aggregations, as pure functions of features or frames.

Line numbers cite ``Vchitect/VBench`` at commit 45e79ec. VBench accumulates Python floats from float32 cosines
(``F.cosine_similarity(...).item()``, clamped only below with ``max(0.0, .)``); so do these functions, so that
the last digits agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch.nn.functional as F
from torch import Tensor


def _cos(a: Tensor, b: Tensor) -> float:
    return max(0.0, F.cosine_similarity(a[None], b[None]).item())


@dataclass(frozen=True)
class PairSums:
    """One video's consistency: the sum over frames i >= 1 and the number of those frames."""

    total: float
    count: int

    @property
    def video_value(self) -> float:  # what VBench reports per video (sim_per_images)
        return self.total / self.count


def consistency(features: Tensor) -> PairSums:
    """Subject / background consistency of one video: for i >= 1, [max(0, cos(f_{i-1}, f_i)) + max(0, cos(f_0, f_i))] / 2
    (``vbench/subject_consistency.py`` 49-64, ``background_consistency.py`` 44-58); features L2-normalised first."""
    f = F.normalize(features.float(), dim=-1, p=2)
    total = 0.0
    for i in range(1, len(f)):
        total += (_cos(f[i - 1], f[i]) + _cos(f[0], f[i])) / 2
    return PairSums(total, len(f) - 1)


def frame_weighted(videos: Sequence[PairSums]) -> float:
    """The dimension's score: sum of all videos' pair sums over all pairs (``subject_consistency.py`` 65-68), which
    equals the mean of the videos only when every video has the same length."""
    return sum(v.total for v in videos) / sum(v.count for v in videos)


def i2v_score(image_feature: Tensor, frame_features: Tensor) -> float:
    """I2V subject / background of one video: 0.4 max_t max(0, cos(img, f_t)) + 0.3 mean and 0.3 min over t >= 1 of
    max(0, cos(f_{t-1}, f_t)) (``vbench2_beta_i2v/i2v_subject.py`` 23-25, 43-60)."""
    img = F.normalize(image_feature.float().reshape(-1), dim=-1, p=2)
    f = F.normalize(frame_features.float(), dim=-1, p=2)
    conformity = [_cos(img, f[t]) for t in range(len(f))]
    consec = [_cos(f[t - 1], f[t]) for t in range(1, len(f))]
    return float(0.4 * np.max(conformity) + 0.3 * np.mean(consec) + 0.3 * np.min(consec))


def temporal_flickering(frames: np.ndarray) -> float:
    """(255 - mean over consecutive pairs of the mean |frame_{i+1} - frame_i|) / 255 of one video's uint8 frames
    (T, H, W, 3), in float32 as ``cv2.absdiff`` of float32 arrays (``vbench/temporal_flickering.py`` 30-49)."""
    f = np.asarray(frames, dtype=np.float32)
    maes = np.array([np.mean(np.abs(f[i] - f[i + 1])) for i in range(len(f) - 1)])
    return (255.0 - np.mean(maes).item()) / 255.0


def mean_over_videos(values: Sequence[float]) -> float:
    """Every other dimension's score: the plain mean of the per-video values."""
    return float(np.mean(values))
