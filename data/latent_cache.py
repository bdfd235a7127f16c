"""Encode a pixel dataset once through a caller's VAE and reuse the latents across runs.

Encoding 100k images through the SD VAE costs more than many fine-tuning steps, so it is done once.
The cache stores the *unscaled* latent distribution (mean, std) of both the image and its horizontal
flip; the training module draws `mean + std * randn` itself, so every epoch still sees fresh latents.

Layout of one cache folder (named by `cache_dir_for`):
    meta.json                      what was encoded (dataset identity, encoder id, resolution, dtype)
    chunk-000000.safetensors ...   items [j*chunk_size, (j+1)*chunk_size): indices, labels, mean, std
    complete.json                  written last, only once every chunk exists
Chunk j is encoded by rank j % world_size, so the files do not depend on the number of ranks and a
killed run resumes from its finished chunks. Every file is written through `atomic_write` (a hidden
`.<name>.<random>.tmp` next to it, then os.replace'd).
This module never imports model code: `encode(pixels (B,3,H,W) in [-1,1]) -> (mean, std)` is passed in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset

from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.files import atomic_write

log = logging.getLogger(__name__)

Encoder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
COMPLETE = "complete.json"


def cache_dir_for(
    cache_root: str,
    dataset_name: str,
    split: str,
    identity: str,
    encoder_id: str,
    resolution: int,
    dtype: str = "float32",
) -> Path:
    """Folder for one (dataset items, encoder, resolution, dtype); a change in any of them gives a new folder."""
    key = {
        "dataset": dataset_name,
        "split": split,
        "identity": identity,
        "encoder": encoder_id,
        "resolution": resolution,
        "dtype": dtype,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{dataset_name}-{split}-{resolution}px-{encoder_id}")[:80]
    return Path(cache_root) / f"{slug}-{digest}"


def _atomic_write_json(path: Path, payload: dict) -> None:
    with atomic_write(str(path)) as f:
        f.write(json.dumps(payload, indent=1, sort_keys=True))


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    with atomic_write(str(path), "wb") as f:
        save_file({k: v.contiguous() for k, v in tensors.items()}, f.name, metadata=metadata)


def is_complete(folder: str | Path) -> bool:
    return (Path(folder) / COMPLETE).is_file()


class _Indexed(Dataset):
    """Items of `dataset` at `indices`, tagged with their index; unreadable items stay None."""

    def __init__(self, dataset: Dataset, indices: range):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        return self.indices[i], self.dataset[self.indices[i]]


def _collate_indexed(batch: list[tuple[int, Any]]) -> tuple[list[int], list[Any]]:
    good = [(index, item) for index, item in batch if item is not None]
    return [index for index, _ in good], [item for _, item in good]


@torch.no_grad()
def _encode_chunk(
    dataset: Dataset, indices: range, encode: Encoder, batch_size: int, num_workers: int, dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], int]:
    loader = DataLoader(
        _Indexed(dataset, indices), batch_size=batch_size, num_workers=num_workers, collate_fn=_collate_indexed
    )
    kept: list[int] = []
    labels, means, stds = [], [], []
    for batch_indices, items in loader:
        if not items:
            continue
        pixels = torch.stack([item["pixels"] for item in items])  # (B, C, H, W)
        mean, std = encode(torch.cat([pixels, pixels.flip(-1)]))  # (2B, c, h, w) each
        b = len(items)
        means.append(torch.stack([mean[:b], mean[b:]], 1).to("cpu", dtype))  # (B, 2, c, h, w)
        stds.append(torch.stack([std[:b], std[b:]], 1).to("cpu", dtype))
        labels += [int(item["label"]) for item in items]
        kept += batch_indices
    tensors = {"indices": torch.tensor(kept, dtype=torch.long), "labels": torch.tensor(labels, dtype=torch.long)}
    if kept:
        tensors["mean"], tensors["std"] = torch.cat(means), torch.cat(stds)
    return tensors, len(indices) - len(kept)


def build_latent_cache(
    folder: str | Path,
    dataset: Dataset,
    encode: Encoder,
    meta: dict[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 32,
    chunk_size: int = 512,
    num_workers: int = 0,
    dtype: str = "float32",
) -> bool:
    """Encode this rank's missing chunks of `dataset` (items {"pixels", "label"} or None, unflipped).

    Returns True when the cache is complete. With several ranks, the last one to finish writes the
    marker; callers must barrier before reading. Rerunning after a crash re-encodes only missing chunks.
    """
    if dtype not in DTYPES:
        raise PriorswapError(f"latent cache dtype must be one of {sorted(DTYPES)}, got {dtype!r}")

    def encode_chunk(indices: range) -> tuple[dict[str, torch.Tensor], int]:
        return _encode_chunk(dataset, indices, encode, batch_size, num_workers, DTYPES[dtype])

    return build_chunks(
        folder, len(dataset), encode_chunk, {"dtype": dtype, **(meta or {})}, rank, world_size, chunk_size
    )


def build_chunks(
    folder: str | Path,
    n_items: int,
    encode_chunk: Callable[[range], tuple[dict[str, torch.Tensor], int]],
    meta: dict[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    chunk_size: int = 512,
) -> bool:
    """The chunked, resumable, rank-sharded cache mechanism, whatever a chunk holds.

    ``encode_chunk(indices) -> (tensors, skipped)`` encodes items ``indices``; its tensors are saved as one chunk
    (atomically) and ``skipped`` counts unreadable items. Returns True when every chunk exists (then the marker is
    written); chunks already on disk are never encoded again.
    """
    if not 0 <= rank < world_size:
        raise PriorswapError(f"rank must be in [0, world_size={world_size}), got {rank}")
    folder = Path(folder)
    if is_complete(folder):
        return True
    folder.mkdir(parents=True, exist_ok=True)
    n_chunks = math.ceil(n_items / chunk_size)
    header = {"n_items": n_items, "chunk_size": chunk_size, "n_chunks": n_chunks, **(meta or {})}
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if (old["n_items"], old["chunk_size"]) != (n_items, chunk_size):
            raise PriorswapError(
                f"latent cache {folder} was started with {old['n_items']} items in chunks of "
                f"{old['chunk_size']}, now {n_items} in {chunk_size}; delete the folder"
            )
    else:
        _atomic_write_json(meta_path, header)

    for j in range(rank, n_chunks, world_size):
        path = folder / f"chunk-{j:06d}.safetensors"
        if path.is_file():
            continue
        tensors, skipped = encode_chunk(range(j * chunk_size, min(n_items, (j + 1) * chunk_size)))
        _atomic_save(tensors, path, {"skipped": str(skipped)})
        log.info("latent cache %s: chunk %d/%d written (rank %d)", folder.name, j + 1, n_chunks, rank)
    return _mark_if_complete(folder, n_chunks)


def _mark_if_complete(folder: Path, n_chunks: int) -> bool:
    chunks = [folder / f"chunk-{j:06d}.safetensors" for j in range(n_chunks)]
    if not all(path.is_file() for path in chunks):
        return False
    kept = skipped = 0
    for path in chunks:
        with safe_open(str(path), framework="pt") as f:
            kept += f.get_slice("indices").get_shape()[0]
            skipped += int(f.metadata()["skipped"])
    _atomic_write_json(folder / COMPLETE, {"n_chunks": n_chunks, "kept": kept, "skipped": skipped})
    for tmp in folder.glob(".*.tmp"):  # leftovers of killed writers; nobody writes a complete cache
        tmp.unlink(missing_ok=True)
    if skipped:
        log.warning("latent cache %s: %d unreadable images were skipped while encoding", folder, skipped)
    return True


class CachedLatentDataset(Dataset):
    """Items {"latent_mean", "latent_std", "label"} from a complete cache; one of the two flips per access.

    With `flip`, each access picks the stored flip at random (torch RNG, so a fresh choice per epoch and
    per DataLoader worker); without it, always the original orientation.
    """

    def __init__(self, folder: str | Path, flip: bool = True):
        self.folder, self.flip = Path(folder), flip
        if not is_complete(self.folder):
            raise PriorswapError(
                f"latent cache {self.folder} is not complete (no {COMPLETE}); "
                "run build_latent_cache on every rank first"
            )
        n_chunks = json.loads((self.folder / COMPLETE).read_text())["n_chunks"]
        self._chunks = [str(self.folder / f"chunk-{j:06d}.safetensors") for j in range(n_chunks)]
        self._rows: list[tuple[int, int]] = []
        labels, indices = [], []
        for c, path in enumerate(self._chunks):
            with safe_open(path, framework="pt") as f:
                chunk_labels = f.get_tensor("labels").tolist()
                indices += f.get_tensor("indices").tolist()
            labels += chunk_labels
            self._rows += [(c, r) for r in range(len(chunk_labels))]
        self.labels: list[int] = labels
        self.indices: list[int] = indices  # positions in the source dataset
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}}  # open files do not cross process boundaries

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        chunk, row = self._rows[index]
        if chunk not in self._handles:
            self._handles[chunk] = safe_open(self._chunks[chunk], framework="pt")
        handle = self._handles[chunk]
        side = int(torch.randint(2, ())) if self.flip else 0
        mean = handle.get_slice("mean")[row : row + 1, side : side + 1][0, 0].float()  # (c, h, w)
        std = handle.get_slice("std")[row : row + 1, side : side + 1][0, 0].float()  # (c, h, w)
        return {"latent_mean": mean, "latent_std": std, "label": torch.tensor(self.labels[index], dtype=torch.long)}
