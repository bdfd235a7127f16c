"""Evaluations launched as 2 real processes (torchrun, SLURM's environment) equal one process, on CPU with gloo."""

import csv
import json
import os
import socket
import subprocess
import sys

import pytest

from priorswap.toolkit.cli import main
from priorswap.toolkit.launch import detect

from factories import save_dit_pipeline
from fakedata import make_food101
from protocol_factories import assert_same_values, protocol_env, values, zero123_args

LIMIT = 240  # seconds: a hung rendezvous or barrier fails the test instead of the suite


@pytest.fixture(scope="module")
def dit(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch")
    base = save_dit_pipeline(str(root / "base"), num_classes=10, sample_size=16, latent=False, in_channels=3)
    ft = save_dit_pipeline(str(root / "ft"), num_classes=3, sample_size=16, latent=False, in_channels=3, seed=2)
    with open(os.path.join(ft, "id2label.json"), "w") as f:  # --classifier fmnist scores these 3 of its classes
        json.dump({"0": "T-shirt/top", "1": "Trouser", "2": "Pullover"}, f)
    return base, ft, make_food101(str(root / "food"), classes=3, per_class=3, test_per_class=3)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return protocol_env(tmp_path_factory.mktemp("protocols"))


def eval_dit_args(dit, out):
    base, ft, food = dit
    return ["eval", "dit", "--model", ft, "--prior", base, "--data", "food101", "--data-root", food,
            "--num-samples", "7", "--guidance-scale", "1.5", "3", "--steps", "2", "--batch-size", "2",
            "--extractor", "fmnist", "--classifier", "fmnist", "--classes", "0", "1", "2", "--device", "cpu", "--stats-cache", "",
            "--output-dir", str(out), "--no-progress"]  # fmt: skip


def table(out) -> dict[tuple[str, str], tuple[float, float]]:
    with open(os.path.join(out, "eval.csv")) as f:
        return {(r["metric"], r["scale"]): (float(r["vanilla"]), float(r["swapped"])) for r in csv.DictReader(f)}


def child_env(**extra) -> dict[str, str]:
    """This test's imports (the worktree's priorswap, tests/ helpers) in the children; no launcher variables leak in."""
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT")
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in drop}
    return {**base, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1", **extra}


def torchrun(*argv) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "priorswap.toolkit", *argv]  # fmt: skip
    res = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=LIMIT)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_eval_dit_shards_by_rank_and_equals_one_process(dit, tmp_path, capsys):
    assert main(eval_dit_args(dit, tmp_path / "one")) == 0
    capsys.readouterr()
    res = torchrun(*eval_dit_args(dit, tmp_path / "two"))
    assert res.stdout.count("| fd_fmnist @ 1.5 |") == 1  # rank 0 alone prints and writes the table
    one, two = table(tmp_path / "one"), table(tmp_path / "two")
    assert one.keys() == two.keys() and ("acc", "1.5") in one
    for k in one:  # the same samples; only the order of the float64 sums over ranks differs
        assert two[k] == pytest.approx(one[k], rel=1e-6, abs=1e-9), k


def test_slurm_environment_shards_eval_dit_by_itself(dit, tmp_path, capsys):
    assert main(eval_dit_args(dit, tmp_path / "one")) == 0
    capsys.readouterr()
    port = str(free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "priorswap.toolkit", *eval_dit_args(dit, tmp_path / "srun")],
            env=child_env(
                SLURM_NTASKS="2",
                SLURM_PROCID=str(k),
                SLURM_LOCALID=str(k),
                SLURM_NODEID="0",
                SLURM_JOB_NAME="eval",
                SLURM_JOB_ID="1234",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for k in range(2)
    ]
    outs = [p.communicate(timeout=LIMIT) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    assert outs[0][0].count("| fd_fmnist @ 1.5 |") == 1 and "| fd_fmnist" not in outs[1][0]
    one, two = table(tmp_path / "one"), table(tmp_path / "srun")
    for k in one:
        assert two[k] == pytest.approx(one[k], rel=1e-6, abs=1e-9), k


def test_torchrun_protocol_eval_samples_by_rank_then_rank_zero_scores(env, tmp_path, capsys):
    assert main([*zero123_args(env, tmp_path / "one"), "--no-progress"]) == 0
    capsys.readouterr()
    res = torchrun(*zero123_args(env, tmp_path / "two"), "--no-progress")
    assert res.stdout.count("shard 0/2") == 1 and res.stdout.count("shard 1/2") == 1  # each rank sampled its share
    assert_same_values(values(str(tmp_path / "two")), values(str(tmp_path / "one")))


def test_alone_or_interactive_slurm_is_not_a_launch(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(k, raising=False)
    assert detect() is None
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # an salloc shell: the user launches by hand (--shard)
    assert detect() is None
