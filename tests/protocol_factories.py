"""The eval-protocol test world (tiny UNets, view folders, edit manifests, fabricated metric weights), shared by the
protocol tests and the launch tests that run the same evaluations as several processes."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest

from priorswap.toolkit.unet import tiny as uf

import metric_factories as mf

STEPS = "3"


# -- data builders ---------------------------------------------------------------------------------
def look_at(polar_deg: float, azimuth_deg: float, radius: float) -> np.ndarray:
    """World-to-camera [R|t] (3x4) of a camera at the given spherical position looking at the origin."""
    p, a = math.radians(polar_deg), math.radians(azimuth_deg)
    c = radius * np.array([math.sin(p) * math.cos(a), math.sin(p) * math.sin(a), math.cos(p)])
    forward = -c / np.linalg.norm(c)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    r = np.stack([right, -up, forward])  # rows: camera axes in world coordinates
    return np.concatenate([r, (-r @ c)[:, None]], axis=1)


def write_objects(root: str, cameras: list[tuple[float, float, float]], n_objects: int = 2) -> str:
    """``root/obj<k>/NNN.png`` (RGBA renders) + ``NNN.npy`` cameras."""
    for k in range(n_objects):
        folder = os.path.join(root, f"obj{k}")
        os.makedirs(folder, exist_ok=True)
        for v, cam in enumerate(cameras):
            uf.save_image(os.path.join(folder, f"{v:03d}.png"), mode="RGBA", seed=10 * k + v)
            np.save(os.path.join(folder, f"{v:03d}.npy"), look_at(*cam))
    return root


def write_jsonl(path: str, rows: list[dict]) -> str:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


def read_csv(path: str) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def values(out: str) -> dict[tuple[str, str, str], float]:
    return {
        (r["method"], r["setting"], r["metric"]): float(r["value"]) for r in read_csv(os.path.join(out, "eval.csv"))
    }


def assert_same_values(a: dict, b: dict) -> None:
    """Equal tables up to float batching: the same seeds in a different batch layout round differently (<= 1/255)."""
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-4), k


def protocol_env(root) -> dict:
    """Every model, data set and weight file the protocol commands read, built under ``root`` (a pathlib.Path)."""
    cams = [(60.0, 0.0, 1.5), (60.0, 60.0, 1.5), (60.0, 120.0, 1.5)]
    images = root / "coco"
    images.mkdir()
    for i in range(4):
        uf.save_image(str(images / f"img{i}.png"), size=(40 + 8 * i, 32), seed=100 + i)
    edits = [
        {"image": "coco/img0.png", "edit": "make it red", "input_caption": "a photo", "output_caption": "a red photo"},
        {"image": "coco/img1.png", "edit": "add snow", "input_caption": "a field", "output_caption": "a snowy field"},
        {
            "image": "coco/img2.png",
            "edit": "make it night",
            "input_caption": "a street",
            "output_caption": "a street at night",
        },
    ]
    return {
        "root": root,
        "zero123": uf.save_zero123(str(root / "zero123")),
        "ip2p": uf.save_ip2p(str(root / "ip2p")),
        "vd": uf.save_vd(str(root / "vd")),
        "sd": uf.save_sd(str(root / "sd")),
        "sdxl_vae": uf.save_sd(str(root / "sdxl_vae"), vae_scaling=0.13025),
        "objects": write_objects(str(root / "gso"), cams),
        "images": str(images),
        "edits": write_jsonl(str(root / "edits.jsonl"), edits),
        "clip": (lambda d: (mf.write_tiny_clip(d), d)[1])(str(root / "clip")),
        "alexnet": mf.alexnet_weights(str(root / "alexnet.pth")),
        "inception": mf.inception_weights(str(root / "inception.pth")),
        "vit": mf.tiny_vit_weights(str(root / "vit.safetensors")),
    }


def zero123_args(env, out, *extra):
    return [
        "eval",
        "zero123",
        "--model",
        env["zero123"],
        "--data",
        env["objects"],
        "--output-dir",
        str(out),
        "--size",
        "32",
        "--steps",
        STEPS,
        "--lpips-weights",
        env["alexnet"],
        "--batch-size",
        "3",
        *extra,
    ]
