"""A latent + caption-embedding cache of a captioned dataset, for text-to-image fine-tunes with frozen text encoders.

It is ``data/latent_cache.py``'s mechanism (``build_chunks``: chunk j written by rank j % world_size, each chunk
written atomically, ``complete.json`` last, a killed run resumes from its finished chunks) over different rows:
each row holds an item's id (``index``), its VAE latent distribution (``latent_mean``, ``latent_std``, unscaled),
its caption's condition (``prompt_embeds`` and ``pooled_prompt_embeds`` or ``prompt_attention_mask``) and its
``original_size`` / ``crop_top_left``. The folder is named by the dataset's identity, the model and the encoders'
identity, so another model, VAE, text encoder or sequence length never reads this cache. Caption dropout needs no
cached null rows: the module computes the null condition once.

How a datamodule offers it: an attribute ``t2i_cache`` (the cache root, or None) and a method
``build_t2i_cache(encode, encoder_id)`` that, as ``ImageDataModule.build_latent_cache`` does, calls
:func:`build_t2i_cache` for its rank's chunks, waits for every rank, and from then on serves :class:`CachedT2IDataset`
rows; ``T2IFineTune`` calls it in ``setup``. The captioned datamodules (``data/captioned.py``) implement it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from torch.utils.data import DataLoader, Dataset

from priorswap.data.latent_cache import COMPLETE, DTYPES, build_chunks, cache_dir_for, is_complete
from priorswap.toolkit.errors import PriorswapError

# collated items {"pixels", "caption", "original_size", "crop_top_left"} -> per-row tensors (B, ...)
T2IEncoder = Callable[[dict[str, Any]], dict[str, torch.Tensor]]


def t2i_cache_dir(root: str, dataset_identity: str, encoder_id: str, resolution: int, dtype: str = "float32") -> Path:
    """Folder of one (dataset items, model + encoders, resolution, dtype)."""
    return cache_dir_for(root, "t2i", "train", dataset_identity, encoder_id, resolution, dtype)


def collate_items(items: list[dict]) -> dict[str, Any]:
    """Stack a list of captioned items (readable ones only) into the training batch format."""
    return {
        "pixels": torch.stack([it["pixels"] for it in items]),
        "caption": [str(it["caption"]) for it in items],
        "original_size": torch.stack([torch.as_tensor(it["original_size"]) for it in items]).long(),
        "crop_top_left": torch.stack([torch.as_tensor(it["crop_top_left"]) for it in items]).long(),
        "index": torch.tensor([int(it["index"]) for it in items], dtype=torch.long),
    }


def _collate_or_none(items: list) -> dict[str, Any] | None:
    good = [it for it in items if it is not None]
    return collate_items(good) if good else None


def build_t2i_cache(
    folder: str | Path,
    dataset: Dataset,
    encode: T2IEncoder,
    meta: dict[str, Any] | None = None,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 16,
    chunk_size: int = 256,
    num_workers: int = 0,
    dtype: str = "float32",
) -> bool:
    """Encode this rank's missing chunks of ``dataset`` (captioned items or None); True once the cache is complete."""
    if dtype not in DTYPES:
        raise PriorswapError(f"text-to-image cache dtype must be one of {sorted(DTYPES)}, got {dtype!r}")

    @torch.no_grad()
    def encode_chunk(indices: range) -> tuple[dict[str, torch.Tensor], int]:
        sub = torch.utils.data.Subset(dataset, list(indices))
        loader = DataLoader(sub, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate_or_none)
        parts: dict[str, list[torch.Tensor]] = {}
        for batch in loader:
            if batch is None:
                continue
            rows = {
                **encode(batch),
                "indices": batch["index"],
            }  # "indices": the item ids, as the latent cache names them
            rows.update(original_size=batch["original_size"], crop_top_left=batch["crop_top_left"])
            for k, v in rows.items():
                v = v.detach().cpu()
                parts.setdefault(k, []).append(v.to(DTYPES[dtype]) if v.is_floating_point() else v)
        tensors = {k: torch.cat(v) for k, v in parts.items()}
        kept = len(tensors["indices"]) if tensors else 0
        return tensors or {"indices": torch.zeros(0, dtype=torch.long)}, len(indices) - kept

    return build_chunks(
        folder, len(dataset), encode_chunk, {"dtype": dtype, **(meta or {})}, rank, world_size, chunk_size
    )


class CachedT2IDataset(Dataset):
    """Rows of a complete cache as training items: every cached tensor of the row, float tensors as float32."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not is_complete(self.folder):
            raise PriorswapError(
                f"text-to-image cache {self.folder} is not complete (no {COMPLETE}); build it on every rank first"
            )
        n_chunks = json.loads((self.folder / COMPLETE).read_text())["n_chunks"]
        self._chunks = [str(self.folder / f"chunk-{j:06d}.safetensors") for j in range(n_chunks)]
        self._rows: list[tuple[int, int]] = []
        for c, path in enumerate(self._chunks):
            with safe_open(path, framework="pt") as f:
                self._rows += [(c, r) for r in range(f.get_slice("indices").get_shape()[0])]
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}}  # open files do not cross process boundaries

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        chunk, row = self._rows[i]
        if chunk not in self._handles:
            self._handles[chunk] = safe_open(self._chunks[chunk], framework="pt")
        f = self._handles[chunk]
        out = {}
        for k in f.keys():
            v = f.get_slice(k)[row : row + 1][0]
            out["index" if k == "indices" else k] = v.float() if v.is_floating_point() else v
        return out
