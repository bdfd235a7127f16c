"""DINOv2 features for FD-DINOv2 (Stein et al. 2023, "Exposing flaws of generative model evaluation metrics").

FD-DINOv2 is the Fréchet distance over the CLS token of DINOv2 ViT-L/14 at 224 px with ImageNet
normalisation. Built through timm, so ``model_name`` may be any timm ViT (tests use a tiny random one);
the pretrained weights come from a local file, and the hub is used only when ``allow_download`` is set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import PriorswapError
from .extractor import FeatureExtractor, file_fingerprint, require_file

DINOV2_MODEL = "vit_large_patch14_dinov2.lvd142m"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DINOv2Extractor(FeatureExtractor):
    """CLS-token features of a timm ViT, images resized (bicubic, antialiased) to ``image_size`` px.

    ``weights_path``: a local ``.safetensors``/``.pth`` state dict (timm's or Meta's DINOv2 format); timm
    resamples the position embeddings to ``image_size`` while loading. With None the hub copy is used only
    if ``allow_download``; otherwise a one-line error names the file to download. ``pretrained=False``
    builds a randomly initialised network (tests only).
    """

    def __init__(
        self,
        weights_path: str | None = None,
        model_name: str = DINOV2_MODEL,
        image_size: int = 224,
        allow_download: bool = False,
        pretrained: bool = True,
        weights_flag: str | None = None,
    ):
        super().__init__()
        import timm  # only this extractor needs timm

        if not timm.is_model(model_name.split(".")[0]):
            raise PriorswapError(
                f"timm model {model_name!r} is unknown; expected a timm ViT name such as {DINOV2_MODEL!r}"
            )
        kwargs = dict(num_classes=0, global_pool="token", img_size=int(image_size))
        if not pretrained:
            tag = "random"
            self.net = timm.create_model(model_name, pretrained=False, **kwargs)
        elif weights_path is None:
            if not allow_download:
                raise PriorswapError(
                    f"no DINOv2 weights given, and downloads are off; download model.safetensors of the hub repo "
                    f"timm/{model_name} and pass it {weights_flag or 'as the extractor weights_path'}"
                )
            tag = "hub"
            self.net = timm.create_model(model_name, pretrained=True, **kwargs)
        else:
            path = require_file(
                weights_path,
                "DINOv2 weights",
                f"expected a .safetensors or .pth state dict of timm model {model_name!r}",
            )
            tag = file_fingerprint(path)
            try:
                self.net = timm.create_model(
                    model_name, pretrained=True, pretrained_cfg_overlay=dict(file=path), **kwargs
                )
            except RuntimeError as e:
                raise PriorswapError(
                    f"DINOv2 weights {path!r} do not fit timm model {model_name!r} ({str(e).splitlines()[0][:120]})"
                ) from None
        self.net.eval().requires_grad_(False)
        self.dim = int(self.net.num_features)
        self.image_size = int(image_size)
        self.name = f"{model_name}-{self.image_size}px-{tag}"
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        size = (self.image_size, self.image_size)
        x = F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(
            0, 1
        )  # (B, 3, S, S)
        return self.net((x - self.mean) / self.std).float()  # (B, dim) CLS token after the final norm
