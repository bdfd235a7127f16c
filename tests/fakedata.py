"""Tiny on-disk datasets in torchvision's exact layouts, for tests that must not download anything.

Every function writes small random JPEGs (default 48 wide x 40 high, seeded, so reruns give identical
bytes), returns the `root` to pass to the matching datamodule, and can plant `corrupt` unreadable
files (random bytes named .jpg) among the training images. Image counts are exact:
    make_food101(root, classes=3, per_class=4, test_per_class=2)  -> 12 train + 6 test images
    make_sun397(root, classes=3, per_class=4)                      -> 12 images (one class nested two deep)
    make_caltech101(root, classes=3, per_class=4)                  -> 12 images + 1 in BACKGROUND_Google
    make_image_folder(root, classes=3, per_class=4)                -> 12 images
Corrupt files are extra: they add to the counts above.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

FOOD_CLASSES = ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare", "beet_salad"]
SUN_CLASSES = ["/a/abbey", "/b/bakery/shop", "/c/canyon", "/d/desert/sand", "/f/forest_path", "/h/harbor"]
CALTECH_CLASSES = ["Faces_easy", "accordion", "airplanes", "anchor", "ant", "barrel"]
FOLDER_CLASSES = ["cat", "dog", "fox", "owl", "yak", "zebu"]


def write_jpeg(path: str | Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    """A random RGB JPEG of size (width, height); the seed fixes its content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)
    return path


def write_corrupt(path: str | Path, seed: int = 0) -> Path:
    """Random bytes under an image name: PIL cannot identify it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 300, dtype=np.uint8).tobytes())
    return path


def _pick(names: list[str], classes: int) -> list[str]:
    if not 1 <= classes <= len(names):
        raise ValueError(f"classes must be in [1, {len(names)}], got {classes}")
    return names[:classes]


def make_food101(
    root: str | Path,
    classes: int = 3,
    per_class: int = 4,
    test_per_class: int = 2,
    corrupt: int = 0,
    size: tuple[int, int] = (48, 40),
) -> str:
    """food-101/meta/{train,test}.json + classes.txt and food-101/images/<class>/<id>.jpg."""
    base = Path(root) / "food-101"
    meta = {"train": {}, "test": {}}
    seed = 0
    for name in _pick(FOOD_CLASSES, classes):
        for split, count in (("train", per_class), ("test", test_per_class)):
            meta[split][name] = []
            for _ in range(count):
                seed += 1
                write_jpeg(base / "images" / name / f"{1000 + seed}.jpg", seed, size)
                meta[split][name].append(f"{name}/{1000 + seed}")
    for k in range(corrupt):
        name = FOOD_CLASSES[k % classes]
        write_corrupt(base / "images" / name / f"9{k:03d}.jpg", k)
        meta["train"][name].append(f"{name}/9{k:03d}")
    (base / "meta").mkdir(parents=True, exist_ok=True)
    for split in meta:
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta[split]))
    (base / "meta" / "classes.txt").write_text("\n".join(_pick(FOOD_CLASSES, classes)) + "\n")
    return str(root)


def make_sun397(
    root: str | Path, classes: int = 3, per_class: int = 4, corrupt: int = 0, size: tuple[int, int] = (48, 40)
) -> str:
    """SUN397/ClassName.txt (lines '/a/abbey') and SUN397/<letter>/<class>[/<sub>]/sun_<10 letters>.jpg."""
    base = Path(root) / "SUN397"
    picked = _pick(SUN_CLASSES, classes)
    seed = 0
    for name in picked:
        for _ in range(per_class):
            seed += 1
            letters = "".join(chr(97 + int(c)) for c in np.random.default_rng(seed).integers(0, 26, 10))
            write_jpeg(base / name.lstrip("/") / f"sun_{letters}.jpg", seed, size)
    for k in range(corrupt):
        write_corrupt(base / picked[k % classes].lstrip("/") / f"sun_zzzzcorrupt{k}.jpg", k)
    (base / "ClassName.txt").write_text("\n".join(picked) + "\n")
    return str(root)


def make_caltech101(
    root: str | Path, classes: int = 3, per_class: int = 4, corrupt: int = 0, size: tuple[int, int] = (48, 40)
) -> str:
    """caltech101/101_ObjectCategories/<cat>/image_0001.jpg... (contiguous) plus BACKGROUND_Google/.

    torchvision needs no Annotations/ for target_type="category". Corrupt files take the next numbers.
    """
    base = Path(root) / "caltech101" / "101_ObjectCategories"
    seed = 0
    picked = _pick(CALTECH_CLASSES, classes)
    for name in picked:
        for i in range(1, per_class + 1):
            seed += 1
            write_jpeg(base / name / f"image_{i:04d}.jpg", seed, size)
    for k in range(corrupt):
        folder = base / picked[k % classes]
        write_corrupt(folder / f"image_{len(list(folder.iterdir())) + 1:04d}.jpg", k)
    write_jpeg(base / "BACKGROUND_Google" / "image_0001.jpg", 999, size)
    return str(root)


def make_image_folder(
    root: str | Path, classes: int = 3, per_class: int = 4, corrupt: int = 0, size: tuple[int, int] = (48, 40)
) -> str:
    """root/<class>/<n>.jpg, classes named cat, dog, fox, ..."""
    seed = 0
    picked = _pick(FOLDER_CLASSES, classes)
    for name in picked:
        for i in range(per_class):
            seed += 1
            write_jpeg(Path(root) / name / f"{i:03d}.jpg", seed, size)
    for k in range(corrupt):
        write_corrupt(Path(root) / picked[k % classes] / f"corrupt{k}.jpg", k)
    return str(root)
