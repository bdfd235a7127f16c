"""`priorswap sample dit`: outputs in the ADM evaluator layout, and one-line errors with exit code 2."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from priorswap.toolkit.cli import main

from factories import save_dit_pipeline, save_pixart_pipeline


@pytest.fixture(scope="module")
def dit(tmp_path_factory):
    return save_dit_pipeline(str(tmp_path_factory.mktemp("cli") / "dit"), num_classes=10)


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_sample_writes_uint8_nhwc_and_labels(dit, tmp_path, capsys):
    out = tmp_path / "s.npz"
    code, _, err = run(
        capsys,
        "sample",
        "dit",
        "--model",
        dit,
        "--labels",
        "0",
        "3",
        "7",
        "--steps",
        "3",
        "--output",
        str(out),
        "--grid",
        str(tmp_path / "g.png"),
        "--no-progress",
    )
    assert code == 0, err
    data = np.load(out)
    assert data["arr_0"].dtype == np.uint8 and data["arr_0"].shape == (3, 8, 8, 3)
    assert data["labels"].tolist() == [0, 3, 7]
    from PIL import Image

    from priorswap.toolkit.images import make_grid

    grid = np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))
    unlabelled = make_grid([torch.zeros(3, 3, 8, 8)])  # same tiles, no row label
    assert grid.shape[1] > unlabelled.shape[2]  # the "vanilla" row label adds a left margin
    assert (grid[:, : grid.shape[1] - unlabelled.shape[2]] < 128).any()  # with text drawn in it
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_compare_with_same_prior_equals_vanilla(dit, tmp_path, capsys):
    out = tmp_path / "c.npz"
    code, _, err = run(
        capsys,
        "sample",
        "dit",
        "--model",
        dit,
        "--prior",
        dit,
        "--compare",
        "--labels",
        "1",
        "2",
        "--steps",
        "3",
        "--output",
        str(out),
        "--no-progress",
    )
    assert code == 0, err
    data = np.load(out)
    assert np.abs(data["arr_0"].astype(int) - data["vanilla"].astype(int)).max() <= 1


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--model", "/no/such/folder"], "does not exist"),
        (["--labels", "10"], "label 10 is out of range"),
        (["--labels", "-1"], "label -1 is out of range"),
        (["--scheduler", "heun9"], "invalid choice: 'heun9'"),
        (["--steps", "-3"], "--steps must be at least 1"),
        (["--prior", "PIXART"], "latent spaces differ"),
        (["--output", "/no/such/dir/x.npz"], "output folder"),
    ],
)
def test_bad_input_is_one_line_exit_2(dit, tmp_path, capsys, args, needle):
    if "PIXART" in args:
        args = ["--prior", save_pixart_pipeline(str(tmp_path / "px"))]  # its VAE has another scaling below
        import json

        cfg = os.path.join(args[1], "vae", "config.json")
        with open(cfg) as f:
            c = json.load(f)
        c["scaling_factor"] = 0.13025
        with open(cfg, "w") as f:
            json.dump(c, f)
    base = {"--model": dit, "--labels": "0", "--output": str(tmp_path / "o.npz")}
    flags = dict(zip(args[::2], args[1::2]))
    merged = {**base, **flags}
    argv = ["sample", "dit", "--steps", "2", "--no-progress"]
    for k, v in merged.items():
        argv += [k, v]
    code, out, err = run(capsys, *argv)
    assert code == 2
    lines = [l for l in err.splitlines() if l.startswith("priorswap")]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err
    assert not os.path.exists(tmp_path / "o.npz")


def test_console_script_runs_as_subprocess(dit, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "priorswap.toolkit",
            "sample",
            "dit",
            "--model",
            dit,
            "--labels",
            "99",
            "--output",
            str(tmp_path / "x.npz"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("priorswap: error: label 99")
    assert "Traceback" not in bad.stderr
