"""Faults across real processes: 2-process DDP fine-tunes on CPU (gloo) that fail, are killed or preempted.

Every scenario runs ``priorswap fit`` as a user does (Lightning's own launcher, or torchrun) in its own process
group, bounded by ``LIMIT``: a hang kills the group and fails the test. The faults are injected by the test-only
callbacks below (named in the scenario's recipe), never by a switch in the product.
"""

import glob
import os
import resource
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from priorswap.toolkit.metrics.fmnist import FMNISTExtractor

from fakedata import make_food101

LIMIT = 120  # seconds per process launch; a job that does not end by itself fails the test
STEPS = 6  # 24 images, 4 per rank and step on 2 ranks: 3 steps an epoch; last.ckpt at steps 3 and 6


# -- test-only faults (the children import them from this file) ----------------------------------------------
class FailingExtractor(FMNISTExtractor):
    """The evaluation's feature network, raising on one rank (a bad image, an out-of-memory, a broken file)."""

    def __init__(self, rank: int = 1):
        super().__init__()
        self.fail_rank = rank

    def features(self, images):
        if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == self.fail_rank:
            raise RuntimeError(f"injected evaluation failure on rank {self.fail_rank}")
        return super().features(images)


class Fault(Callback):
    """One fault at optimiser step ``step`` on rank ``rank``.

    ``sigkill``: the rank is killed between its forward and backward (mid-step, its peer waits in the all-reduce).
    ``write``: the next file rank 0 opens for writing in the checkpoint folder is killed by the kernel half-way
    (``RLIMIT_FSIZE`` at half a checkpoint: SIGXFSZ), whatever code writes it.
    ``sigterm``: the whole process group gets SIGTERM (as a preempted job), while the other rank already waits in
    the step's gradient all-reduce.
    """

    def __init__(self, kind: str, step: int, rank: int = 0):
        self.kind, self.step, self.rank = kind, step, rank

    def _here(self, trainer) -> bool:
        return trainer.global_step == self.step and trainer.global_rank == self.rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self._here(trainer):
            return
        if self.kind == "write":
            folder = trainer.checkpoint_callback.dirpath
            half = os.path.getsize(os.path.join(folder, "last.ckpt")) // 2
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it (the write would raise): kill instead
            sys.addaudithook(_kill_write_in(os.path.abspath(folder), half))
        elif self.kind == "sigterm":
            time.sleep(2)  # the other rank is now in backward, blocked in the gradient all-reduce
            os.killpg(os.getpgrp(), signal.SIGTERM)

    def on_before_backward(self, trainer, pl_module, loss):
        if self.kind == "sigkill" and self._here(trainer):
            os.kill(os.getpid(), signal.SIGKILL)


def _kill_write_in(folder: str, limit: int):
    armed = []

    def hook(event, args):
        if armed or event != "open" or not isinstance(args[0], str):
            return
        mode, flags = args[1] or "", args[2] or 0
        writing = "w" in str(mode) or "x" in str(mode) or flags & (os.O_WRONLY | os.O_RDWR)
        if writing and os.path.dirname(os.path.abspath(args[0])) == folder:
            armed.append(args[0])
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return hook


# -- running a job ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def food(tmp_path_factory):
    return make_food101(str(tmp_path_factory.mktemp("food")), classes=3, per_class=8, test_per_class=2)


def recipe(path, food, runs, callbacks=(), extractor=None, devices=2) -> str:
    eval_cb = {
        "class_path": "priorswap.callbacks.PriorSwapEval",
        "init_args": {
            "prior": "initial",
            "num_samples": 4,
            "steps": 2,
            "batch_size": 2,
            "every_n_steps": 3,
            "extractor": extractor or {"class_path": "priorswap.toolkit.metrics.fmnist.FMNISTExtractor"},
            "metric_name": "fd_fmnist",
            "reference_samples": 4,
            "grid_samples": 0,
            "stats_cache": None,
        },
    }
    ckpt = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"save_top_k": 0, "save_last": True, "every_n_train_steps": 3},  # last.ckpt only
    }
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": devices,
            "strategy": "ddp",
            "max_steps": STEPS,
            "precision": "32",
            "limit_val_batches": 0,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(runs), "name": "t"},
            },
            "callbacks": [eval_cb, ckpt, *callbacks],
        },
        "model": {
            "pretrained": None,
            "vae": None,
            "size": "tiny",
            "in_channels": 3,
            "sample_size": 16,
            "lr": 1e-3,
            "ema_decay": 0.9,
            "export_on_fit_end": False,
        },
        "data": {
            "class_path": "priorswap.data.Food101DataModule",
            "init_args": {"root": food, "resolution": 16, "batch_size": 4, "num_workers": 0},
        },
    }
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return str(path)


def child_env(**extra) -> dict[str, str]:
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT")
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in drop}
    return {**base, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1", **extra}


class Job:
    def __init__(self, returncode: int, out: str, seconds: float):
        self.returncode, self.out, self.seconds = returncode, out, seconds


def fit(config: str, *flags: str, torchrun: bool = False, **env) -> Job:
    """One ``priorswap fit`` in its own process group; every process of it is gone when this returns."""
    cmd = [sys.executable, "-m", "priorswap.toolkit", "fit", "-c", config, *flags]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "priorswap.toolkit", "fit", "-c", config, *flags]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=child_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the job did not end within {LIMIT} s:\n{out[-3000:]}")
    finally:
        _end_group(proc.pid)
    return Job(proc.returncode, out, time.monotonic() - start)


def _end_group(pgid: int) -> None:
    """A rank left behind by a dead launcher counts as a hang: give it a moment, then fail."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.killpg(pgid, signal.SIGKILL)
    pytest.fail("a rank outlived its job")


def last_ckpt(runs) -> str:
    return os.path.join(runs, "t", "version_0", "checkpoints", "last.ckpt")


def weights(path: str) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert state["global_step"] == STEPS
    return state["state_dict"]


def assert_same_weights(a: dict, b: dict) -> None:
    """Bit-identical: on one CPU the same ops run in the same order, and gloo sums 2 ranks' gradients the same way."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def uninterrupted(food, tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    job = fit(recipe(root / "r.yaml", food, root / "runs"))
    assert job.returncode == 0, job.out[-3000:]
    return weights(last_ckpt(root / "runs"))


def resumed(config: str, runs) -> dict[str, torch.Tensor]:
    job = fit(config, "--ckpt_path", "last")
    assert job.returncode == 0, job.out[-3000:]
    assert "priorswap: resuming" in job.out
    return weights(last_ckpt(runs))


def report(name: str, job: Job) -> None:
    print(f"{name}: job ended after {job.seconds:.1f} s with exit code {job.returncode}")


# -- 1. one rank fails during the evaluation ----------------------------------------------------------------------
@pytest.mark.parametrize("rank", [0, 1])
def test_one_rank_failing_in_the_evaluation_ends_every_rank_with_the_error(tmp_path, food, rank):
    extractor = {"class_path": "test_faults_ddp.FailingExtractor", "init_args": {"rank": rank}}
    job = fit(recipe(tmp_path / "r.yaml", food, tmp_path / "runs", extractor=extractor))
    report(f"evaluation fails on rank {rank}", job)
    assert job.returncode != 0
    assert f"injected evaluation failure on rank {rank}" in job.out
    other = "PriorSwapEval failed on another rank"
    assert other in job.out, job.out[-3000:]  # the rank that did not fail stops with it, not in a hang


# -- 2. one rank killed mid-step ------------------------------------------------------------------------------------
def test_one_rank_killed_mid_step_ends_the_job_and_resume_equals_an_uninterrupted_run(tmp_path, food, uninterrupted):
    runs = tmp_path / "runs"
    job = fit(recipe(tmp_path / "killed.yaml", food, runs, callbacks=[fault("sigkill", 4, rank=1)]))
    report("rank 1 SIGKILLed mid-step", job)
    assert job.returncode != 0
    assert torch.load(last_ckpt(runs), map_location="cpu", weights_only=True)["global_step"] == 3
    assert_same_weights(resumed(recipe(tmp_path / "resume.yaml", food, runs), runs), uninterrupted)


# -- 3. a checkpoint write killed half-way -------------------------------------------------------------------------
def test_a_checkpoint_write_killed_half_way_never_becomes_last(tmp_path, food, uninterrupted):
    """Rank 0 dies half-way through writing the step-6 checkpoint; TMPDIR on another filesystem, as a cluster
    node's local /tmp is to a shared run folder."""
    other_fs = "/dev/shm"
    if not os.path.isdir(other_fs) or os.stat(other_fs).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a temp folder on another filesystem than the run folder")
    runs = tmp_path / "runs"
    job = fit(recipe(tmp_path / "write.yaml", food, runs, callbacks=[fault("write", 4)]), TMPDIR=other_fs)
    report("checkpoint write killed half-way", job)
    assert job.returncode != 0 and "stopped at step" not in job.out
    folder = os.path.dirname(last_ckpt(runs))
    leftovers = glob.glob(os.path.join(folder, ".*"))
    assert leftovers  # the killed write's temp file, beside an untouched last.ckpt
    assert torch.load(last_ckpt(runs), map_location="cpu", weights_only=True)["global_step"] == 3
    assert_same_weights(resumed(recipe(tmp_path / "resume.yaml", food, runs), runs), uninterrupted)
    assert sorted(os.listdir(folder)) == ["last.ckpt"]  # the leftover was ignored, then removed


# -- 4. SIGTERM to the whole job (preemption) ------------------------------------------------------------------------
@pytest.mark.parametrize("torchrun,at", [(False, 4), (True, 2)], ids=["lightning-launcher", "torchrun-evaluation-due"])
def test_sigterm_to_every_rank_saves_at_the_step_end_and_resume_equals_an_uninterrupted_run(
    tmp_path, food, uninterrupted, torchrun, at
):
    runs = tmp_path / "runs"
    job = fit(recipe(tmp_path / "term.yaml", food, runs, callbacks=[fault("sigterm", at)]), torchrun=torchrun)
    report(f"SIGTERM to the job ({'torchrun' if torchrun else 'Lightning launcher'})", job)
    assert job.returncode != 0, job.out[-3000:]
    # the step the signal came in was finished, then saved
    assert f"stopped at step {at + 1}" in job.out, job.out[-3000:]
    assert torch.load(last_ckpt(runs), map_location="cpu", weights_only=True)["global_step"] == at + 1
    if (at + 1) % 3 == 0:  # the evaluation due at that step was skipped: a preempted job has seconds, not minutes
        assert not os.path.exists(os.path.join(os.path.dirname(os.path.dirname(last_ckpt(runs))), "cfg_eval.csv"))
    assert_same_weights(resumed(recipe(tmp_path / "resume.yaml", food, runs), runs), uninterrupted)
    assert sorted(os.listdir(os.path.dirname(last_ckpt(runs)))) == ["last.ckpt"]  # no last-v1.ckpt beside it


def fault(kind: str, step: int, rank: int = 0) -> dict:
    return {"class_path": "test_faults_ddp.Fault", "init_args": {"kind": kind, "step": step, "rank": rank}}
