"""`priorswap demo --tiny`: every stage of the demo on the shipped weights, in seconds; re-runs reuse work."""

import os

import pytest

from priorswap.toolkit.cli import main
from priorswap.toolkit.demo.fmnist import load_split
from priorswap.toolkit.errors import PriorswapError

DEBIAN = "/usr/share/datasets/fashion-mnist"


@pytest.mark.skipif(
    not os.path.isdir(DEBIAN),
    reason="needs the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
)
def test_tiny_demo_end_to_end_and_rerun(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--tiny", "--out", str(out), "--no-progress"]) == 0
    first = capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert "FD-FMNIST" in report and "| vanilla CFG |" in report and "| fine-tune (4 classes) |" in report
    assert "not* Inception FID" in report and "What the numbers support" in report
    for name in ("grid.png", "fd_vs_scale.png", "tb/demo_finetune/run/cfg_eval.csv"):
        assert (out / name).stat().st_size > 0, name
    cached = sorted((out / "eval").glob("seed*.json"))
    assert [p.name.split("-")[0] for p in cached] == ["seed0", "seed1"]
    assert f"report: {out / 'report.md'}" in first and "tensorboard --logdir" in first
    stamp = cached[0].stat().st_mtime
    assert main(["demo", "--tiny", "--out", str(out), "--no-progress"]) == 0
    again = capsys.readouterr().out
    assert "fine-tune already done" in again and "evaluating seed" not in again
    assert cached[0].stat().st_mtime == stamp


def test_missing_debian_dataset_is_one_line(tmp_path):
    with pytest.raises(PriorswapError) as err:
        load_split("test", root=str(tmp_path))
    assert "apt-get install dataset-fashion-mnist" in str(err.value) and "\n" not in str(err.value)
