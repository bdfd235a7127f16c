"""`priorswap fit` as a user runs it: the paper recipes end to end (sizes shrunk), run folders, refusals up front."""

import glob
import os
import warnings

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from priorswap.data import Food101DataModule
from priorswap.toolkit.cli import main
from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.training.module import DiTFineTune

from factories import save_dit_pipeline
from fakedata import make_caltech101, make_food101, make_sun397
from repo_paths import RECIPES

TINY = os.path.join(RECIPES, "tiny_food101.yaml")
CB = "--trainer.callbacks.init_args."
FMNIST = '{"class_path": "priorswap.toolkit.demo.classifier.FMNISTExtractor"}'  # a cheap built-in feature network
NOISE = ("flops_per_batch", "module(s) in eval mode", "dataloader is not resumable", "LeafSpec")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny DiT pipeline folder with its VAE (vae/), standing in for facebook/DiT-XL-2-256 and sd-vae-ft-ema."""
    return save_dit_pipeline(str(tmp_path_factory.mktemp("base") / "dit"), num_classes=10, sample_size=8, latent=True)


def shrunk(recipe: str, root: str, base: str, runs: str, steps: int = 2) -> list[str]:
    """The paper recipe with only its sizes shrunk (and the hub models replaced by the tiny base folder)."""
    return [
        "fit",
        "-c",
        os.path.join(RECIPES, recipe),
        "--data.root",
        root,
        "--data.resolution",
        "8",  # the tiny base: sample_size 8 latents of a VAE that does not downscale
        "--data.batch_size",
        "4",
        "--data.num_workers",
        "0",
        "--data.latent_cache",
        "null",
        "--model.pretrained",
        base,
        "--model.vae",
        base,
        "--trainer.accelerator",
        "cpu",
        "--trainer.precision",
        "32",
        "--trainer.max_steps",
        str(steps),
        "--trainer.val_check_interval",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.logger.init_args.save_dir",
        runs,
        CB + "prior",
        base,
        CB + "extractor",
        FMNIST,
        CB + "metric_name",
        "fd_fmnist",
        CB + "num_samples",
        "4",
        CB + "reference_samples",
        "4",
        CB + "steps",
        "2",
        CB + "batch_size",
        "4",
        CB + "every_n_steps",
        "2",
        CB + "grid_samples",
        "2",
        CB + "stats_cache",
        os.path.join(runs, "stats"),
    ]


def noise(record) -> list[str]:
    return [str(w.message)[:120] for w in record if any(n in str(w.message) for n in NOISE)]


@pytest.mark.parametrize(
    "recipe,make",
    [
        ("dit_xl2_food101.yaml", make_food101),
        ("dit_xl2_sun397.yaml", make_sun397),
        ("dit_xl2_caltech101.yaml", make_caltech101),
    ],
    ids=["food101", "sun397", "caltech101"],
)
def test_paper_recipe_evaluates_itself_end_to_end(tmp_path, base, recipe, make):
    root = make(str(tmp_path / "data"), classes=3, per_class=4)
    runs = str(tmp_path / "runs")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert main(shrunk(recipe, root, base, runs)) == 0
    assert not noise(record)
    run = os.path.join(runs, recipe[:-5], "version_0")
    acc = EventAccumulator(run, size_guidance={"scalars": 0, "images": 0}).Reload()
    scalars, images = acc.Tags()["scalars"], acc.Tags()["images"]
    assert (
        "cfg_eval/fd_fmnist_vanilla_g1.5" in scalars and "cfg_eval/fd_fmnist_swapped_g1.5" in scalars
    )  # the recipe's g
    assert any(t.startswith("cfg_eval/samples_g1.5") for t in images)
    with open(os.path.join(run, "cfg_eval.csv")) as f:
        rows = f.read().strip().splitlines()
    assert len(rows) == 2 and rows[1].startswith("2,")  # step 2: every_n_steps, checkpoint and fit end, evaluated once
    hparams = open(os.path.join(run, "hparams.yaml")).read()
    assert "num_classes: 3" in hparams  # linked from the datamodule
    assert os.path.isfile(os.path.join(run, "export", "model_index.json"))


def test_second_fit_gets_its_own_version_and_resume_continues_the_newest(tmp_path, base):
    root, runs = make_food101(str(tmp_path / "food"), classes=3, per_class=4), str(tmp_path / "runs")
    args = shrunk("dit_xl2_food101.yaml", root, base, runs)
    assert main(args) == 0
    assert main(args) == 0  # the same command again: a new run, next to the first
    parent = os.path.join(runs, "dit_xl2_food101")
    assert sorted(os.listdir(parent)) == ["version_0", "version_1"]
    for v in ("version_0", "version_1"):
        assert len(glob.glob(os.path.join(parent, v, "events.out.tfevents.*"))) == 1
        assert sorted(os.listdir(os.path.join(parent, v, "checkpoints"))) == ["last.ckpt"]  # no last-v1.ckpt
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert main(shrunk("dit_xl2_food101.yaml", root, base, runs, steps=3) + ["--ckpt_path", "last"]) == 0
    assert not noise(record)  # includes Lightning's "dataloader is not resumable" (false here: data/sampler.py)
    assert sorted(os.listdir(parent)) == ["version_0", "version_1"]  # resumed in place
    state = torch.load(
        os.path.join(parent, "version_1", "checkpoints", "last.ckpt"), weights_only=False, map_location="cpu"
    )
    assert state["global_step"] == 3
    with open(os.path.join(parent, "version_1", "cfg_eval.csv")) as f:
        assert [r.split(",")[0] for r in f.read().strip().splitlines()[1:]] == ["2", "3"]  # earlier row kept


def test_resume_never_picks_an_older_finished_run(tmp_path, base, capsys):
    """A finished version_0 and an interrupted version_1 without a checkpoint: `--ckpt_path last` refuses in one
    line naming both, and a finished newest run is not resumed at its own max_steps; no file of version_0 changes."""
    root, runs = make_food101(str(tmp_path / "food"), classes=3, per_class=4), str(tmp_path / "runs")
    args = shrunk("dit_xl2_food101.yaml", root, base, runs)
    assert main(args) == 0
    finished = os.path.join(runs, "dit_xl2_food101", "version_0")
    before = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(finished, "**", "*"), recursive=True)}
    interrupted = os.path.join(runs, "dit_xl2_food101", "version_1")
    os.makedirs(interrupted)  # killed before its first checkpoint: a run folder with logs only
    open(os.path.join(interrupted, "events.out.tfevents.0"), "w").close()
    capsys.readouterr()
    assert main(args + ["--ckpt_path", "last"]) == 2
    line = error_line(capsys)
    assert "version_1 has no checkpoint" in line and "version_0 has one" in line, line
    os.remove(os.path.join(interrupted, "events.out.tfevents.0"))
    os.rmdir(interrupted)
    assert main(args + ["--ckpt_path", "last"]) == 2  # the newest run is finished at max_steps 2
    assert "already finished (step 2" in error_line(capsys)
    after = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(finished, "**", "*"), recursive=True)}
    assert after == before


def error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("priorswap: error")]
    assert len(lines) == 1
    return lines[0]


def quick(tmp_path, *extra) -> list[str]:
    """A fit whose model cannot load (a missing folder): any refusal must come before the model is built."""
    food = make_food101(str(tmp_path / "food"), classes=2, per_class=2)
    return ["fit", "-c", TINY, "--data.root", food, "--model.pretrained", str(tmp_path / "no-model"), *extra]


def test_resume_with_nothing_to_resume_is_refused(tmp_path, capsys):
    assert (
        main(quick(tmp_path, "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--ckpt_path", "last")) == 2
    )
    assert "nothing to resume" in error_line(capsys)
    assert not os.path.exists(tmp_path / "runs" / "tiny_food101")


def test_a_named_run_folder_that_holds_a_run_is_refused(tmp_path, capsys):
    run = tmp_path / "runs" / "tiny_food101" / "mine"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    args = quick(
        tmp_path,
        "--trainer.logger.init_args.save_dir",
        str(tmp_path / "runs"),
        "--trainer.logger.init_args.version",
        "mine",
    )
    assert main(args) == 2
    line = error_line(capsys)
    assert "already holds a run" in line and "--ckpt_path last" in line and "--trainer.logger.init_args.version" in line


def test_unwritable_save_dir_is_refused_before_the_model_loads(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # chmod does not stop root; a file where a folder must go stops everyone
    assert main(quick(tmp_path, "--trainer.logger.init_args.save_dir", str(blocker / "runs"))) == 2
    line = error_line(capsys)
    assert "save_dir" in line and "a-file" in line


def test_missing_checkpoint_file_is_refused(tmp_path, capsys):
    assert (
        main(
            quick(
                tmp_path,
                "--trainer.logger.init_args.save_dir",
                str(tmp_path / "runs"),
                "--ckpt_path",
                str(tmp_path / "x.ckpt"),
            )
        )
        == 2
    )
    assert "x.ckpt" in error_line(capsys)


def test_abbreviated_lightning_flag_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(quick(tmp_path, "--trainer.max_step", "3"))
    assert err.value.code == 2
    assert "--trainer.max_step" in error_line(capsys)


def test_python_api_without_num_classes_says_what_to_pass(tmp_path):
    dm = Food101DataModule(
        root=make_food101(str(tmp_path / "food"), classes=2, per_class=2), resolution=16, batch_size=2, num_workers=0
    )
    model = DiTFineTune(pretrained=None, vae=None, size="tiny", in_channels=3, sample_size=16, export_on_fit_end=False)
    trainer = L.Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False, use_distributed_sampler=False
    )
    with pytest.raises(PriorswapError, match="num_classes=dm.num_classes"):
        trainer.fit(
            model, dm
        )  # the class count is passed (the CLI links it), not read from the datamodule by the module


def test_an_unrelated_module_in_eval_mode_still_warns(tmp_path):
    dm = Food101DataModule(
        root=make_food101(str(tmp_path / "food"), classes=2, per_class=2), resolution=16, batch_size=2, num_workers=0
    )
    model = DiTFineTune(
        pretrained=None, vae=None, size="tiny", in_channels=3, sample_size=16, num_classes=2, export_on_fit_end=False
    )
    model.extra = torch.nn.Linear(2, 2).eval()  # not one of the frozen parts the module knows about
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        use_distributed_sampler=False,
        enable_checkpointing=False,
        limit_val_batches=0,
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer.fit(model, dm)
    assert any("module(s) in eval mode" in str(w.message) for w in record)


def test_ddp_default_output_folders(tmp_path):
    """Under DDP the export folder and cfg_eval.csv default to the log folder, which only rank 0 can name."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from priorswap.callbacks import PriorSwapEval
    from priorswap.toolkit.demo.classifier import FMNISTExtractor

    pixel = save_dit_pipeline(str(tmp_path / "base"), num_classes=10, sample_size=16, latent=False, in_channels=3)
    food = make_food101(str(tmp_path / "food"), classes=3, per_class=4)
    dm = Food101DataModule(root=food, resolution=16, batch_size=2, num_workers=0)
    model = DiTFineTune(pretrained=pixel, vae=None, num_classes=3, ema_decay=0.5)
    cb = PriorSwapEval(
        prior=pixel,
        num_samples=4,
        steps=2,
        batch_size=2,
        every_n_steps=2,
        extractor=FMNISTExtractor(),
        reference_samples=4,
        stats_cache=None,
        grid_samples=0,
    )
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        callbacks=[cb],
        logger=TensorBoardLogger(str(tmp_path / "tb"), name="ddp"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        use_distributed_sampler=False,
        limit_val_batches=0,
    )
    trainer.fit(model, dm)
    run = tmp_path / "tb" / "ddp" / "version_0"
    assert (run / "cfg_eval.csv").is_file() and (run / "export" / "model_index.json").is_file()


def test_demo_runner_takes_its_recipes_from_the_package(tmp_path, monkeypatch):
    """`priorswap demo` after `pip install .` (no source tree): recipes are package data, found by importlib.resources."""
    from priorswap.toolkit.demo import runner
    from priorswap.toolkit.training import cli

    shipped = tmp_path / "site-packages" / "priorswap" / "recipes"
    shipped.mkdir(parents=True)
    (shipped / "demo_finetune.yaml").write_text("seed_everything: 0\n")
    monkeypatch.setattr(runner.resources, "files", lambda package: shipped if package == "priorswap.recipes" else None)
    seen = []
    monkeypatch.setattr(cli, "run_lightning_cli", lambda argv: seen.append(argv))
    runner._fit("demo_finetune.yaml", runner.DemoConfig(out=str(tmp_path / "out")), ["--x", "1"])
    assert seen[0][:3] == ["fit", "-c", str(shipped / "demo_finetune.yaml")] and seen[0][-2:] == ["--x", "1"]


def test_demo_restarts_a_run_stopped_before_its_first_checkpoint(tmp_path):
    from priorswap.toolkit.demo.runner import _resume_or_restart

    run = tmp_path / "demo_finetune" / "run"
    run.mkdir(parents=True)
    (run / "events.out.tfevents.1").write_text("")
    assert _resume_or_restart(str(run)) == [] and not run.exists()  # else the next fit would refuse the folder
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_text("")
    assert _resume_or_restart(str(run)) == ["--ckpt_path", "last"] and run.exists()
