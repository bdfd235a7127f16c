"""Pick a feature extractor by name, so configs say ``inception``/``dinov2``/a file path and nothing more."""

from __future__ import annotations

import os

from ..errors import PriorswapError
from .dinov2 import DINOV2_MODEL, DINOv2Extractor
from .extractor import FeatureExtractor, load_feature_network
from .fmnist import FMNISTExtractor
from .inception import InceptionExtractor

EXTRACTORS = ("inception", "dinov2", "fmnist")


def build_extractor(
    name: str,
    weights: str | None = None,
    model_name: str | None = None,
    image_size: int | None = None,
    allow_download: bool = False,
    weights_flag: str | None = None,
) -> FeatureExtractor:
    """``inception`` (FID/IS), ``dinov2`` (FD-DINOv2; ``model_name``/``image_size`` override the timm network),
    ``fmnist`` (FD-FMNIST, the demo's shipped classifier; ``weights`` another file of the same network),
    or the path of a feature network (torch.export ``.pt2`` or TorchScript). Weights are checked now, before any long run
    starts. ``weights_flag`` says how the caller's user passes a weights file (e.g. ``as --extractor-weights FILE``)
    in the error raised when none is found."""
    key = str(name).strip().lower()
    if key == "inception":
        return InceptionExtractor(weights, allow_download=allow_download, weights_flag=weights_flag)
    if key == "dinov2":
        return DINOv2Extractor(
            weights,
            model_name or DINOV2_MODEL,
            image_size or 224,
            allow_download=allow_download,
            weights_flag=weights_flag,
        )
    if key == "fmnist":  # the shipped Fashion-MNIST classifier's 128-d features (FD-FMNIST); works offline
        return FMNISTExtractor(weights)
    if os.path.isfile(os.path.expanduser(str(name))):
        return load_feature_network(name, image_size=image_size)
    raise PriorswapError(
        f"feature extractor {name!r} is unknown; expected one of {', '.join(EXTRACTORS)} or the path of a feature network (torch.export .pt2 or TorchScript)"
    )


def metric_name(extractor: object) -> str:
    """The name results carry for the Fréchet distance in ``extractor``'s features (``fid`` only for Inception)."""
    return {"inception": "fid", "dinov2": "fd_dinov2", "fmnist": "fd_fmnist"}.get(str(extractor).strip().lower(), "fd")
