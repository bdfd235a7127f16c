"""Where captioned images come from: a Hugging Face dataset, an image folder with metadata.jsonl, a DreamBooth folder.

Each source only lists its (image, caption) records and opens an image; CaptionedDataModule does the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from priorswap.data.caption_crop import CaptionCrop
from priorswap.data.captioned import CaptionedDataModule, CaptionedImages, CaptionRecord
from priorswap.data.captioned_cache import CachedT2IDataset, t2i_cache_dir
from priorswap.data.dreambooth_prior import PriorPairs, class_images, collate_prior_pairs, image_files
from priorswap.data.hf import HFImages, is_local, load_hf_tables
from priorswap.data.robust import FileImages, RobustImageDataset
from priorswap.data.sampler import SeededItems
from priorswap.toolkit.errors import PriorswapError

METADATA = "metadata.jsonl"


class HFCaptionedDataModule(CaptionedDataModule):
    """A Hugging Face dataset with an image column and a caption column (diffusers' train_text_to_image input).

    The arguments beyond CaptionedDataModule's:

    Args:
        root: a save_to_disk folder, a folder load_dataset reads (e.g. images plus metadata.jsonl), or a hub id.
        image_column: column holding the image.
        caption_column: column holding the caption: a string, or a list of strings of which each item and epoch
            uses one, drawn with the seeded generator.
        split: the split to read.
        config_name: dataset configuration passed to load_dataset.
        cache_dir: the Hugging Face cache for hub ids; None = the library default.
    """

    dataset_name = "hf_captioned"

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
        image_column: str = "image",
        caption_column: str = "text",
        split: str = "train",
        config_name: str | None = None,
        cache_dir: str | None = None,
    ):
        self.image_column, self.caption_column, self.hf_split = image_column, caption_column, split
        self.config_name, self.hf_cache_dir = config_name, cache_dir
        self._table = None
        super().__init__(
            root,
            resolution,
            center_crop,
            random_flip,
            batch_size,
            num_workers,
            seed,
            val_fraction,
            drop_last,
            allow_empty_captions,
            t2i_cache,
        )

    def check_root(self) -> None:
        if is_local(self.root) and not Path(self.root).is_dir():
            raise PriorswapError(
                f"HF dataset folder {self.root} does not exist; expected a save_to_disk folder, "
                "a folder load_dataset understands, or a hub id like 'user/name'"
            )

    def _read_records(self) -> list[CaptionRecord]:
        tables = load_hf_tables(
            self.root, (self.hf_split,), (self.image_column, self.caption_column), self.config_name, self.hf_cache_dir
        )
        self._table = tables[self.hf_split]
        captions = self._table[self.caption_column]  # the text column only: no image is decoded here
        return [CaptionRecord(str(row), c, f"{self.root}:{self.hf_split}[{row}]") for row, c in enumerate(captions)]

    def _image_source(self, images: list[str]) -> RobustImageDataset:
        rows = [int(i) for i in images]
        name = f"{self.root}:{self.hf_split}"
        return HFImages(self._table, rows, [0] * len(rows), self.image_column, None, name)


class CaptionedFolderDataModule(CaptionedDataModule):
    """Images with a metadata.jsonl: `{"file_name": "a.png", "text": "a photo of ..."}` per line.

    The convention of Hugging Face's imagefolder (and so of diffusers' --train_data_dir): every metadata.jsonl under
    `root` is read, in path order, and its `file_name`s are relative to its own folder.

    The arguments beyond CaptionedDataModule's:

    Args:
        root: the folder.
        caption_column: the key of each line that holds the caption (a string or a list of strings).
    """

    dataset_name = "captioned_folder"

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
        caption_column: str = "text",
    ):
        self.caption_column = caption_column
        super().__init__(
            root,
            resolution,
            center_crop,
            random_flip,
            batch_size,
            num_workers,
            seed,
            val_fraction,
            drop_last,
            allow_empty_captions,
            t2i_cache,
        )

    def _metadata_files(self) -> list[Path]:
        return sorted(Path(self.root).rglob(METADATA))

    def check_root(self) -> None:
        if not Path(self.root).is_dir():
            raise PriorswapError(f"captioned folder {self.root} does not exist")
        if not self._metadata_files():
            raise PriorswapError(
                f"captioned folder {self.root} has no {METADATA}; expected lines like "
                '{"file_name": "0001.png", "' + self.caption_column + '": "a photo of ..."} next to the images'
            )

    def _read_records(self) -> list[CaptionRecord]:
        records, keys = [], set()
        for meta in self._metadata_files():
            for number, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError as error:
                    raise PriorswapError(f"{meta} line {number} is not JSON ({error.msg}): {line[:80]!r}") from None
                if not isinstance(entry, dict):
                    raise PriorswapError(f"{meta} line {number} is not a JSON object: {line[:80]!r}")
                keys.update(entry)
                records.append(self._record(meta, number, entry))
        if records and self.caption_column not in keys:
            raise PriorswapError(
                f"{METADATA} in {self.root} has no column {self.caption_column!r}; it has {sorted(keys)}"
            )
        return records

    def _record(self, meta: Path, number: int, entry: dict) -> CaptionRecord:
        where = f"{meta} line {number}"
        name = entry.get("file_name")
        if not isinstance(name, str) or not name:
            return CaptionRecord("", None, where, problem="no file_name")
        path = meta.parent / name
        problem = None if path.is_file() else f"no image file {name}"
        return CaptionRecord(os.path.relpath(path, self.root), entry.get(self.caption_column), where, problem)

    def _image_source(self, images: list[str]) -> RobustImageDataset:
        return FileImages(self.root, images, [0] * len(images), None)


class DreamBoothDataModule(CaptionedDataModule):
    """A DreamBooth folder: a few images of one subject, all captioned with `instance_prompt`.

    As diffusers' train_dreambooth reads --instance_data_dir: the image files directly in `root` (sorted by name),
    each with the same prompt. With `class_data_dir` (prior preservation, ``dreambooth_prior.py``), every training
    batch also holds as many class images captioned with `class_prompt`, and ``T2IFineTune`` adds their loss times
    its `prior_loss_weight`; validation batches (val_fraction > 0) hold instance images only.

    The arguments beyond CaptionedDataModule's:

    Args:
        root: the folder of instance images (diffusers' --instance_data_dir).
        instance_prompt: the caption of every image, e.g. "a photo of sks dog".
        class_data_dir: prior preservation: a folder of images of the subject's class (diffusers'
            --class_data_dir), e.g. made by the base model from class_prompt. None: no prior preservation.
        class_prompt: the caption of every class image, e.g. "a photo of dog".
        num_class_images: class images used (the first, by name); the folder must hold at least this many.
    """

    dataset_name = "dreambooth"

    def __init__(
        self,
        root: str,
        instance_prompt: str,
        resolution: int = 512,
        center_crop: bool = False,
        random_flip: bool = False,
        batch_size: int = 4,
        num_workers: int = 4,
        seed: int = 0,
        val_fraction: float = 0.0,
        drop_last: bool = False,
        t2i_cache: str | None = None,
        class_data_dir: str | None = None,
        class_prompt: str | None = None,
        num_class_images: int = 100,
    ):
        if not isinstance(instance_prompt, str) or not instance_prompt.strip():
            raise PriorswapError(
                f"instance_prompt must be a non-empty string, e.g. 'a photo of sks dog'; got {instance_prompt!r}"
            )
        self.instance_prompt = instance_prompt
        self.class_files = class_images(class_data_dir, class_prompt, num_class_images)
        self.class_data_dir = os.path.expanduser(class_data_dir) if class_data_dir else None
        self.class_prompt, self.num_class_images = class_prompt, num_class_images
        super().__init__(
            root, resolution, center_crop, random_flip, batch_size, num_workers, seed, val_fraction, drop_last,
            t2i_cache=t2i_cache,
        )  # fmt: skip

    def _files(self) -> list[str]:
        return image_files(self.root)

    def check_root(self) -> None:
        if not Path(self.root).is_dir():
            raise PriorswapError(f"DreamBooth instance folder {self.root} does not exist")
        if not self._files():
            raise PriorswapError(f"DreamBooth instance folder {self.root} holds no images (.jpg, .png, ...)")

    def _read_records(self) -> list[CaptionRecord]:
        return [CaptionRecord(name, self.instance_prompt, os.path.join(self.root, name)) for name in self._files()]

    def _image_source(self, images: list[str]) -> RobustImageDataset:
        return FileImages(self.root, images, [0] * len(images), None)

    # ---- prior preservation ------------------------------------------------------------------
    def _class_dataset(self, train: bool) -> CaptionedImages:
        n = len(self.class_files)
        transform = CaptionCrop(self.resolution, self.center_crop or not train, self.flip and train)
        source = FileImages(self.class_data_dir, self.class_files, [0] * n, None)
        return CaptionedImages(source, list(range(n)), [self.class_prompt] * n, transform, self._skip_log)

    def _pixel_dataset(self, ids: list[str], labels: list[int], train: bool):
        items = super()._pixel_dataset(ids, labels, train)
        return PriorPairs(items, self._class_dataset(train)) if train and self.class_files else items

    def _t2i_parts(self, encoder_id: str) -> dict:
        """The class images are cached beside train and val, keyed by their folder, files and prompt."""
        parts = super()._t2i_parts(encoder_id)
        if self.class_files:
            key = {"root": os.path.abspath(self.class_data_dir), "files": self.class_files, "prompt": self.class_prompt}
            identity = hashlib.sha256(json.dumps(key).encode()).hexdigest()
            folder = t2i_cache_dir(
                os.path.expanduser(str(self.t2i_cache)), f"dreambooth_class-{identity}", encoder_id, self.resolution
            )
            meta = {"dataset": "dreambooth_class", "root": key["root"], "prompt": self.class_prompt}
            parts["class"] = (folder, SeededItems(self._class_dataset(train=False), self.seed), meta)
        return parts

    def _serve_t2i(self) -> None:
        super()._serve_t2i()
        if self.class_files:
            self._datasets["train"] = PriorPairs(self._datasets["train"], CachedT2IDataset(self._t2i_dirs["class"]))

    def _collate(self, split: str):
        if isinstance(self._datasets.get(split), PriorPairs):
            return collate_prior_pairs  # (instance, class) pairs -> instance rows, then class rows
        return super()._collate(split)
