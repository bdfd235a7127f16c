"""What ``priorswap eval dynamicrafter`` samples: the VBench-I2V image suite, or any image-and-prompt set.

- The suite: a folder with ``vbench2_i2v_full_info.json`` and the images under ``crop/1-1/`` (VBench's layout).
  Its entries name a prompt, an image and the dimensions they count for; camera-motion entries are skipped (not
  a Table 4 dimension). That leaves 246 subject prompts (7 dimensions) and 109 background prompts (5).
- Any other set: a ``.jsonl`` / ``.csv`` manifest with ``image`` and ``prompt`` columns (paths relative to the
  manifest), every Table 4 dimension counted for every item.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass

from ..errors import PriorswapError

DIMENSIONS = (  # Table 4's order
    "subject_consistency",
    "background_consistency",
    "temporal_flickering",
    "motion_smoothness",
    "dynamic_degree",
    "aesthetic_quality",
    "imaging_quality",
    "i2v_subject",
    "i2v_background",
)
TITLES = {
    "subject_consistency": "Subject Consistency",
    "background_consistency": "Background Consistency",
    "temporal_flickering": "Temporal Flickering",
    "motion_smoothness": "Motion Smoothness",
    "dynamic_degree": "Dynamic Degree",
    "aesthetic_quality": "Aesthetic Quality",
    "imaging_quality": "Imaging Quality",
    "i2v_subject": "I2V Subject",
    "i2v_background": "I2V Background",
}
INFO = "vbench2_i2v_full_info.json"


@dataclass(frozen=True)
class VideoItem:
    prompt: str
    image: str  # path
    dimensions: tuple[str, ...]

    @property
    def stem(self) -> str:
        """VBench names videos ``{prompt}-{k}.mp4``; '/' cannot be in a file name."""
        return self.prompt.replace("/", "_")


def read_suite(path: str) -> list[VideoItem]:
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        info = os.path.join(path, INFO)
        if not os.path.isfile(info):
            raise PriorswapError(
                f"--data {path!r} has no {INFO}; expected the VBench-I2V suite or a .jsonl/.csv manifest"
            )
        with open(info) as f:
            entries = json.load(f)
        items = []
        for e in entries:
            dims = tuple(d for d in e.get("dimension", []) if d in DIMENSIONS)
            if dims:
                items.append(VideoItem(e["prompt_en"], os.path.join(path, "crop", "1-1", e["image_name"]), dims))
        return items
    if not os.path.isfile(path):
        raise PriorswapError(f"--data {path!r} does not exist")
    base = os.path.dirname(os.path.abspath(path))
    rows = _rows(path)
    items = []
    for n, row in enumerate(rows, start=1):
        if not row.get("image") or row.get("prompt") is None:
            raise PriorswapError(f"{path}:{n}: a row needs image and prompt")
        items.append(VideoItem(row["prompt"], os.path.join(base, row["image"]), DIMENSIONS))
    return items


def _rows(path: str) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            if path.endswith(".jsonl"):
                return [json.loads(line) for line in f if line.strip()]
            if path.endswith(".csv"):
                return list(csv.DictReader(f))
    except (ValueError, UnicodeDecodeError) as e:
        raise PriorswapError(f"--data {path!r} cannot be read ({str(e).splitlines()[0][:100]})") from None
    raise PriorswapError(f"--data {path!r}: expected a folder with {INFO}, a .jsonl or a .csv manifest")


def check_images(items: list[VideoItem]) -> None:
    """Every image exists and decodes, before the first sample."""
    from PIL import Image, UnidentifiedImageError  # here: `priorswap eval --help` reads this file

    for it in items:
        try:
            with Image.open(it.image) as im:
                im.verify()
        except (OSError, UnidentifiedImageError):
            what = "does not exist" if not os.path.exists(it.image) else "is not a readable image"
            raise PriorswapError(f"image {it.image!r} (prompt {it.prompt!r}) {what}") from None
