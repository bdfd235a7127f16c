"""The Fashion-MNIST metric network: a small CNN trained on the 10 Fashion-MNIST classes (shipped weights).

Its 128-d penultimate features drive the Fréchet distance we call **FD-FMNIST** (not Inception FID: the
Inception network is neither available offline nor meaningful on 32x32 grey clothes), and its logits give
label accuracy (does the sample look like the class that was asked for?). It is trained by
``priorswap.toolkit.demo.classifier.train_classifier``.
"""

from __future__ import annotations

import os

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from ..errors import PriorswapError
from .extractor import ModuleExtractor, file_fingerprint


class FMNISTNet(nn.Module):
    """(B, 1, 32, 32) images in [0, 1] -> 128-d features -> 10 logits."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 32, 16, 16)
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 64, 8, 8)
            nn.Conv2d(64, 128, 3, padding=1),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),  # (B, 128, 1, 1)
            nn.Flatten(),
        )
        self.head = nn.Linear(128, 10)

    def features(self, images: Tensor) -> Tensor:
        x = images[:, :1] * 2 - 1  # grey, [-1, 1]
        return self.body(x)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


class _Features(nn.Module):
    def __init__(self, net: FMNISTNet):
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> Tensor:
        return self.net.features(images)


class FMNISTSubsetClassifier(nn.Module):
    """Logits for a fine-tune's relabelled classes: column j is original class ``classes[j]``, and one last
    column holds the best other class, so argmax == j exactly when the 10-way prediction is ``classes[j]``.
    ``classes=None`` gives the plain 10-way logits."""

    def __init__(self, classes: list[int] | None = None, weights: str | None = None):
        super().__init__()
        self.net, self.classes = load_classifier(weights), classes

    def forward(self, images: Tensor) -> Tensor:
        logits = self.net(images)  # (B, 10)
        if self.classes is None:
            return logits
        keep = logits[:, self.classes]
        others = [c for c in range(10) if c not in self.classes]
        return torch.cat([keep, logits[:, others].max(dim=1, keepdim=True).values], dim=1)


ASSET = os.path.join(os.path.dirname(__file__), "..", "assets", "fmnist_classifier.safetensors")


class FMNISTExtractor(ModuleExtractor):
    """FD-FMNIST features (128-d) of the shipped classifier; usable from YAML as a ``PriorSwapEval`` extractor.

    RGB inputs are read through their first channel, so the tiny Food101 recipe can use it too (as a
    plumbing check there, not as a meaningful metric).
    """

    def __init__(self, weights: str | None = None):
        path = os.path.abspath(weights or ASSET)
        super().__init__(_Features(load_classifier(path)), 128, f"fd-fmnist-{file_fingerprint(path)}")


def load_classifier(path: str | None = None) -> FMNISTNet:
    """The shipped network (or the same network's weights at ``path``), frozen and in eval mode."""
    path = path or ASSET
    if not os.path.isfile(path):
        raise PriorswapError(
            f"Fashion-MNIST classifier weights {path!r} not found; `priorswap demo --retrain` rebuilds them"
        )
    net = FMNISTNet()
    net.load_state_dict(load_file(path))
    return net.eval().requires_grad_(False)
