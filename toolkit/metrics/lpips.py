"""LPIPS (Zhang et al. 2018) with every weight from a local file.

LPIPS = sum_l mean_hw | w_l . (phi_l(x) - phi_l(y)) |^2 over unit-normalised backbone features phi_l.
torchmetrics ships the linear heads w_l (``lpips_models/<net>.pth`` in site-packages) but fetches the
ImageNet backbone from torchvision's servers; here the backbone comes from a local torchvision state
dict (or the torch hub cache, where torchvision keeps downloads), so evaluation runs offline.
"""

from __future__ import annotations

import os

import torch
import torchvision
from torch import nn
from torchmetrics.functional.image.lpips import _NoTrainLpips

from ..errors import PriorswapError
from .extractor import check_images, load_state_dict_file, require_file

_BACKBONES = {
    "alex": ("alexnet", "AlexNet_Weights"),
    "vgg": ("vgg16", "VGG16_Weights"),
    "squeeze": ("squeezenet1_1", "SqueezeNet1_1_Weights"),
}


def backbone_url(net: str) -> str:
    """torchvision's download address for the ImageNet backbone of LPIPS ``net``."""
    return getattr(torchvision.models, _BACKBONES[net][1]).IMAGENET1K_V1.url


def cached_backbone(net: str) -> str | None:
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(backbone_url(net)))
    return path if os.path.isfile(path) else None


class LPIPS(nn.Module):
    """Per-image LPIPS distance (B,) between images in [0, 1]; lower is more similar.

    ``backbone_weights``: torchvision's ImageNet state dict for ``net`` (e.g. ``alexnet-owt-7be5be79.pth``);
    None looks in the torch hub cache and otherwise raises an error naming the URL.
    ``lin_weights``: the LPIPS linear heads; None uses the copy torchmetrics ships.
    """

    def __init__(self, net: str = "alex", backbone_weights: str | None = None, lin_weights: str | None = None):
        super().__init__()

        if net not in _BACKBONES:
            raise PriorswapError(f"LPIPS net {net!r} is unknown; expected one of {', '.join(_BACKBONES)}")
        path = backbone_weights or cached_backbone(net)
        if path is None:
            raise PriorswapError(
                f"LPIPS {net} backbone weights path is None and not in the torch hub cache; download {backbone_url(net)} and pass its path as the LPIPS backbone weights"
            )
        path = require_file(
            path,
            "LPIPS backbone weights",
            f"expected torchvision's {_BACKBONES[net][0]} state dict from {backbone_url(net)}",
        )
        if lin_weights is not None:
            lin_weights = require_file(
                lin_weights,
                "LPIPS linear weights",
                "expected an LPIPS lin-layer .pth such as torchmetrics' lpips_models file",
            )
        # pnet_rand: build the backbone without torchvision's download; its weights are loaded below.
        self.net = _NoTrainLpips(net=net, pnet_rand=True, pretrained=True, model_path=lin_weights)
        tv = getattr(torchvision.models, _BACKBONES[net][0])(weights=None)
        try:
            tv.load_state_dict(load_state_dict_file(path))
        except RuntimeError as e:
            raise PriorswapError(
                f"LPIPS backbone weights {path!r} do not fit torchvision {_BACKBONES[net][0]} ({str(e).splitlines()[0][:120]})"
            ) from None
        for slice_ in (m for n, m in self.net.net.named_children() if n.startswith("slice")):
            for idx, layer in slice_.named_children():  # slices hold torchvision's ``features[idx]`` layers
                layer.load_state_dict(tv.features[int(idx)].state_dict())
        self.net.requires_grad_(False)

    @torch.no_grad()
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = check_images(pred), check_images(target)
        if pred.shape != target.shape:
            raise PriorswapError(
                f"LPIPS image pair has shapes {tuple(pred.shape)} and {tuple(target.shape)}; expected equal shapes"
            )
        dev = next(self.net.parameters()).device
        return self.net(pred.to(dev), target.to(dev), normalize=True).flatten()  # (B,)
