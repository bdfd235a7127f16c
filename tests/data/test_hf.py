"""HFImageDataModule on a tiny dataset written with save_to_disk (no hub)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import datasets
import pytest
import torch

from priorswap.data import HFImageDataModule
from priorswap.toolkit.errors import PriorswapError

try:
    from tests.fakedata import make_image_folder
except ImportError:
    from fakedata import make_image_folder


def _save(tmp_path, labels_as_strings=False, corrupt=0):
    root = make_image_folder(tmp_path / "img", classes=3, per_class=4, corrupt=corrupt)
    paths = sorted(str(p) for p in (tmp_path / "img").rglob("*.jpg"))
    names = [os.path.basename(os.path.dirname(p)) for p in paths]
    if labels_as_strings:
        features = datasets.Features({"img": datasets.Image(), "kind": datasets.Value("string")})
        table = datasets.Dataset.from_dict({"img": paths, "kind": names}, features=features)
        out = tmp_path / "hf_str"
        datasets.DatasetDict({"train": table}).save_to_disk(str(out))
        return str(out)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog", "fox"])})
    table = datasets.Dataset.from_dict(
        {"image": paths, "label": [["cat", "dog", "fox"].index(n) for n in names]}, features=features
    )
    out = tmp_path / "hf"
    datasets.DatasetDict({"train": table, "test": table.select(range(3))}).save_to_disk(str(out))
    assert root
    return str(out)


def test_hf_saved_dataset_with_classlabel_and_val_split(tmp_path):
    dm = HFImageDataModule(_save(tmp_path), resolution=16, batch_size=32, num_workers=0, val_split="test")
    assert dm.class_names == ["cat", "dog", "fox"] and dm.num_classes == 3
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixels"].shape == (12, 3, 16, 16) and batch["pixels"].abs().max() <= 1
    assert sorted(batch["label"].tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    assert dm.split["val"] == ["test/0", "test/1", "test/2"]


def test_hf_string_labels_custom_columns_seeded_split_and_corrupt(tmp_path):
    path = _save(tmp_path, labels_as_strings=True, corrupt=1)
    dm = HFImageDataModule(
        path,
        resolution=8,
        batch_size=32,
        num_workers=0,
        image_column="img",
        label_column="kind",
        val_fraction=0.25,
        seed=3,
    )
    assert dm.class_names == ["cat", "dog", "fox"]
    dm.setup()
    assert len(dm.split["train"]) + len(dm.split["val"]) == 13
    n_seen = sum(len(b["label"]) for b in dm.train_dataloader()) + sum(len(b["label"]) for b in dm.val_dataloader())
    assert n_seen == 12 and len(dm.pop_skipped()) == 1
    reseeded = HFImageDataModule(
        path, num_workers=0, image_column="img", label_column="kind", val_fraction=0.25, seed=4
    )
    assert reseeded.split_indices()["val"] != dm.split["val"]


def test_hf_bad_paths_columns_and_splits(tmp_path):
    with pytest.raises(PriorswapError, match="does not exist"):
        HFImageDataModule(str(tmp_path / "missing"))
    path = _save(tmp_path)
    with pytest.raises(PriorswapError, match="no column 'picture'"):
        HFImageDataModule(path, image_column="picture", num_workers=0).setup()
    with pytest.raises(PriorswapError, match="no split 'validation'"):
        HFImageDataModule(path, val_split="validation", num_workers=0).setup()
    assert torch.is_tensor(
        HFImageDataModule(path, num_workers=0, resolution=8, val_split="test").val_dataloader().dataset[0]["pixels"]
    )
