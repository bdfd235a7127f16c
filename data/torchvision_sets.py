"""Food101, SUN397, Caltech101 and plain image folders, read from a local root in torchvision's layouts.

torchvision builds the file lists (so a root that works with torchvision works here); loading is ours,
so that a corrupt file is skipped instead of crashing the epoch. Ids are paths relative to `root`.
"""

from __future__ import annotations

import os
from pathlib import Path

from torchvision import datasets as tvd

from priorswap.data.base import Catalog, ImageDataModule
from priorswap.toolkit.errors import PriorswapError


def _relative(paths: list, root: str) -> list[str]:
    return [os.path.relpath(str(p), root) for p in paths]


class Food101DataModule(ImageDataModule):
    """Food-101 (101 classes, 750 train / 250 test each); its test split is the validation set."""

    dataset_name = "food101"

    def check_root(self) -> None:
        meta = Path(self.root) / "food-101" / "meta"
        for needed in (meta / "train.json", meta / "test.json", Path(self.root) / "food-101" / "images"):
            if not needed.exists():
                raise PriorswapError(
                    f"Food101 root {self.root} has no {os.path.relpath(needed, self.root)}; expected "
                    "food-101/meta/{train,test}.json and food-101/images/<class>/<id>.jpg (or download: true)"
                )

    def _download(self) -> None:
        tvd.Food101(self.root, split="train", download=True)

    def _catalog(self) -> Catalog:
        train, test = tvd.Food101(self.root, split="train"), tvd.Food101(self.root, split="test")
        return Catalog(
            list(train.classes),
            _relative(train._image_files, self.root),
            list(train._labels),
            _relative(test._image_files, self.root),
            list(test._labels),
        )


class SUN397DataModule(ImageDataModule):
    """SUN397 (397 scene classes, ~109k images); no official single split, so a seeded one is made."""

    dataset_name = "sun397"

    def check_root(self) -> None:
        if not (Path(self.root) / "SUN397" / "ClassName.txt").is_file():
            raise PriorswapError(
                f"SUN397 root {self.root} has no SUN397/ClassName.txt; expected SUN397/ClassName.txt "
                "(lines like /a/abbey) and SUN397/<letter>/<class>/sun_*.jpg (or download: true)"
            )

    def _download(self) -> None:
        tvd.SUN397(self.root, download=True)

    def _catalog(self) -> Catalog:
        sun = tvd.SUN397(self.root)
        # torchvision lists files in rglob order, which depends on the file system: sort for a stable split
        pairs = sorted(zip(_relative(sun._image_files, self.root), sun._labels))
        return Catalog(list(sun.classes), [p for p, _ in pairs], [l for _, l in pairs])


class Caltech101DataModule(ImageDataModule):
    """Caltech-101 (101 categories, BACKGROUND_Google excluded); a seeded split is made."""

    dataset_name = "caltech101"

    def check_root(self) -> None:
        categories = Path(self.root) / "caltech101" / "101_ObjectCategories"
        if not (categories / "BACKGROUND_Google").is_dir():
            raise PriorswapError(
                f"Caltech101 root {self.root} has no caltech101/101_ObjectCategories/BACKGROUND_Google; expected "
                "caltech101/101_ObjectCategories/<category>/image_0001.jpg... and a BACKGROUND_Google folder "
                "(or download: true)"
            )

    def _download(self) -> None:
        tvd.Caltech101(self.root, target_type="category", download=True)

    def _catalog(self) -> Catalog:
        cal = tvd.Caltech101(self.root, target_type="category")
        paths = [
            os.path.join("caltech101", "101_ObjectCategories", cal.categories[y], f"image_{i:04d}.jpg")
            for y, i in zip(cal.y, cal.index)
        ]
        return Catalog(list(cal.categories), paths, list(cal.y))


class ImageFolderDataModule(ImageDataModule):
    """Any `root/<class>/<image>` tree (torchvision ImageFolder); classes sorted by name, seeded split."""

    dataset_name = "imagefolder"

    def check_root(self) -> None:
        root = Path(self.root)
        if not root.is_dir() or not any(child.is_dir() for child in root.iterdir()):
            raise PriorswapError(
                f"ImageFolder root {self.root} has no class folders; expected <root>/<class>/<image>.jpg|png|..."
            )

    def _catalog(self) -> Catalog:
        try:
            folder = tvd.ImageFolder(self.root)
        except FileNotFoundError as error:
            raise PriorswapError(f"ImageFolder root {self.root}: {error}") from None
        return Catalog(list(folder.classes), _relative([p for p, _ in folder.samples], self.root), list(folder.targets))
