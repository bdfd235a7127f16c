"""What the paper's UNet evaluations read: one :class:`Item` per generation, from a manifest or a folder.

- InstructPix2Pix (EditEval-style edit set): a ``.jsonl``/``.csv`` manifest with ``image``, ``edit`` and, for
  CLIP-T/CLIP-D, ``input_caption`` and ``output_caption``.
- Zero-1-to-3 (GSO renders, paper appendix B.1): a folder of object folders, each holding views ``NNN.png`` and
  cameras ``NNN.npy`` (3x4 or 4x4 world-to-camera [R|t], zero123's Objaverse convention); the reference view is
  the condition and every other view a target. Or a manifest with ``image``, ``target``, ``polar``,
  ``azimuth`` (degrees) and ``radius``.
- Versatile Diffusion (COCO, appendix B.2): a folder of images (searched recursively) or a manifest with ``image``.

Relative paths in a manifest are resolved against the manifest's folder. Every problem is a one-line error
naming the file (and line) before any model is loaded.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import PriorswapError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
# fields each kind needs in a manifest row (captions only when CLIP-T / CLIP-D are asked for)
REQUIRED = {"ip2p": ("image", "edit"), "zero123": ("image", "target", "polar", "azimuth", "radius"), "vd": ("image",)}
# other names editing benchmarks use for the same columns (matched after lower-casing, spaces -> "_")
ALIASES = {
    "instruction": "edit",
    "edit_prompt": "edit",
    "source_prompt": "input_caption",
    "target_prompt": "output_caption",
    "source_caption": "input_caption",
    "target_caption": "output_caption",
}


@dataclass(frozen=True)
class Item:
    """One condition to generate from (and, for Zero-1-to-3, the view it should reproduce)."""

    id: str  # unique and file-name safe: samples are saved as <id>_<k>.png
    image: str  # the condition image
    target: str | None = None  # Zero-1-to-3 ground-truth view
    pose: tuple[float, float, float] | None = None  # Zero-1-to-3 relative (polar deg, azimuth deg, radius)
    edit: str | None = None  # InstructPix2Pix instruction
    input_caption: str | None = None
    output_caption: str | None = None


def safe_id(text: str) -> str:
    """A file-name-safe id: runs of anything but ``[A-Za-z0-9._-]`` become one ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "item"


# -- cameras (Zero-1-to-3) -----------------------------------------------------------------------
def camera_position(rt: np.ndarray, source: str = "camera matrix") -> np.ndarray:
    """World position of a camera with world-to-camera extrinsics [R|t]: C = -R^T t."""
    try:
        rt = np.asarray(rt, dtype=np.float64)
    except (TypeError, ValueError):
        raise PriorswapError(f"{source} is not numeric; expected a 3x4 or 4x4 world-to-camera [R|t]") from None
    if rt.shape not in ((3, 4), (4, 4)):
        raise PriorswapError(f"{source} has shape {rt.shape}; expected 3x4 or 4x4 world-to-camera [R|t]")
    r, t = rt[:3, :3], rt[:3, 3]
    return -r.T @ t


def spherical(p: np.ndarray) -> tuple[float, float, float]:
    """(polar from +z, azimuth from +x towards +y, radius) of a point, in radians."""
    x, y, z = (float(v) for v in p)
    return math.atan2(math.hypot(x, y), z), math.atan2(y, x), math.sqrt(x * x + y * y + z * z)


def relative_pose(
    reference_rt: np.ndarray, target_rt: np.ndarray, sources: tuple[str, str] = ("reference camera", "target camera")
) -> tuple[float, float, float]:
    """Zero-1-to-3's relative camera (Liu et al. 2023, Sec. 3.1): target minus reference in spherical coordinates.

    Returns (polar change in degrees, azimuth change in degrees in [0, 360), radius change), the arguments of
    :func:`priorswap.toolkit.unet.zero123.pose_vector`.
    """
    th_r, az_r, r_r = spherical(camera_position(reference_rt, sources[0]))
    th_t, az_t, r_t = spherical(camera_position(target_rt, sources[1]))
    d_az = (az_t - az_r) % (2 * math.pi)
    return math.degrees(th_t - th_r), math.degrees(d_az), r_t - r_r


def _load_camera(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise PriorswapError(
            f"camera file {path!r} cannot be read ({type(e).__name__}); expected a .npy 3x4 [R|t] matrix"
        ) from None


# -- readers ---------------------------------------------------------------------------------------
def _rows(path: str) -> list[tuple[int, dict]]:
    """(line number, row) pairs of a .jsonl or .csv manifest."""
    try:
        return _read_rows(path)
    except UnicodeDecodeError:
        raise PriorswapError(f"manifest {path!r} is not UTF-8 text") from None


def _read_rows(path: str) -> list[tuple[int, dict]]:
    rows = []
    if path.lower().endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise PriorswapError(f"{path}:{n} is not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise PriorswapError(f"{path}:{n} is a JSON {type(row).__name__}; expected an object per line")
                rows.append((n, row))
    elif path.lower().endswith(".csv"):
        with open(path, encoding="utf-8", newline="") as f:
            rows = [(n, row) for n, row in enumerate(csv.DictReader(f), 2)]
    else:
        raise PriorswapError(f"manifest {path!r} must end in .jsonl or .csv")
    if not rows:
        raise PriorswapError(f"manifest {path!r} has no rows")
    return rows


def read_manifest(path: str, kind: str, captions: bool = False) -> list[Item]:
    """Items of a ``kind`` manifest; ``captions`` also requires ``input_caption``/``output_caption`` (CLIP-T/D)."""
    required = REQUIRED[kind] + (("input_caption", "output_caption") if captions else ())
    folder = os.path.dirname(os.path.abspath(path))
    items = []
    for n, raw in _rows(path):
        row = {}
        for k, v in raw.items():
            key = str(k).strip().lower().replace(" ", "_")
            row.setdefault(ALIASES.get(key, key), v)
        missing = [k for k in required if row.get(k) in (None, "")]
        if missing:
            raise PriorswapError(
                f"{path}:{n} lacks {', '.join(missing)}; a {kind} manifest row needs {', '.join(required)}"
            )
        resolve = lambda p: os.path.normpath(os.path.join(folder, os.path.expanduser(str(p))))  # noqa: E731
        pose = None
        if kind == "zero123":
            try:
                pose = (float(row["polar"]), float(row["azimuth"]), float(row["radius"]))
            except (TypeError, ValueError):
                raise PriorswapError(f"{path}:{n} has a non-numeric polar/azimuth/radius") from None
        texts = [
            k
            for k in ("edit", "input_caption", "output_caption")
            if row.get(k) is not None and not isinstance(row[k], str)
        ]
        if texts:
            raise PriorswapError(f"{path}:{n} has a non-text {texts[0]} ({row[texts[0]]!r}); expected a string")
        items.append(
            Item(
                id=safe_id(str(row.get("id") or f"{n:06d}")),
                image=resolve(row["image"]),
                target=resolve(row["target"]) if kind == "zero123" else None,
                pose=pose,
                edit=str(row["edit"]) if kind == "ip2p" else None,
                input_caption=row.get("input_caption"),
                output_caption=row.get("output_caption"),
            )
        )
    return items


def read_view_folders(root: str, reference_view: int = 0) -> list[Item]:
    """Zero-1-to-3 items from rendered objects: ``root/<object>/NNN.png`` + ``NNN.npy`` (or ``root`` itself one object).

    View ``reference_view`` of each object is the condition; every other view with a camera is a target.
    """
    objects = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    folders = [(d, os.path.join(root, d)) for d in objects] or [(os.path.basename(os.path.normpath(root)), root)]
    items = []
    for name, folder in folders:
        names = {
            int(f[:-4]): os.path.join(folder, f)
            for f in os.listdir(folder)
            if re.fullmatch(r"\d+\.png", f) and os.path.isfile(os.path.join(folder, f[:-4] + ".npy"))
        }
        views = sorted(names)
        if not views:
            continue
        png = names.__getitem__
        if reference_view not in views:
            raise PriorswapError(
                f"object folder {folder!r} has no reference view {reference_view} (png + npy); it has views {views[:8]}"
            )
        ref_cam = png(reference_view)[:-4] + ".npy"
        ref_rt = _load_camera(ref_cam)
        for v in views:
            if v == reference_view:
                continue
            cam = png(v)[:-4] + ".npy"
            pose = relative_pose(ref_rt, _load_camera(cam), (f"camera file {ref_cam!r}", f"camera file {cam!r}"))
            items.append(Item(id=safe_id(f"{name}_{v:03d}"), image=png(reference_view), target=png(v), pose=pose))
    if not items:
        raise PriorswapError(
            f"{root!r} holds no rendered views; expected object folders with NNN.png views and NNN.npy cameras"
        )
    return items


def image_paths(root: str) -> list[str]:
    """Every image file under ``root``, recursively, sorted; a one-line error if there is none."""
    paths = []
    for d, _, files in os.walk(root):
        paths += [os.path.join(d, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not paths:
        raise PriorswapError(f"{root!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return sorted(paths)


def read_image_folder(root: str) -> list[Item]:
    """Every image under ``root``, id = its relative path."""
    return [Item(id=safe_id(os.path.splitext(os.path.relpath(p, root))[0]), image=p) for p in image_paths(root)]


def read_items(data: str, kind: str, captions: bool = False, reference_view: int = 0) -> list[Item]:
    """The items ``kind``'s evaluation runs on, from a manifest file or a folder; ids are checked to be unique."""
    path = os.path.expanduser(data)
    if os.path.isfile(path):
        items = read_manifest(path, kind, captions)
    elif os.path.isdir(path):
        if kind == "ip2p":
            raise PriorswapError(
                f"--data {data!r} is a folder; InstructPix2Pix needs a .jsonl/.csv manifest (image, edit, input_caption, output_caption)"
            )
        items = read_view_folders(path, reference_view) if kind == "zero123" else read_image_folder(path)
    else:
        raise PriorswapError(f"--data {data!r} does not exist")
    seen: dict[str, int] = {}
    for it in items:
        seen[it.id] = seen.get(it.id, 0) + 1
    dup = [k for k, c in seen.items() if c > 1]
    if dup:
        raise PriorswapError(
            f"--data {data!r} gives {len(dup)} repeated item ids (e.g. {dup[0]!r}); ids must be unique"
        )
    return items


def check_files(items: list[Item]) -> None:
    """Every image and target exists and has a readable header (cheap; full decoding happens when used)."""
    for it in items:
        for path in (it.image, it.target):
            if path is None:
                continue
            if not os.path.isfile(path):
                raise PriorswapError(f"image {path!r} (item {it.id}) does not exist")
            try:
                with Image.open(path) as img:
                    img.verify()
            except (UnidentifiedImageError, OSError, SyntaxError) as e:
                raise PriorswapError(
                    f"image {path!r} (item {it.id}) is corrupt or not an image ({type(e).__name__})"
                ) from None


def subset(items: list[Item], limit: int | None, seed: int) -> list[Item]:
    """At most ``limit`` items, drawn at random with ``seed`` (the paper draws 30k COCO images), in their own order."""
    if limit is None or limit >= len(items):
        return items
    keep = np.random.default_rng(seed).choice(len(items), size=limit, replace=False)
    return [items[i] for i in sorted(keep.tolist())]
