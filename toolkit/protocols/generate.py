"""Generate every (method, guidance setting, item, sample) of a protocol run, resumably.

Each sample is a PNG under ``<out>/samples/<method>/<setting>/<item>_<k>.png``, written to a temp name and
renamed in, so a killed run leaves only whole files and a re-run generates just what is missing. Sample k of
item i starts from seed ``seed + i * num_samples + k`` for every method, so vanilla and swapped samples pair up
(paired randomness) and the result does not depend on batch size, sharding or restarts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..core.sampling import DualGuidance, Guidance, make_scheduler, sample
from ..files import atomic_write
from ..images import to_uint8
from .conditions import Conditions, repeat_cond, slice_cond
from .items import Item


@dataclass(frozen=True)
class Setting:
    """One guidance setting: ``tag`` names its sample folder, ``label`` its table row."""

    tag: str
    label: str
    guidance: Guidance | DualGuidance


@dataclass(frozen=True)
class Method:
    """``vanilla`` (the fine-tune's own null, Eq. 6/8) or a prior supplying the unconditional eps (Eq. 7/9)."""

    name: str
    prior: str | None = None


def fmt(x: float) -> str:
    return f"{x:g}"


def single_settings(scales: list[float]) -> list[Setting]:
    return [Setting(f"g{fmt(s)}", f"g={fmt(s)}", Guidance(scale=s)) for s in scales]


def dual_settings(image_scales: list[float], text_scales: list[float]) -> list[Setting]:
    return [
        Setting(f"gI{fmt(i)}_gT{fmt(t)}", f"gI={fmt(i)}, gT={fmt(t)}", DualGuidance(image_scale=i, text_scale=t))
        for i in image_scales
        for t in text_scales
    ]


class SampleStore:
    """Generated samples on disk, one PNG each."""

    def __init__(self, out_dir: str):
        self.root = os.path.join(out_dir, "samples")

    def path(self, method: str, setting: str, item: str, k: int) -> str:
        return os.path.join(self.root, method, setting, f"{item}_{k}.png")

    def has(self, method: str, setting: str, item: str, k: int) -> bool:
        return os.path.isfile(self.path(method, setting, item, k))

    def save(self, method: str, setting: str, item: str, k: int, image: np.ndarray) -> None:
        """Write one (H, W, 3) uint8 image atomically."""
        path = self.path(method, setting, item, k)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_write(path, "wb") as f:
            Image.fromarray(image).save(f, format="PNG")

    def load(self, method: str, setting: str, item: str, k: int) -> torch.Tensor:
        """(1, 3, H, W) in [0, 1]."""
        with Image.open(self.path(method, setting, item, k)) as img:
            a = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(a).permute(2, 0, 1)[None]


def missing(
    store: SampleStore, method: Method, setting: Setting, items: list[tuple[int, Item]], num_samples: int
) -> list[tuple[int, Item, int]]:
    """(item index, item, k) of every sample not yet on disk."""
    return [
        (i, it, k) for i, it in items for k in range(num_samples) if not store.has(method.name, setting.tag, it.id, k)
    ]


def batches(todo: list[tuple[int, Item, int]], conditions: Conditions, batch_size: int):
    """Chunks of at most ``batch_size`` samples sharing one latent size (so they stack)."""
    by_size: dict[tuple[int, int], list] = {}
    for entry in todo:
        by_size.setdefault(conditions.latent_hw(entry[1]), []).append(entry)
    for hw, entries in by_size.items():
        for start in range(0, len(entries), batch_size):
            yield hw, entries[start : start + batch_size]


def generate_missing(
    store: SampleStore,
    model,
    conditions: Conditions,
    method: Method,
    prior_denoiser,
    settings: list[Setting],
    items: list[tuple[int, Item]],
    num_samples: int,
    steps: int,
    scheduler: str,
    seed: int,
    batch_size: int,
    device,
    decode: Callable[[torch.Tensor], torch.Tensor],
    denoiser: Any = None,
    progress: bool = True,
) -> int:
    """Sample everything of ``method`` that is not on disk yet; returns the number of samples made.

    ``items`` are (global index, item) pairs; ``denoiser`` overrides ``model.denoiser`` (e.g. an offloaded one).
    """
    den = denoiser or model.denoiser
    sched = make_scheduler(scheduler, model.scheduler_config)
    todo = {s.tag: {(i, k) for i, _, k in missing(store, method, s, items, num_samples)} for s in settings}
    needed = [(i, it, k) for i, it in items for k in range(num_samples) if any((i, k) in t for t in todo.values())]
    bar = tqdm(total=sum(map(len, todo.values())), desc=method.name, unit="img", disable=not progress or not needed)
    made = 0
    for hw, chunk in batches(needed, conditions, batch_size):
        unique: list[Item] = []
        counts: list[int] = []
        for _, it, _ in chunk:  # chunk entries of one item are adjacent (k innermost)
            if unique and unique[-1] is it:
                counts[-1] += 1
            else:
                unique.append(it)
                counts.append(1)
        cond, image_cond = conditions.encode(unique)  # once per chunk, for every setting
        cond, image_cond = repeat_cond(cond, counts), repeat_cond(image_cond, counts)
        for setting in settings:
            rows = [j for j, (i, _, k) in enumerate(chunk) if (i, k) in todo[setting.tag]]
            if not rows:
                continue
            sub, idx = [chunk[j] for j in rows], torch.tensor(rows)
            conds = (
                slice_cond(cond, idx) if image_cond is None else (slice_cond(cond, idx), slice_cond(image_cond, idx))
            )
            images = sample(
                den,
                conds,
                setting.guidance,
                prior=prior_denoiser,
                seeds=[seed + i * num_samples + k for i, _, k in sub],
                shape=(den.latent_channels, *hw),
                steps=steps,
                scheduler=sched,
                decode=decode,
                batch_size=len(sub),
                device=device,
            )
            for (_, it, k), a in zip(sub, to_uint8(images)):
                store.save(method.name, setting.tag, it.id, k, a)
            made += len(sub)
            bar.update(len(sub))
    bar.close()
    return made
