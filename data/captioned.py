"""Captioned images for text-to-image fine-tunes: the shared datamodule and its dataset.

Batches are {"pixels" (B,3,H,W) in [-1,1], "caption" list[str], "original_size" (B,2) (height, width),
"crop_top_left" (B,2) (top, left), "index" (B,), "id" list[str]}. `index` is the item's row in its source (stable
across seeds, splits and machines) and `id` is `caption_key(index, caption)`, so a caption-embedding cache can be
keyed by it. Everything else (split, seeded resumable order, skipping unreadable images, checkpointed state) is
ImageDataModule's; the three sources in caption_sources.py only list their (image, caption) records.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from priorswap.data.base import SPLITS, Catalog, ImageDataModule
from priorswap.data.caption_crop import CaptionCrop
from priorswap.data.captioned_cache import CachedT2IDataset, T2IEncoder, build_t2i_cache, t2i_cache_dir
from priorswap.data.latent_cache import is_complete
from priorswap.data.robust import RobustImageDataset, SkipLog
from priorswap.data.sampler import SeededItems
from priorswap.toolkit.errors import PriorswapError

log = logging.getLogger(__name__)
SHOWN = 5  # bad captions named in the warning; the rest are counted


def caption_key(index: int, caption: str) -> str:
    """Stable id of one (item, caption) pair: '<index>:<first 16 hex of sha256(caption)>'."""
    return f"{index}:{hashlib.sha256(caption.encode()).hexdigest()[:16]}"


def caption_problem(value: Any, allow_empty: bool) -> str | None:
    """Why `value` cannot be a caption (None if it can): a string, or a non-empty list of strings to pick from."""
    if isinstance(value, (list, tuple)):
        if not value:
            return "empty caption list"
        problems = [caption_problem(v, allow_empty) for v in value if not isinstance(v, (list, tuple))]
        if len(problems) < len(value):
            return "nested caption list"
        return next((f"caption list has {p}" for p in problems if p), None)
    if value is None:
        return "missing caption"
    if not isinstance(value, str):
        return f"caption is {type(value).__name__}, not a string"
    if not value.strip() and not allow_empty:
        return "empty caption (allow_empty_captions: true keeps it)"
    return None


def pick_caption(value: str | list[str]) -> str:
    """The caption itself, or one of a list drawn from torch's RNG (seeded per item by SeededItems)."""
    if isinstance(value, str):
        return value
    return value[int(torch.randint(len(value), ()))]


@dataclass
class CaptionRecord:
    """One item of a source, before checking."""

    image: str  # what the source's image opener takes: a path relative to root, or a table row
    caption: Any  # the raw value; checked by caption_problem
    where: str  # how a warning names it: file (and line) or dataset and row
    problem: str | None = None  # a fault the source already found (e.g. the image file does not exist)


class CaptionedImages(RobustImageDataset):
    """Items {"pixels", "caption", "original_size", "crop_top_left", "index", "id"}; images opened by `source`."""

    def __init__(
        self,
        source: RobustImageDataset,
        rows: list[int],
        captions: list[str | list[str]],
        transform: CaptionCrop,
        skip_log: SkipLog | None = None,
    ):
        super().__init__([0] * len(rows), transform, skip_log)
        self.source, self.rows, self.captions = source, rows, captions

    def open(self, index: int):
        return self.source.open(index)

    def describe(self, index: int) -> str:
        return self.source.describe(index)

    def load(self, index: int) -> dict[str, Any]:
        image = self.open(index)
        image.load()
        pixels, original_size, crop_top_left = self.transform(image)
        caption = pick_caption(self.captions[index])
        row = self.rows[index]
        return {
            "pixels": pixels,
            "caption": caption,
            "original_size": original_size,
            "crop_top_left": crop_top_left,
            "index": torch.tensor(row, dtype=torch.long),
            "id": caption_key(row, caption),
        }


class CaptionedDataModule(ImageDataModule):
    """Captioned images -> text-to-image batches (see the module docstring). Subclasses list records and open images.

    Args:
        root: where the source lives (each source says what it expects).
        resolution: side of the square crop, in pixels.
        center_crop: crop the center; otherwise a random crop per item and epoch (diffusers' default).
        random_flip: flip half of the training images horizontally (diffusers' default is no flip).
        batch_size: per-device batch size.
        num_workers: DataLoader worker processes.
        seed: seeds the split, the order, crops, flips and the choice among a row's captions.
        val_fraction: share held out for validation (0: train on everything; validation is center-cropped).
        drop_last: drop the last incomplete training batch.
        allow_empty_captions: keep items whose caption is empty (unconditional training); otherwise they are skipped.
        t2i_cache: root folder of latent + caption-embedding caches (e.g. ~/.cache/priorswap/t2i); None: encode
            every step. The VAE latents and caption conditions are computed once (``T2IFineTune`` asks for it in
            its setup) and reused by later runs of the same data, model and resolution. A cache holds ONE crop
            per image, so it needs ``center_crop: true`` and ``random_flip: false`` (a random crop or flip changes
            every epoch and cannot be cached), and a row with several captions keeps one of them (seeded).

    Items with a missing, empty or non-string caption (or a missing image file) are named in one warning when the
    source is first read and left out; images that fail to decode are skipped when met, as in ImageDataModule.
    Errors in the configuration (a missing folder or column, an empty source, a metadata line that is not JSON)
    are one line, raised when the datamodule is built: before any model loads.
    """

    dataset_name = "captioned"

    def __init__(
        self,
        root: str,
        resolution: int = 512,
        center_crop: bool = False,
        random_flip: bool = False,
        batch_size: int = 16,
        num_workers: int = 4,
        seed: int = 0,
        val_fraction: float = 0.0,
        drop_last: bool = False,
        allow_empty_captions: bool = False,
        t2i_cache: str | None = None,
    ):
        if t2i_cache is not None and (random_flip or not center_crop):
            raise PriorswapError(
                "t2i_cache stores one crop per image, so it needs center_crop: true and random_flip: false "
                "(random crops and flips change every epoch and cannot be cached)"
            )
        self.center_crop, self.allow_empty_captions = center_crop, allow_empty_captions
        self.t2i_cache = t2i_cache
        self._t2i_dirs: dict[str, Path] = {}
        self._t2i_request: dict | None = None  # arguments of the last build_t2i_cache, to serve it again on restore
        self._records: list[CaptionRecord] | None = None
        self.bad_items: list[str] = []  # "<where>: <problem>" for every item left out when the source was read
        super().__init__(
            root,
            resolution=resolution,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            val_fraction=val_fraction,
            flip=random_flip,
            drop_last=drop_last,
        )
        self.catalog()  # every one-line error of the source now, before the model loads

    # ---- what subclasses provide -------------------------------------------------------------
    def _read_records(self) -> list[CaptionRecord]:
        """Every item of the source in a fixed order; raise PriorswapError for a broken source."""
        raise NotImplementedError

    def _image_source(self, images: list[str]) -> RobustImageDataset:
        """A dataset whose open(i)/describe(i) open and name `images[i]`."""
        raise NotImplementedError

    # ---- catalog -----------------------------------------------------------------------------
    def records(self) -> list[CaptionRecord]:
        if self._records is None:
            self._records = self._read_records()
        return self._records

    def _catalog(self) -> Catalog:
        records = self.records()
        if not records:
            raise PriorswapError(f"{self.dataset_name} source {self.root} holds no items")
        good = []
        for row, record in enumerate(records):
            problem = record.problem or caption_problem(record.caption, self.allow_empty_captions)
            if problem:
                self.bad_items.append(f"{record.where}: {problem}")
            else:
                good.append(row)
        if not good:
            raise PriorswapError(
                f"{self.dataset_name} source {self.root}: all {len(records)} items are unusable, e.g. {self.bad_items[0]}"
            )
        if self.bad_items:
            more = len(self.bad_items) - SHOWN
            log.warning(
                "skipping %d of %d items of %s: %s%s",
                len(self.bad_items),
                len(records),
                self.root,
                "; ".join(self.bad_items[:SHOWN]),
                f"; and {more} more" if more > 0 else "",
            )
        return Catalog(["captioned"], [str(row) for row in good], [0] * len(good))

    def caption_items(self, split: str = "train") -> list[tuple[str, str]]:
        """(id, caption) of every caption a batch of `split` can hold: what a caption-embedding cache precomputes."""
        records = self.records()
        pairs = []
        for row in map(int, self.split_indices()[split]):
            caption = records[row].caption
            for text in [caption] if isinstance(caption, str) else caption:
                pairs.append((caption_key(row, text), text))
        return pairs

    # ---- datasets and state ------------------------------------------------------------------
    def _pixel_dataset(self, ids: list[str], labels: list[int], train: bool) -> RobustImageDataset:
        records = self.records()
        rows = [int(i) for i in ids]
        transform = CaptionCrop(self.resolution, self.center_crop or not train, self.flip and train)
        source = self._image_source([records[row].image for row in rows])
        return CaptionedImages(source, rows, [records[row].caption for row in rows], transform, self._skip_log)

    def _digest(self) -> str:
        """Hash of every record, so a resume can tell that files or captions changed since the checkpoint."""
        payload = [(r.image, r.caption) for r in self.records()]
        return hashlib.sha256(json.dumps(payload, default=str).encode()).hexdigest()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "records_sha256": self._digest()}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict.get("records_sha256") if state_dict else None
        if saved is not None and saved != self._digest():
            log.warning("the captions or files of %s changed since the checkpoint; resuming on the new ones", self.root)
        super().load_state_dict(state_dict)

    def build_latent_cache(self, encode: Callable, encoder_id: str, *args, **kwargs) -> dict:
        raise PriorswapError(
            f"{type(self).__name__} caches latents together with caption embeddings: set t2i_cache "
            "(with center_crop: true and random_flip: false) instead of a latent cache"
        )

    # ---- latent + caption cache (the protocol of priorswap.toolkit.training.t2i_module.T2IFineTune) --------
    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self._t2i_request is not None:  # a restore re-ran setup: serve the cache again (its split may differ)
            self.build_t2i_cache(**self._t2i_request)

    def t2i_cache_dir(self, split: str, encoder_id: str) -> Path:
        """Cache folder of one split: keyed on the source, its exact items and captions, the encoders and size."""
        identity = hashlib.sha256(
            json.dumps(
                {
                    "dataset": self.dataset_name,
                    "root": os.path.abspath(self.root),
                    "split": split,
                    "items": list(self.split_indices()[split]),
                    "records": self._digest(),
                }
            ).encode()
        ).hexdigest()
        root = os.path.expanduser(str(self.t2i_cache))
        return t2i_cache_dir(root, f"{self.dataset_name}-{split}-{identity}", encoder_id, self.resolution)

    def build_t2i_cache(
        self,
        encode: T2IEncoder,
        encoder_id: str,
        rank: int | None = None,
        world_size: int | None = None,
        batch_size: int | None = None,
        chunk_size: int = 256,
    ) -> dict[str, Path]:
        """Encode train and val once (each rank its chunks), wait for every rank, then serve cached rows.

        ``encode(collated items) -> rows`` is the fine-tune's (latent distribution and caption condition);
        rank/world_size default to the attached trainer's. Returns the cache folders."""
        if self.t2i_cache is None:
            raise PriorswapError("t2i_cache is not set; pass a cache folder, e.g. t2i_cache: ~/.cache/priorswap/t2i")
        self._t2i_request = dict(
            encode=encode, encoder_id=encoder_id, rank=rank, world_size=world_size, batch_size=batch_size,
            chunk_size=chunk_size,
        )  # fmt: skip
        trainer = getattr(self, "trainer", None)
        rank = rank if rank is not None else (trainer.global_rank if trainer is not None else 0)
        world_size = world_size if world_size is not None else (trainer.world_size if trainer is not None else 1)
        for name, (folder, pixels, meta) in self._t2i_parts(encoder_id).items():
            build_t2i_cache(
                folder, pixels, encode, meta, rank, world_size, batch_size or self.batch_size, chunk_size,
                self.num_workers,
            )  # fmt: skip
            self._t2i_dirs[name] = folder
        if trainer is not None and world_size > 1:
            trainer.strategy.barrier("t2i_cache")
        incomplete = [str(f) for f in self._t2i_dirs.values() if not is_complete(f)]
        if incomplete and world_size == 1:
            raise PriorswapError(f"text-to-image cache {incomplete[0]} is still incomplete after encoding")
        self._serve_t2i()
        return dict(self._t2i_dirs)

    def _t2i_parts(self, encoder_id: str) -> dict[str, tuple[Path, SeededItems, dict]]:
        """What the cache encodes, by name: (folder, items, metadata) of train and val (a source may add parts)."""
        split, parts = self.split_indices(), {}
        for name in SPLITS:
            pixels = SeededItems(self._pixel_dataset(list(split[name]), [0] * len(split[name]), train=False), self.seed)
            meta = {"dataset": self.dataset_name, "root": os.path.abspath(self.root), "split": name}
            parts[name] = (self.t2i_cache_dir(name, encoder_id), pixels, meta)
        return parts

    def _serve_t2i(self) -> None:
        """Serve the built cache's rows as the splits' datasets."""
        for name in SPLITS:
            self._datasets[name] = CachedT2IDataset(self._t2i_dirs[name])

    def _loader(self, split: str):
        if self.t2i_cache is not None and split not in self._t2i_dirs:
            raise PriorswapError(
                f"t2i_cache={self.t2i_cache} is set but build_t2i_cache(encode, encoder_id) was not called; "
                "the text-to-image fine-tune (T2IFineTune) calls it in its setup"
            )
        return super()._loader(split)
