"""Datamodules on fabricated torchvision layouts and on the Debian Fashion-MNIST files."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path

import lightning as L
import pytest
import torch

from priorswap.data import (
    Caltech101DataModule,
    FashionMNISTDataModule,
    Food101DataModule,
    ImageFolderDataModule,
    SUN397DataModule,
)
from priorswap.data.fashion_mnist import DEBIAN_ROOT
from priorswap.toolkit.errors import PriorswapError

try:
    from tests.fakedata import make_caltech101, make_food101, make_image_folder, make_sun397
except ImportError:  # tests/ on sys.path instead of the repo root
    from fakedata import make_caltech101, make_food101, make_image_folder, make_sun397

CASES = {
    "food101": (Food101DataModule, make_food101, ["apple_pie", "baby_back_ribs", "baklava"]),
    "sun397": (SUN397DataModule, make_sun397, ["abbey", "bakery/shop", "canyon"]),
    "caltech101": (Caltech101DataModule, make_caltech101, ["Faces_easy", "accordion", "airplanes"]),
    "imagefolder": (ImageFolderDataModule, make_image_folder, ["cat", "dog", "fox"]),
}


def _all(loader):
    batches = [b for b in loader if b is not None]
    return torch.cat([b["pixels"] for b in batches]), torch.cat([b["label"] for b in batches])


@pytest.mark.parametrize("name", list(CASES))
def test_datamodule_batches_labels_and_split(tmp_path, name):
    cls, make, class_names = CASES[name]
    root = make(tmp_path, classes=3, per_class=4)
    dm = cls(root, resolution=16, batch_size=5, num_workers=0, seed=0, val_fraction=0.25)
    assert dm.num_classes == 3 and dm.class_names == class_names
    dm.setup("fit")
    pixels, labels = _all(dm.train_dataloader())
    assert pixels.shape[1:] == (3, 16, 16) and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1 and pixels.std() > 0.05
    assert labels.dtype == torch.long and sorted(labels.unique().tolist()) == [0, 1, 2]
    n_val = 6 if name == "food101" else 3  # Food101 has its own test split; others hold out 1 of 4 per class
    assert len(dm.split["val"]) == n_val
    assert len(dm.split["train"]) == (12 if name == "food101" else 9) and len(pixels) == len(dm.split["train"])
    assert not set(dm.split["train"]) & set(dm.split["val"])
    val_pixels, _ = _all(dm.val_dataloader())
    assert len(val_pixels) == n_val
    # every id is a real file under root, so the split stays meaningful on another machine
    assert all((Path(root) / i).is_file() for i in dm.split["train"] + dm.split["val"])


@pytest.mark.parametrize("name", ["sun397", "caltech101", "imagefolder"])
def test_seeded_split_is_deterministic(tmp_path, name):
    cls, make, _ = CASES[name]
    root = make(tmp_path, classes=3, per_class=6)
    splits = [cls(root, resolution=8, num_workers=0, seed=s, val_fraction=0.5).split_indices() for s in (7, 7, 8)]
    assert splits[0] == splits[1]
    assert splits[0]["val"] != splits[2]["val"]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_root_is_one_line_naming_the_layout(tmp_path, name):
    cls, _, _ = CASES[name]
    with pytest.raises(PriorswapError) as info:
        cls(str(tmp_path / "nowhere"), num_workers=0)
    message = str(info.value)
    assert "\n" not in message and "nowhere" in message and "expected" in message
    assert not (tmp_path / "nowhere").exists()  # refused before torchvision creates folders


def test_corrupt_image_is_skipped_and_counted_across_workers(tmp_path, caplog):
    root = make_food101(tmp_path, classes=2, per_class=3, corrupt=1)
    dm = Food101DataModule(root, resolution=8, batch_size=4, num_workers=1)
    dm.setup("fit")
    for _epoch in range(2):
        _, labels = _all(dm.train_dataloader())
        assert len(labels) == 6  # 7 listed, the corrupt one dropped
        skipped = dm.pop_skipped()
        assert len(skipped) == 1 and skipped[0].endswith("9000.jpg")
    assert dm.skipped_total == 2


def test_a_killed_process_skip_log_is_removed_by_the_next_run(tmp_path, monkeypatch):
    """A rank killed before teardown leaves its skip log in the temporary folder; the next setup removes the logs of
    processes no longer running and keeps those of running ones (another job's live rank)."""
    import subprocess
    import sys
    import tempfile

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp / f"priorswap-skipped-{int(gone.stdout)}-abc.log"
    live = tmp / f"priorswap-skipped-{os.getppid()}-def.log"
    dead.write_text("x.jpg\n")
    live.write_text("y.jpg\n")
    root = make_food101(tmp_path / "food", classes=2, per_class=2)
    dm = Food101DataModule(root, resolution=8, batch_size=2, num_workers=0)
    dm.setup("fit")
    own = [p for p in tmp.iterdir() if p.name.startswith(f"priorswap-skipped-{os.getpid()}-")]
    assert not dead.exists() and live.exists() and len(own) == 1
    dm.teardown("fit")
    assert sorted(p.name for p in tmp.iterdir()) == [live.name]


def test_state_dict_restores_split_and_lightning_saves_it(tmp_path):
    root = make_sun397(tmp_path / "d", classes=3, per_class=6, corrupt=1)
    dm = SUN397DataModule(root, resolution=8, batch_size=4, num_workers=0, seed=1, val_fraction=0.3)

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(3, 3)

        def training_step(self, batch, _):
            return self.layer(batch["pixels"].mean((2, 3))).logsumexp(1).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        limit_val_batches=0,
    )
    trainer.fit(Tiny(), datamodule=dm)
    assert trainer.callback_metrics["data/skipped_images_train"] == 1  # reported by the auto-added callback
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["SUN397DataModule"]
    assert saved["class_names"] == ["abbey", "bakery/shop", "canyon"] and saved["num_classes"] == 3
    assert saved["split"] == dm.split

    other = SUN397DataModule(root, resolution=8, num_workers=0, seed=99, val_fraction=0.3)
    other.setup("fit")
    assert other.split != dm.split
    other.load_state_dict(saved)  # Lightning restores after setup: the saved split wins
    assert other.split == dm.split
    restricted = SUN397DataModule(root, num_workers=0, classes=[0, 1])
    restricted.load_state_dict(saved)
    with pytest.raises(PriorswapError, match="classes"):
        restricted.setup()


def test_class_subset_and_limit_on_image_folder(tmp_path):
    root = make_image_folder(tmp_path, classes=4, per_class=5)
    dm = ImageFolderDataModule(root, resolution=8, num_workers=0, classes=[3, 1], limit_per_class=2, val_fraction=0.2)
    assert dm.num_classes == 2 and dm.class_names == ["owl", "dog"]
    dm.setup()
    _, labels = _all(dm.train_dataloader())
    assert sorted(labels.tolist()) == [0, 0, 1, 1]
    assert {i.split("/")[0] for i in dm.split["train"]} == {"owl", "dog"}


fashion_missing = not Path(DEBIAN_ROOT, "train-images-idx3-ubyte.gz").is_file()


@pytest.mark.skipif(fashion_missing, reason="Debian package dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_files():
    dm = FashionMNISTDataModule(batch_size=16, num_workers=0, flip=False)
    assert dm.num_classes == 10 and dm.class_names[9] == "Ankle boot"
    dm.setup()
    assert len(dm.split["train"]) == 60000 and len(dm.split["val"]) == 10000
    first = dm._datasets["train"][0]
    assert first["label"] == 9  # the first Fashion-MNIST training image is an ankle boot
    batch = next(iter(dm.val_dataloader()))
    assert batch["pixels"].shape == (16, 1, 32, 32)
    assert batch["pixels"].min() == -1 and batch["pixels"].max() <= 1
    assert batch["pixels"][:, :, :2].eq(-1).all() and batch["pixels"][:, :, :, -2:].eq(-1).all()  # black padding


@pytest.mark.skipif(fashion_missing, reason="Debian package dataset-fashion-mnist is not installed")
def test_fashion_mnist_class_subset_relabelled_and_limited():
    dm = FashionMNISTDataModule(classes=[5, 7, 8, 9], limit_per_class=3, batch_size=100, num_workers=0, seed=0)
    assert dm.class_names == ["Sandal", "Sneaker", "Bag", "Ankle boot"] and dm.num_classes == 4
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert sorted(batch["label"].tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    _, raw_labels = dm._load("train")
    assert [int(raw_labels[int(i.split("/")[1])]) for i in dm.split["train"][:1]][0] in (5, 7, 8, 9)
    assert len(dm.split["val"]) == 4000  # 1000 test images per kept class
    reseeded = FashionMNISTDataModule(classes=[5, 7, 8, 9], limit_per_class=3, num_workers=0, seed=1)
    assert reseeded.split_indices()["train"] != dm.split["train"]
    assert (
        FashionMNISTDataModule(classes=[5, 7, 8, 9], limit_per_class=3, num_workers=0, seed=0).split_indices()["train"]
        == dm.split["train"]
    )


def test_fashion_mnist_missing_files_name_the_debian_package(tmp_path):
    with pytest.raises(PriorswapError, match="apt-get install dataset-fashion-mnist") as info:
        FashionMNISTDataModule(root=str(tmp_path))
    assert "\n" not in str(info.value)


def test_image_folder_reads_grey_when_asked_and_refuses_other_channel_counts(tmp_path):
    root = make_image_folder(tmp_path, classes=2, per_class=3)
    for channels, expected in ((1, 1), (3, 3), ("auto", 3)):  # auto without a model: the dataset's own (RGB)
        dm = ImageFolderDataModule(root, resolution=8, batch_size=6, num_workers=0, channels=channels)
        dm.setup("fit")
        assert next(iter(dm.train_dataloader()))["pixels"].shape[1:] == (expected, 8, 8)
    with pytest.raises(PriorswapError, match="channels must be 1"):
        ImageFolderDataModule(root, channels=2)


def test_class_ids_out_of_range_are_one_line_when_the_label_map_is_read(tmp_path):
    dm = ImageFolderDataModule(make_image_folder(tmp_path, classes=3, per_class=2), classes=[1, 5], num_workers=0)
    with pytest.raises(PriorswapError, match=r"3 classes, ids 0..2; 5 is out of range"):
        _ = dm.class_names  # what `priorswap fit` links to the model, before the model is built
