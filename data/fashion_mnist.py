"""Fashion-MNIST from the Debian package `dataset-fashion-mnist`: real data that works offline.

The package ships the original gzipped IDX files; they are parsed here with numpy (no decompressed copy).
28x28 grey images are padded with black to 32x32, so a pixel-space DiT sees a power-of-two side.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from priorswap.data.base import Catalog, Channels, ImageDataModule, LatentDtype
from priorswap.data.robust import ArrayImages, RobustImageDataset
from priorswap.data.transforms import PadTransform
from priorswap.toolkit.errors import PriorswapError

DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (optionally .gz): big-endian header, magic 0x00 0x00 <dtype 0x08=uint8> <ndim>."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[:3] != b"\x00\x00\x08":
        raise PriorswapError(f"{path} is not a uint8 IDX file (header {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def find_idx(folder: str | Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


class FashionMNISTDataModule(ImageDataModule):
    """Fashion-MNIST, 10 classes; the official test set is the validation set.

    Images are grey (``channels`` 1); ``channels: 3`` repeats the grey channel (for 3-channel VAEs).
    `root` holds the IDX files (gz or not) directly or under FashionMNIST/raw/ (torchvision's layout);
    with download=True and nothing there, torchvision downloads into `cache_dir` (or `root`).
    E.g. classes=[5, 7, 8, 9] keeps Sandal, Sneaker, Bag, Ankle boot as labels 0..3.
    """

    dataset_name = "fashion_mnist"
    default_channels = 1

    def __init__(
        self,
        root: str = DEBIAN_ROOT,
        resolution: int = 32,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        val_fraction: float = 0.0,
        download: bool = False,
        flip: bool = True,
        cache_dir: str | None = None,
        classes: list[int] | None = None,
        limit_per_class: int | None = None,
        latent_cache: str | None = None,
        latent_dtype: LatentDtype = "float32",
        drop_last: bool = False,
        channels: Channels = 1,
    ):
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        super().__init__(
            root,
            resolution,
            batch_size,
            num_workers,
            seed,
            val_fraction,
            download,
            flip,
            cache_dir,
            classes,
            limit_per_class,
            latent_cache,
            latent_dtype,
            drop_last,
            channels,
        )

    def _folder(self) -> Path | None:
        for folder in (
            Path(self.root),
            Path(self.root) / "FashionMNIST" / "raw",
            Path(self.cache_dir or self.root) / "FashionMNIST" / "raw",
        ):
            if all(find_idx(folder, stem) for pair in FILES.values() for stem in pair):
                return folder
        return None

    def check_root(self) -> None:
        if self._folder() is None:
            raise PriorswapError(
                f"Fashion-MNIST root {self.root} lacks {{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz]; "
                f"run `apt-get install dataset-fashion-mnist` (installs them in {DEBIAN_ROOT}) or set download: true"
            )

    def _download(self) -> None:
        if self._folder() is None:
            from torchvision.datasets import FashionMNIST

            FashionMNIST(self.cache_dir or self.root, train=True, download=True)

    def _load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in self._arrays:
            folder = self._folder()
            images, labels = (read_idx(find_idx(folder, stem)) for stem in FILES[split])
            if len(images) != len(labels):
                raise PriorswapError(f"Fashion-MNIST {split} in {folder}: {len(images)} images, {len(labels)} labels")
            self._arrays[split] = (images, labels)
        return self._arrays[split]

    def _catalog(self) -> Catalog:
        (_, train), (_, test) = self._load("train"), self._load("test")
        if self.val_fraction > 0:  # carve val from train; the test set stays untouched for final FID
            return Catalog(list(CLASS_NAMES), [f"train/{i}" for i in range(len(train))], train.tolist())
        return Catalog(
            list(CLASS_NAMES),
            [f"train/{i}" for i in range(len(train))],
            train.tolist(),
            [f"test/{i}" for i in range(len(test))],
            test.tolist(),
        )

    def _pixel_dataset(self, ids: list[str], labels: list[int], train: bool) -> RobustImageDataset:
        pad = (32 - 28) // 2
        transform = PadTransform(pad, self.resolution, flip=self.flip and train, channels=self.image_channels)
        split = ids[0].split("/")[0] if ids else "train"
        if any(not i.startswith(split + "/") for i in ids):
            raise PriorswapError(f"Fashion-MNIST ids mix splits: {ids[:2]}...")
        rows = [int(i.split("/")[1]) for i in ids]
        return ArrayImages(
            self._load(split)[0],
            rows,
            labels,
            transform,
            name=os.path.join(self.root, FILES[split][0]),
            skip_log=self._skip_log,
        )
