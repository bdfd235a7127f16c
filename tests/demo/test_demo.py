"""`priorswap demo --tiny`: every stage of the demo on the shipped weights, in seconds; re-runs reuse work."""

import json
import os

import pytest
import yaml

from priorswap.toolkit.cli import main
from priorswap.toolkit.demo.fmnist import load_split
from priorswap.toolkit.demo.verdict import nodrop_claim, paired
from priorswap.toolkit.errors import PriorswapError

DEBIAN = "/usr/share/datasets/fashion-mnist"


@pytest.mark.skipif(
    not os.path.isdir(DEBIAN),
    reason="needs the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
)
def test_tiny_demo_end_to_end_and_rerun(tmp_path, capsys):
    """Every regime (large/limited, small, large/long, and the LoRA arms) x 2 fine-tune seeds x 2 sampling seeds, at
    toy size."""
    out = tmp_path / "demo"
    assert main(["demo", "--tiny", "--out", str(out), "--no-progress"]) == 0
    first = capsys.readouterr().out
    report = (out / "report.md").read_text()
    for title in (
        "large set, limited budget",
        "set 10x smaller, same budget",
        "large set, 4x the budget",
        "LoRA r16, dropout 0.1, large set, limited budget",
        "LoRA r16, dropout 0, large set, limited budget",
    ):
        assert f"## {title}" in report, title  # fmt: skip
    assert "The paper's regime claim, by KID at g = 1.5:**" in report and "Prior drift at t = 500" in report
    assert "not* Inception FID" in report and "| fine-tune (trained on the 4) |" in report and "| total |" in report
    assert (
        "| LoRA r16, dropout 0, large set, limited budget | 240 | 3 | 0.4 | 0 | a LoRA (rank 16) | its free prior"
        in report
    )
    units = {r: [json.loads((out / "eval" / f"{r}-s{f}-n60-t3-seed{s}-n8-steps2-g1-1.5.json").read_text())["values"]
                 for f in (0, 1) for s in (0, 1)] for r in ("lora", "lora_nodrop")}  # fmt: skip
    for metric, label in (("kid", "KID"), ("fd", "FD-FMNIST")):  # the LoRA arms' verdict, from the cached numbers
        a, b, c = ([u[f"{metric}_{mode}_g1.5"] for u in units[r]]
                   for r, mode in (("lora", "vanilla"), ("lora", "swapped"), ("lora_nodrop", "swapped")))  # fmt: skip
        claim = nodrop_claim(paired(b, c), paired(a, c))
        assert f"**The no-dropout claim, by {label} at g = 1.5:** {claim}." in report, label
    assert report.count("- C (dropout 0, free prior) − B (dropout 0.1, free prior): ") == 2
    for name in (
        "grid_large_limited.png",
        "grid_small.png",
        "grid_large_long.png",
        "grid_lora.png",
        "grid_lora_nodrop.png",
        "fd_vs_scale.png",
    ):
        assert (out / name).stat().st_size > 0, name  # fmt: skip
    runs = sorted(p.name for p in (out / "tb" / "finetunes").iterdir())
    assert runs == ["large_limited-s0-n60-t3", "large_limited-s1-n60-t3", "large_long-s0-n60-t12", "large_long-s1-n60-t12",
                    "lora-s0-n60-t3", "lora-s1-n60-t3", "lora_nodrop-s0-n60-t3", "lora_nodrop-s1-n60-t3",
                    "small-s0-n6-t3", "small-s1-n6-t3"]  # fmt: skip
    assert (out / "tb" / "finetunes" / runs[0] / "cfg_eval.csv").stat().st_size > 0  # the recipe's callback ran
    for run, dropout in (("lora-s0-n60-t3", 0.1), ("lora_nodrop-s1-n60-t3", 0.0)):  # what each recipe trained
        hparams = yaml.safe_load((out / "tb" / "finetunes" / run / "hparams.yaml").read_text())
        assert hparams["cfg_dropout"] == dropout and hparams["lora"]["rank"] == 16, run
        assert (out / "tb" / "finetunes" / run / "export" / "adapter_model.safetensors").is_file(), run
    cached = sorted((out / "eval").glob("*seed*.json"))
    assert len(cached) == 10 * 2 + 2  # every (fine-tune, sampling seed) run, plus the base's unconditional samples
    assert len(list((out / "eval").glob("*-drift-*.json"))) == 10
    assert f"report: {out / 'report.md'}" in first and "tensorboard --logdir" in first
    stamp = cached[0].stat().st_mtime
    assert main(["demo", "--tiny", "--out", str(out), "--no-progress"]) == 0
    again = capsys.readouterr().out
    assert again.count("already done; reusing it") == 10 and "evaluating" not in again
    assert cached[0].stat().st_mtime == stamp


def test_missing_debian_dataset_is_one_line(tmp_path):
    with pytest.raises(PriorswapError) as err:
        load_split("test", root=str(tmp_path))
    assert "apt-get install dataset-fashion-mnist" in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_regime_is_one_line_before_anything_runs(tmp_path, capsys):
    assert main(["demo", "--tiny", "--regimes", "lora", "nodrop", "--out", str(tmp_path / "d"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--regimes: unknown regime 'nodrop'; choose from large_limited, large_long, lora, lora_nodrop, small" in err
    assert "Traceback" not in err and not (tmp_path / "d").exists()


def test_regimes_selects_from_all_in_the_table_order():
    from priorswap.toolkit.demo.config import LARGE, LORA, LORA_NODROP, SMALL, DemoConfig, select

    assert select(["lora_nodrop", "lora"], DemoConfig().regimes) == (LORA, LORA_NODROP)
    assert select(None, DemoConfig().regimes) == (LARGE, SMALL)  # the default table is unchanged
    assert LORA in DemoConfig.full("x").regimes and LORA_NODROP in DemoConfig.tiny("x").regimes


def test_an_output_folder_that_cannot_be_made_is_one_line(capsys):
    """/proc passes os.access for root; the check makes (and removes) a real file to know."""
    assert main(["demo", "--tiny", "--out", "/proc/priorswap-demo", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--out '/proc/priorswap-demo' cannot be written: '/proc' is not writable" in err and "Traceback" not in err
    assert not os.path.exists("/proc/priorswap-demo")


DEMO_SCRIPT = """
import sys
from priorswap.toolkit.demo.config import LARGE, DemoConfig
from priorswap.toolkit.demo.runner import run_demo
cfg = DemoConfig(out=sys.argv[1], regimes=(LARGE,), sample_seeds=(0,), scales=(1.5,), num_samples=8, steps=2,
                 batch_size=8, drift_images=16, drift_timesteps=(500,), callback_samples=8, size_scale=0.1,
                 progress=False, preset="tiny")
run_demo(cfg)
"""


def _demo_process(out):
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", DEMO_SCRIPT, str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


@pytest.mark.skipif(not os.path.isdir(DEBIAN), reason="needs the Debian package dataset-fashion-mnist")
def test_demo_killed_mid_fine_tune_resumes_and_matches_an_uninterrupted_run(tmp_path):
    """SIGTERM while the demo fine-tunes: a checkpoint is saved, the re-run resumes it (not a restart) and ends with
    the same fine-tuned weights as a demo that was never stopped."""
    import signal
    import time

    from safetensors.torch import load_file

    run = tmp_path / "killed" / "tb" / "finetunes" / "large_limited-s0-n600-t30"
    # the never-stopped demo runs beside the killed one (one thread each, on separate output folders)
    whole = _demo_process(tmp_path / "whole")
    proc = _demo_process(tmp_path / "killed")
    deadline = time.monotonic() + 300
    while not (run / "hparams.yaml").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the logger has started: the fine-tune is training
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert "priorswap: stopped at step" in out and not (run / "done.json").exists(), out
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file(), out
    step = torch_step(last)
    assert 0 < step < 30, step  # stopped part-way, and nothing was lost before the signal
    again = _demo_process(tmp_path / "killed")
    out2, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out2[-3000:]
    assert "priorswap: resuming" in out2 or f"Restored all states from the checkpoint at {last}" in out2, out2[-3000:]
    out3, _ = whole.communicate(timeout=600)
    assert whole.returncode == 0, out3[-3000:]
    name = "transformer/diffusion_pytorch_model.safetensors"
    a = load_file(str(run / "export" / name))
    b = load_file(str(tmp_path / "whole" / "tb" / "finetunes" / run.name / "export" / name))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def torch_step(path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
