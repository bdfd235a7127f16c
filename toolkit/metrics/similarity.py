"""Image-image similarity in a feature space: DINOv2 similarity (Versatile Diffusion's image variation eval).

sim(a, b) = cos(phi(a), phi(b)) per pair, with phi any FeatureExtractor (DINOv2 CLS token by default).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import PriorswapError
from .extractor import FeatureExtractor


@torch.no_grad()
def feature_cosine(extractor: FeatureExtractor, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
    """(B,) cosine similarity of ``extractor`` features of paired images in [0, 1]."""
    if images_a.shape[0] != images_b.shape[0]:
        raise PriorswapError(
            f"image pair batches have {images_a.shape[0]} and {images_b.shape[0]} images; expected equal batch sizes"
        )
    return F.cosine_similarity(extractor(images_a), extractor(images_b), dim=-1, eps=1e-8)


dino_similarity = feature_cosine
