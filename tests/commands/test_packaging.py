"""A wheel holds every package and the data files the commands read (recipes, assets, the video configs)."""

import os
import subprocess
import sys
import zipfile

import pytest

from repo_paths import REPO

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

FOLDERS = {
    "toolkit": "priorswap.toolkit",
    "data": "priorswap.data",
    "callbacks": "priorswap.callbacks",
    "recipes": "priorswap.recipes",
}


def test_every_package_folder_is_listed_in_pyproject():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in FOLDERS.items():
        for root, _, files in os.walk(os.path.join(REPO, folder)):
            if "__init__.py" in files and "__pycache__" not in root:
                rel = os.path.relpath(root, os.path.join(REPO, folder))
                found.add(name if rel == "." else f"{name}.{rel.replace(os.sep, '.')}")
    assert found == listed


def test_wheel_ships_the_data_files(tmp_path):
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), REPO],
                         capture_output=True, text=True)  # fmt: skip
    if res.returncode != 0 and "No module named" in res.stderr:
        pytest.skip(f"cannot build a wheel here: {res.stderr.strip().splitlines()[-1]}")
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = [p for p in os.listdir(tmp_path) if p.endswith(".whl")]
    names = set(zipfile.ZipFile(tmp_path / wheel).namelist())
    for want in ("priorswap/recipes/dit_xl2_food101.yaml", "priorswap/toolkit/video/configs/dynamicrafter_256_v1.0.yaml",
                 "priorswap/toolkit/video/configs/videocrafter1_t2v_512_v1.0.yaml", "priorswap/toolkit/assets/fmnist_classifier.safetensors",
                 "priorswap/toolkit/vbench/formulas.py"):  # fmt: skip
        assert want in names, want
