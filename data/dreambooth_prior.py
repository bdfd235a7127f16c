"""DreamBooth prior preservation: class images under a class prompt, paired into every training batch.

As diffusers' ``train_dreambooth_lora*.py`` do it: item i of an epoch is instance image i % n_instance together with
class image i % n_class (an epoch is max(n_instance, n_class) items), and a batch is its instance examples followed
by its class examples, so one forward pass serves both; the loss (``T2IFineTune``) is the instance rows' loss plus
``prior_loss_weight`` times the class rows'. The scripts sample missing class images from the base pipeline before
training; priorswap has no command that writes generated images to a folder, so it refuses instead and says how
many are missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from priorswap.toolkit.errors import PriorswapError


def image_files(folder: str | Path) -> list[str]:
    """Names of the image files directly in ``folder`` (by extension PIL knows), sorted; hidden files left out."""
    extensions = Image.registered_extensions()
    return sorted(
        p.name
        for p in Path(folder).iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
    )


def class_images(class_data_dir: str | None, class_prompt: str | None, num_class_images: int) -> list[str]:
    """The first ``num_class_images`` class image names (sorted), or [] without prior preservation; a one-line
    error for options that do not make a prior-preservation set."""
    if class_data_dir is None:
        if class_prompt is not None:
            raise PriorswapError(
                f"class_prompt {class_prompt!r} is set but class_data_dir is not: prior preservation needs a folder "
                "of class images (or unset class_prompt to train without it)"
            )
        return []
    if not isinstance(class_prompt, str) or not class_prompt.strip():
        raise PriorswapError(
            f"class_data_dir {class_data_dir} needs class_prompt, the caption of its images, e.g. 'a photo of dog'"
        )
    if num_class_images < 1:
        raise PriorswapError(f"num_class_images must be >= 1, got {num_class_images}")
    folder = Path(class_data_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise PriorswapError(f"class_data_dir {class_data_dir} is a file; expected a folder of class images")
    found = image_files(folder) if folder.is_dir() else []
    if len(found) < num_class_images:
        where = "does not exist" if not folder.is_dir() else f"holds {len(found)} images"
        raise PriorswapError(
            f"class_data_dir {class_data_dir} {where}, num_class_images needs {num_class_images}: put "
            f"{num_class_images - len(found)} more images of {class_prompt!r} there (diffusers' DreamBooth scripts "
            "sample them from the base model with the class prompt; priorswap does not generate them), "
            "or lower num_class_images"
        )
    return found[:num_class_images]


class PriorPairs(Dataset):
    """Item i: {"instance": instance item i % n, "class": class item i % m}; None when either could not be read
    (its dataset has reported it), so a batch's two halves stay the same size."""

    def __init__(self, instances: Dataset, classes: Dataset):
        self.instances, self.classes = instances, classes

    def __len__(self) -> int:
        return max(len(self.instances), len(self.classes))  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        instance = self.instances[index % len(self.instances)]  # type: ignore[arg-type]
        cls = self.classes[index % len(self.classes)]  # type: ignore[arg-type]
        if instance is None or cls is None:
            return None
        return {"instance": instance, "class": cls}


def collate_prior_pairs(pairs: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """One batch: the pairs' instance items, then their class items, with "prior" (B,) True on the class rows."""
    good = [p for p in pairs if p is not None]
    if not good:
        return None
    batch = default_collate([p["instance"] for p in good] + [p["class"] for p in good])
    batch["prior"] = torch.arange(2 * len(good)) >= len(good)
    return batch
