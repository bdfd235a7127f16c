"""The demo's metric network: a small CNN trained on the 10 Fashion-MNIST classes.

Its 128-d penultimate features drive the Fréchet distance we call **FD-FMNIST** (not Inception FID: the
Inception network is neither available offline nor meaningful on 32x32 grey clothes), and its logits give
label accuracy (does the sample look like the class that was asked for?).
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor, nn

from ..files import atomic_write
from ..metrics import ModuleExtractor


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
        from ..metrics.extractor import file_fingerprint

        path = os.path.abspath(weights or ASSET)
        super().__init__(_Features(load_classifier(path)), 128, f"fd-fmnist-{file_fingerprint(path)}")


def load_classifier(path: str | None = None) -> FMNISTNet:
    from safetensors.torch import load_file

    from ..errors import PriorswapError

    path = path or ASSET
    if not os.path.isfile(path):
        raise PriorswapError(
            f"Fashion-MNIST classifier weights {path!r} not found; `priorswap demo --retrain` rebuilds them"
        )
    net = FMNISTNet()
    net.load_state_dict(load_file(path))
    return net.eval().requires_grad_(False)


def train_classifier(
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    out_path: str,
    epochs: int = 10,
    seed: int = 0,
    batch_size: int = 128,
    progress: bool = True,
) -> float:
    """Train FMNISTNet (Adam 1e-3, cosine decay to 0 over the run) on (images in [0, 1] (N, 1, 32, 32), labels); save safetensors atomically.

    Returns the test accuracy.
    """
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    net = FMNISTNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = train
    steps = epochs * -(-len(x) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda n: 0.5 * (1 + math.cos(math.pi * min(n, steps) / steps)))
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(x), generator=gen)
        for i in tqdm(
            range(0, len(x), batch_size),
            desc=f"classifier epoch {epoch + 1}/{epochs}",
            disable=not progress,
            leave=False,
        ):
            idx = order[i : i + batch_size]
            imgs = x[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            imgs = torch.where(flip[:, None, None, None], imgs.flip(-1), imgs)
            loss = nn.functional.cross_entropy(net(imgs), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    acc = accuracy(net.eval(), *test)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with atomic_write(out_path, "wb") as f:
        save_file(
            {k: v.contiguous() for k, v in net.state_dict().items()},
            f.name,
            metadata={"test_accuracy": f"{acc:.4f}", "epochs": str(epochs)},
        )
    return acc


@torch.no_grad()
def accuracy(net: FMNISTNet, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    hits = 0
    for i in range(0, len(images), batch_size):
        hits += int((net(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum())
    return hits / len(images)
