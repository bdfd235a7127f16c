"""Fashion-MNIST as tensors (images in [0, 1], padded to 32x32) for the demo's classifier and reference sets."""

from __future__ import annotations

import torch
from torch import Tensor

from priorswap.data.fashion_mnist import DEBIAN_ROOT, FILES, find_idx, read_idx
from priorswap.toolkit.errors import PriorswapError


def load_split(split: str, root: str = DEBIAN_ROOT, classes: list[int] | None = None) -> tuple[Tensor, Tensor]:
    """(images (N, 1, 32, 32) float in [0, 1], labels (N,)) of 'train' or 'test'; ``classes`` keeps and relabels a subset."""
    img_file, lab_file = (find_idx(root, stem) for stem in FILES[split])
    if img_file is None or lab_file is None:
        raise PriorswapError(
            f"Fashion-MNIST files not found under {root}; install them with `apt-get install dataset-fashion-mnist`"
        )
    images = torch.from_numpy(read_idx(img_file).copy()).float().div(255)[:, None]  # (N, 1, 28, 28)
    images = torch.nn.functional.pad(images, (2, 2, 2, 2))  # (N, 1, 32, 32), black border like the datamodule
    labels = torch.from_numpy(read_idx(lab_file).astype("int64"))
    if classes is not None:
        keep = torch.isin(labels, torch.tensor(classes))
        images, labels = images[keep], labels[keep]
        remap = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([remap[int(v)] for v in labels])
    return images, labels
