"""Training the demo's metric network, a small CNN on the 10 Fashion-MNIST classes, and its accuracy.

The network itself, its shipped weights and the metrics built on it (FD-FMNIST features, subset accuracy) live in
:mod:`priorswap.toolkit.metrics.fmnist`; their names stay importable from here, where recipes first found them.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor, nn

from ..files import atomic_write
from ..metrics.fmnist import ASSET, FMNISTExtractor, FMNISTNet, FMNISTSubsetClassifier, load_classifier

__all__ = [
    "ASSET",
    "FMNISTExtractor",
    "FMNISTNet",
    "FMNISTSubsetClassifier",
    "accuracy",
    "load_classifier",
    "train_classifier",
]


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
