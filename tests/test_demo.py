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
    """Every regime (large/limited, small, large/long) x 2 fine-tune seeds x 2 sampling seeds, at toy size."""
    out = tmp_path / "demo"
    assert main(["demo", "--tiny", "--out", str(out), "--no-progress"]) == 0
    first = capsys.readouterr().out
    report = (out / "report.md").read_text()
    for title in ("large set, limited budget", "set 10x smaller, same budget", "large set, 4x the budget"):
        assert f"## {title}" in report, title
    assert "The paper's regime claim, by KID at g = 1.5:**" in report and "Prior drift at t = 500" in report
    assert "not* Inception FID" in report and "| fine-tune (trained on the 4) |" in report and "| total |" in report
    for name in ("grid_large_limited.png", "grid_small.png", "grid_large_long.png", "fd_vs_scale.png"):
        assert (out / name).stat().st_size > 0, name
    runs = sorted(p.name for p in (out / "tb" / "finetunes").iterdir())
    assert runs == ["large_limited-s0-n60-t3", "large_limited-s1-n60-t3", "large_long-s0-n60-t12", "large_long-s1-n60-t12",
                    "small-s0-n6-t3", "small-s1-n6-t3"]  # fmt: skip
    assert (out / "tb" / "finetunes" / runs[0] / "cfg_eval.csv").stat().st_size > 0  # the recipe's callback ran
    cached = sorted((out / "eval").glob("*seed*.json"))
    assert len(cached) == 6 * 2 + 2  # every (fine-tune, sampling seed) run, plus the base's unconditional samples
    assert len(list((out / "eval").glob("*-drift-*.json"))) == 6
    assert f"report: {out / 'report.md'}" in first and "tensorboard --logdir" in first
    stamp = cached[0].stat().st_mtime
    assert main(["demo", "--tiny", "--out", str(out), "--no-progress"]) == 0
    again = capsys.readouterr().out
    assert again.count("already done; reusing it") == 6 and "evaluating" not in again
    assert cached[0].stat().st_mtime == stamp


def test_missing_debian_dataset_is_one_line(tmp_path):
    with pytest.raises(PriorswapError) as err:
        load_split("test", root=str(tmp_path))
    assert "apt-get install dataset-fashion-mnist" in str(err.value) and "\n" not in str(err.value)


def test_an_output_folder_that_cannot_be_made_is_one_line(capsys):
    """/proc passes os.access for root; the check makes (and removes) a real file to know."""
    assert main(["demo", "--tiny", "--out", "/proc/priorswap-demo", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--out '/proc/priorswap-demo' cannot be written: '/proc' is not writable" in err and "Traceback" not in err
    assert not os.path.exists("/proc/priorswap-demo")
