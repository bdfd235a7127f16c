"""The shared LightningDataModule: selection, split, loaders, skip counting, checkpointed state, latent cache.

Subclasses only say where a dataset lives (`check_root`, `_download`), what it contains (`_catalog`) and,
if not plain files under `_image_base()`, how to open an item (`_pixel_dataset`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from priorswap.data.latent_cache import CachedLatentDataset, build_latent_cache, cache_dir_for, is_complete
from priorswap.data.robust import FileImages, RobustImageDataset, SkipLog, collate_drop_none
from priorswap.data.sampler import ResumableSampler, SeededItems
from priorswap.data.splits import check_class_ids, limit_per_class, select_classes, stratified_split
from priorswap.data.transforms import AdmTransform
from priorswap.toolkit.errors import PriorswapError

log = logging.getLogger(__name__)
SPLITS = ("train", "val")
LatentDtype = Literal["float32", "float16", "bfloat16"]
Channels = Literal[1, 3, "auto"]  # grey, RGB, or the model's (``priorswap fit`` reads it from the model's config)


@dataclass
class Catalog:
    """Everything a dataset holds, in a fixed order: ids are strings stable across machines (relative paths)."""

    class_names: list[str]
    train_ids: list[str]
    train_labels: list[int]
    val_ids: list[str] | None = None  # None: the dataset has no held-out split; a seeded one is made
    val_labels: list[int] | None = None


class ImageDataModule(L.LightningDataModule):
    """Labelled images -> batches {"pixels" (B,C,H,W) in [-1,1], "label" (B,)}, or cached VAE latents.

    Args:
        root: dataset folder (layout named by each subclass).
        resolution: side of the square crop, in pixels.
        batch_size: per-device batch size.
        num_workers: DataLoader worker processes.
        seed: seeds the train/val split, `limit_per_class`, the shuffling order and the flips (see data/sampler.py).
        val_fraction: share of each class held out when the dataset has no split of its own.
        download: let torchvision fetch the dataset (needs internet); otherwise `root` must already hold it.
        flip: random horizontal flips for training (pixels, or a random stored flip of cached latents).
        cache_dir: where derived files go (downloads, Hugging Face cache); None = library default.
        classes: keep only these class ids, relabelled 0..k-1 in the order given.
        limit_per_class: keep at most this many training images per class (seeded).
        latent_cache: root folder of VAE latent caches; when set, batches hold latents (see build_latent_cache).
        latent_dtype: storage dtype of cached latents: float32, float16 or bfloat16.
        drop_last: drop the last incomplete training batch.
        channels: 1 (grey) or 3 (RGB) image channels, or "auto": what the model takes (``priorswap fit`` reads
            it from the model's config before anything loads; in Python, "auto" is the dataset's own: RGB for
            photos, grey for Fashion-MNIST).
    """

    dataset_name = "images"
    default_channels = 3  # what "auto" means when no model has said otherwise

    def __init__(
        self,
        root: str,
        resolution: int = 256,
        batch_size: int = 64,
        num_workers: int = 4,
        seed: int = 0,
        val_fraction: float = 0.05,
        download: bool = False,
        flip: bool = True,
        cache_dir: str | None = None,
        classes: list[int] | None = None,
        limit_per_class: int | None = None,
        latent_cache: str | None = None,
        latent_dtype: LatentDtype = "float32",
        drop_last: bool = False,
        channels: Channels = 3,
    ):
        super().__init__()
        self.root = os.path.expanduser(root)
        self.resolution, self.batch_size, self.num_workers = resolution, batch_size, num_workers
        self.seed, self.val_fraction, self.download, self.flip = seed, val_fraction, download, flip
        self.cache_dir, self.classes, self.limit_per_class = cache_dir, classes, limit_per_class
        self.latent_cache, self.latent_dtype, self.drop_last = latent_cache, latent_dtype, drop_last
        if not 0.0 <= val_fraction < 1.0:
            raise PriorswapError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if channels not in (1, 3, "auto"):
            raise PriorswapError(f"channels must be 1 (grey), 3 (RGB) or auto (the model's), got {channels!r}")
        self.channels = channels
        self.split: dict[str, list[str]] = {}
        self.skipped_total = 0
        self._catalog_cache: Catalog | None = None
        self._labels: dict[str, list[int]] = {}
        self._class_names: list[str] | None = None
        self._restored: dict | None = None
        self._datasets: dict[str, Dataset] = {}
        self._latent_dirs: dict[str, Path] = {}
        self._latent_request: dict | None = None  # arguments of the last build_latent_cache, to rebuild on restore
        self._skip_log: SkipLog | None = None
        if not download:
            self.check_root()  # refuse a wrong root now, not after the model has loaded

    # ---- what subclasses provide -------------------------------------------------------------
    def check_root(self) -> None:
        """Raise PriorswapError (one line naming the expected layout) if `root` does not hold the dataset."""

    def _download(self) -> None:
        """Fetch the dataset into `root` (called from prepare_data when download=True)."""

    def _catalog(self) -> Catalog:
        raise NotImplementedError

    def _image_base(self) -> str:
        """Folder that the ids of file-based datasets are relative to."""
        return self.root

    def _pixel_dataset(self, ids: list[str], labels: list[int], train: bool) -> RobustImageDataset:
        transform = AdmTransform(self.resolution, flip=self.flip and train, channels=self.image_channels)
        return FileImages(self._image_base(), ids, labels, transform, self._skip_log)

    # ---- selection ---------------------------------------------------------------------------
    def catalog(self) -> Catalog:
        if self._catalog_cache is None:
            self.check_root()
            self._catalog_cache = self._catalog()
        return self._catalog_cache

    @property
    def image_channels(self) -> int:
        """Channels of every image this datamodule yields (1 or 3)."""
        return self.default_channels if self.channels == "auto" else int(self.channels)

    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            names = self.catalog().class_names
            check_class_ids(self.classes, names, self.dataset_name)
            self._class_names = [names[c] for c in self.classes] if self.classes else list(names)
        return self._class_names

    @property
    def num_classes(self) -> int:
        """Known before setup, so a CLI can link it to the model's label table."""
        return len(self.classes) if self.classes else len(self.class_names)

    def _select(self) -> None:
        """Fill self.split / self._labels: held-out or seeded split, class subset, per-class limit."""
        cat = self.catalog()
        ids = {"train": cat.train_ids, "val": cat.val_ids}
        labels = {"train": cat.train_labels, "val": cat.val_labels}
        if cat.val_ids is None:
            train, val = stratified_split(cat.train_labels, self.val_fraction, self.seed)
            ids = {"train": [cat.train_ids[i] for i in train], "val": [cat.train_ids[i] for i in val]}
            labels = {"train": [cat.train_labels[i] for i in train], "val": [cat.train_labels[i] for i in val]}
        if self.classes:
            for s in SPLITS:
                kept, labels[s] = select_classes(labels[s], self.classes, len(cat.class_names))
                ids[s] = [ids[s][i] for i in kept]
        if self.limit_per_class:
            kept = limit_per_class(labels["train"], self.limit_per_class, self.seed)
            ids["train"], labels["train"] = [ids["train"][i] for i in kept], [labels["train"][i] for i in kept]
        if self._restored is not None:
            ids, labels = self._apply_restored(ids, labels)
        self.split, self._labels = ids, labels

    def _apply_restored(self, ids: dict, labels: dict) -> tuple[dict, dict]:
        """Use the split saved in a checkpoint, so a resumed run never leaks val images into train."""
        saved = self._restored
        if saved["class_names"] != self.class_names:
            raise PriorswapError(
                f"checkpoint classes {saved['class_names'][:5]}... differ from the dataset's "
                f"{self.class_names[:5]}...; use the same root and `classes`"
            )
        label_of = {i: l for s in SPLITS for i, l in zip(ids[s], labels[s])}
        missing = [i for s in SPLITS for i in saved["split"][s] if i not in label_of]
        if missing:
            raise PriorswapError(
                f"{len(missing)} images of the checkpoint's split are not in {self.root}, "
                f"e.g. {missing[0]}; restore the dataset or start a new run"
            )
        ids = {s: list(saved["split"][s]) for s in SPLITS}
        return ids, {s: [label_of[i] for i in ids[s]] for s in SPLITS}

    def split_indices(self) -> dict[str, list[str]]:
        """The train/val ids (relative paths or 'split/row'), computing them if setup has not run."""
        if not self.split:
            self._select()
        return self.split

    # ---- Lightning hooks ---------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.download:
            self._download()
        self.check_root()

    def setup(self, stage: str | None = None) -> None:
        self._select()
        if self._skip_log is None:  # one file per process, so DDP ranks count separately
            self._skip_log = SkipLog.create()
        self._datasets = {s: self._pixel_dataset(self.split[s], self._labels[s], train=s == "train") for s in SPLITS}
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            from priorswap.data.skip_report import SkippedImagesReport

            if not any(isinstance(c, SkippedImagesReport) for c in trainer.callbacks):
                trainer.callbacks.append(SkippedImagesReport())

    def teardown(self, stage: str | None = None) -> None:
        if self._skip_log is not None:  # count the last skips, then drop the temp file
            self.pop_skipped()
            Path(self._skip_log.path).unlink(missing_ok=True)
            self._skip_log = None

    def pop_skipped(self) -> list[str]:
        """Images skipped since the last call (all workers of this process); adds them to skipped_total."""
        names = self._skip_log.pop() if self._skip_log is not None else []
        self.skipped_total += len(names)
        return names

    def state_dict(self) -> dict:
        """Saved by Lightning in every checkpoint: label map and split, so sampling and resuming agree."""
        if not self.split:
            self._select()
        return {
            "dataset": self.dataset_name,
            "root": self.root,
            "class_names": self.class_names,
            "num_classes": self.num_classes,
            "classes": self.classes,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "limit_per_class": self.limit_per_class,
            "split": {s: list(self.split[s]) for s in SPLITS},
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if not state_dict:
            return
        self._restored = state_dict
        if self.split:  # Lightning restores after setup: rebuild with the saved split
            before = {s: list(self.split[s]) for s in SPLITS}
            self.setup()
            if self.split != before and self._latent_request is not None:
                log.warning("checkpoint split differs from this config's; re-keying the latent cache")
                self.build_latent_cache(**self._latent_request)

    def _loader(self, split: str) -> DataLoader:
        if not self._datasets and not self._latent_dirs:
            self.setup()
        train = split == "train"
        if self.latent_cache is not None:
            if split not in self._latent_dirs:
                raise PriorswapError(
                    f"latent_cache={self.latent_cache} is set but build_latent_cache(encode, "
                    "encoder_id) was not called; the training module calls it in setup()"
                )
            dataset = CachedLatentDataset(self._latent_dirs[split], flip=self.flip and train)
        else:
            dataset = self._datasets[split]
        sampler = ResumableSampler(len(dataset), seed=self.seed, shuffle=train)
        return DataLoader(
            SeededItems(dataset, self.seed),
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self._collate(split),
            drop_last=self.drop_last and train,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def _collate(self, split: str):
        """How ``split``'s items become a batch: unreadable images dropped (cached latents: torch's default)."""
        return None if self.latent_cache is not None else collate_drop_none

    def train_dataloader(self) -> DataLoader:
        """Seeded per-epoch order, placed by the optimiser step: a resumed run skips the batches already seen."""
        loader = self._loader("train")
        trainer = getattr(self, "trainer", None)
        if trainer is not None:

            def position() -> tuple[int, int]:
                if len(loader) == 0:
                    return 0, 0
                epoch, done = divmod(trainer.global_step * trainer.accumulate_grad_batches, len(loader))
                return epoch, done * self.batch_size

            loader.sampler.follow(position)
        return loader

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    # ---- latent cache ------------------------------------------------------------------------
    def latent_cache_dir(self, split: str, encoder_id: str) -> Path:
        """Cache folder of one split: keyed on dataset name, root, the exact items, encoder and resolution."""
        if self.latent_cache is None:
            raise PriorswapError("latent_cache is not set; pass a cache folder, e.g. latent_cache: ~/.cache/priorswap")
        items = self.split_indices()[split]
        identity = hashlib.sha256(
            json.dumps(
                {
                    "root": os.path.abspath(self.root),
                    "classes": self.classes,
                    "items": items,
                    "labels": self._labels[split],
                }
            ).encode()
        ).hexdigest()
        return cache_dir_for(
            os.path.expanduser(self.latent_cache),
            self.dataset_name,
            split,
            identity,
            encoder_id,
            self.resolution,
            self.latent_dtype,
        )

    def build_latent_cache(
        self,
        encode: Callable,
        encoder_id: str,
        rank: int | None = None,
        world_size: int | None = None,
        batch_size: int = 32,
        chunk_size: int = 512,
    ) -> dict[str, Path]:
        """Encode train and val once (each rank its chunks), wait for all ranks, then serve latents.

        `encode(pixels (B,3,H,W) in [-1,1], on CPU) -> (mean, std)` of the unscaled latent distribution.
        rank/world_size default to the attached trainer's. Returns the cache folders.
        """
        self._latent_request = dict(
            encode=encode,
            encoder_id=encoder_id,
            rank=rank,
            world_size=world_size,
            batch_size=batch_size,
            chunk_size=chunk_size,
        )
        trainer = getattr(self, "trainer", None)
        rank = rank if rank is not None else (trainer.global_rank if trainer is not None else 0)
        world_size = world_size if world_size is not None else (trainer.world_size if trainer is not None else 1)
        if not self.split:
            self._select()
        for split in SPLITS:
            folder = self.latent_cache_dir(split, encoder_id)
            dataset = self._pixel_dataset(self.split[split], self._labels[split], train=False)
            meta = {
                "dataset": self.dataset_name,
                "root": os.path.abspath(self.root),
                "split": split,
                "classes": self.classes,
                "encoder_id": encoder_id,
                "resolution": self.resolution,
            }
            build_latent_cache(
                folder,
                dataset,
                encode,
                meta,
                rank=rank,
                world_size=world_size,
                batch_size=batch_size,
                chunk_size=chunk_size,
                num_workers=self.num_workers,
                dtype=self.latent_dtype,
            )
            self._latent_dirs[split] = folder
        if trainer is not None and world_size > 1:
            trainer.strategy.barrier("latent_cache")
        incomplete = [str(f) for f in self._latent_dirs.values() if not is_complete(f)]
        if incomplete and world_size == 1:
            raise PriorswapError(f"latent cache {incomplete[0]} is still incomplete after encoding")
        return dict(self._latent_dirs)
