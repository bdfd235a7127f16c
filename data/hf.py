"""Any Hugging Face `datasets` image-classification dataset, by hub id or local folder.

A folder written by `save_to_disk` is read with `load_from_disk`; anything else goes to `load_dataset`
(hub ids need internet, or an already filled `cache_dir` with HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from priorswap.data.base import Catalog, Channels, ImageDataModule, LatentDtype
from priorswap.data.robust import RobustImageDataset
from priorswap.data.transforms import AdmTransform
from priorswap.toolkit.errors import PriorswapError


def is_local(root: str) -> bool:
    """A path (not a hub id): it starts like one or exists."""
    return root.startswith(("/", ".", "~")) or Path(root).exists()


def load_hf_tables(
    root: str,
    splits: tuple[str | None, ...],
    columns: tuple[str, ...],
    config_name: str | None = None,
    cache_dir: str | None = None,
) -> dict:
    """{split: datasets.Dataset} of a save_to_disk folder, a folder load_dataset reads, or a hub id.

    One line if a wanted split or column is missing (naming those that exist); `splits[0]` is the one trained on
    and a lone Dataset (no DatasetDict) is taken as that split.
    """
    import datasets  # heavy optional dependency, needed only by the Hugging Face sources

    saved = Path(root)
    if is_local(root) and ((saved / "dataset_dict.json").is_file() or (saved / "state.json").is_file()):
        loaded = datasets.load_from_disk(str(saved))
    elif is_local(root):
        try:
            loaded = datasets.load_dataset(root, config_name, cache_dir=cache_dir)
        except Exception as error:  # noqa: BLE001 - a local folder it cannot read is the user's data, not a bug
            reason = (str(error).strip().splitlines() or [""])[0][:200]
            raise PriorswapError(f"load_dataset cannot read folder {root} ({type(error).__name__}: {reason})") from None
    else:
        loaded = datasets.load_dataset(root, config_name, cache_dir=cache_dir)
    tables = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {splits[0]: loaded}
    for split in splits:
        if split is not None and split not in tables:
            raise PriorswapError(f"HF dataset {root} has no split {split!r}; it has {sorted(tables)}")
    names = tables[splits[0]].column_names
    for column in columns:
        if column not in names:
            raise PriorswapError(f"HF dataset {root} has no column {column!r}; it has {names}")
    return tables


class HFImages(RobustImageDataset):
    """Rows of a `datasets.Dataset`; the image column decodes to PIL (a bad one raises and is skipped)."""

    def __init__(
        self, table, rows: list[int], labels: list[int], image_column: str, transform, name: str, skip_log=None
    ):
        super().__init__(labels, transform, skip_log)
        self.table, self.rows, self.image_column, self.name = table, rows, image_column, name

    def open(self, index: int) -> Image.Image:
        image = self.table[self.rows[index]][self.image_column]
        return image if isinstance(image, Image.Image) else Image.open(image["path"])

    def describe(self, index: int) -> str:
        return f"{self.name}[{self.rows[index]}]"


class HFImageDataModule(ImageDataModule):
    """Hugging Face image dataset; ids are '<split>/<row>'.

    Args (beyond ImageDataModule's):
        image_column: column holding the image.
        label_column: column holding the class (ClassLabel, int or string).
        train_split: split to train on.
        val_split: held-out split; None makes a seeded split of `train_split` by `val_fraction`.
        config_name: dataset configuration passed to load_dataset.
    """

    dataset_name = "hf"

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
        image_column: str = "image",
        label_column: str = "label",
        train_split: str = "train",
        val_split: str | None = None,
        config_name: str | None = None,
        channels: Channels = 3,
    ):
        self.image_column, self.label_column = image_column, label_column
        self.train_split, self.val_split, self.config_name = train_split, val_split, config_name
        self._tables: dict | None = None
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

    def check_root(self) -> None:
        if is_local(self.root) and not Path(self.root).is_dir():
            raise PriorswapError(
                f"HF dataset folder {self.root} does not exist; expected a save_to_disk folder, "
                "a folder load_dataset understands, or a hub id like 'user/name'"
            )

    def _load_tables(self) -> dict:
        if self._tables is None:
            self._tables = load_hf_tables(
                self.root,
                (self.train_split, self.val_split),
                (self.image_column, self.label_column),
                self.config_name,
                self.cache_dir,
            )
        return self._tables

    def _catalog(self) -> Catalog:
        tables = self._load_tables()
        feature = tables[self.train_split].features[self.label_column]
        raw = {s: list(tables[s][self.label_column]) for s in (self.train_split, self.val_split) if s}
        if hasattr(feature, "names"):  # ClassLabel
            names, index = list(feature.names), None
        else:
            names = sorted({str(v) for values in raw.values() for v in values})
            index = {name: i for i, name in enumerate(names)}
        labels = {
            s: [index[str(v)] for v in values] if index else [int(v) for v in values] for s, values in raw.items()
        }
        ids = {s: [f"{s}/{i}" for i in range(len(values))] for s, values in raw.items()}
        if self.val_split is None:
            return Catalog(names, ids[self.train_split], labels[self.train_split])
        return Catalog(
            names, ids[self.train_split], labels[self.train_split], ids[self.val_split], labels[self.val_split]
        )

    def _pixel_dataset(self, ids: list[str], labels: list[int], train: bool) -> RobustImageDataset:
        split = ids[0].rsplit("/", 1)[0] if ids else self.train_split
        rows = [int(i.rsplit("/", 1)[1]) for i in ids]
        transform = AdmTransform(self.resolution, flip=self.flip and train, channels=self.image_channels)
        return HFImages(
            self._load_tables()[split],
            rows,
            labels,
            self.image_column,
            transform,
            name=f"{self.root}:{split}",
            skip_log=self._skip_log,
        )
