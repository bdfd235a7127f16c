"""`priorswap fit` on a user's own images with the shipped base, from any folder; mistakes refused at start-up.

Each refusal is one line, exit code 2, before any weights load, and leaves no run folder behind.
"""

import os

import pytest

from priorswap.data.fashion_mnist import DEBIAN_ROOT, FashionMNISTDataModule
from priorswap.toolkit.cli import main
from priorswap.toolkit.shipped import packaged

from fakedata import make_image_folder

CB = "--trainer.callbacks.init_args."
FAST = [  # the recipes' sizes shrunk: one step, a two-sample evaluation
    "--trainer.max_steps", "1", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false", "--data.init_args.batch_size", "4",
    CB + "num_samples", "2", CB + "batch_size", "2", CB + "steps", "1", CB + "reference_samples", "2",
    CB + "grid_samples", "0",
]  # fmt: skip
have_fmnist = pytest.mark.skipif(
    not os.path.isdir(DEBIAN_ROOT), reason="needs the Debian package dataset-fashion-mnist"
)


def user_recipe(tmp_path, root: str) -> str:
    """What a user writes first: an ImageFolder with its defaults (RGB, 256 px) on the shipped demo base."""
    path = tmp_path / "mine.yaml"
    path.write_text(
        "trainer:\n  logger:\n    class_path: lightning.pytorch.loggers.TensorBoardLogger\n"
        f"    init_args: {{save_dir: {tmp_path / 'runs'}, name: mine}}\n"
        "model: {pretrained: toolkit/assets/demo_base, vae: null}\n"
        f"data:\n  class_path: priorswap.data.ImageFolderDataModule\n  init_args: {{root: {root}, num_workers: 0}}\n"
    )
    return str(path)


def refusal(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("priorswap: error")]
    assert len(lines) == 1
    return lines[0]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Work from a folder that is not the repository root, as a user with a wheel install does."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


@pytest.fixture
def no_weights(monkeypatch):
    """Any weights load fails loudly: refusals must come before them."""
    from priorswap.toolkit.training import module

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the start-up checks")

    monkeypatch.setattr(module, "load_dit", refuse)


def test_rgb_256px_images_on_the_grey_32px_base_are_one_line_naming_the_settings(tmp_path, capsys, no_weights):
    root = make_image_folder(tmp_path / "images", classes=3, per_class=4)
    assert main(["fit", "-c", user_recipe(tmp_path, root)]) == 2
    line = refusal(capsys)
    assert "--data.init_args.channels 1" in line and "--data.init_args.resolution 32" in line
    assert "demo_base" in line and "auto" in line
    assert not (tmp_path / "runs").exists()


def test_channels_auto_matches_the_model_and_trains(tmp_path, elsewhere):
    root = make_image_folder(tmp_path / "images", classes=3, per_class=4)
    args = ["fit", "-c", user_recipe(tmp_path, root), "--data.init_args.channels", "auto"]
    args += ["--data.init_args.resolution", "32", "--trainer.max_steps", "1", "--trainer.enable_progress_bar", "false"]
    assert main(args) == 0
    run = tmp_path / "runs" / "mine" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "export" / "model_index.json").is_file()


def test_shipped_own_images_recipe_works_from_any_folder(tmp_path, elsewhere):
    root = make_image_folder(tmp_path / "images", classes=3, per_class=6)
    runs = tmp_path / "runs"
    args = ["fit", "-c", "own_images.yaml", "--data.root", root, "--trainer.logger.init_args.save_dir", str(runs)]
    assert main(args + FAST + [CB + "stats_cache", str(tmp_path / "stats")]) == 0
    run = runs / "own_images" / "version_0"
    assert (run / "cfg_eval.csv").is_file() and (run / "export" / "model_index.json").is_file()
    assert not (elsewhere / "runs").exists()


@have_fmnist
def test_shipped_demo_recipe_works_from_any_folder(tmp_path, elsewhere):
    args = ["fit", "-c", "demo_finetune.yaml", "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]
    args += ["--data.init_args.limit_per_class", "4", CB + "stats_cache", str(tmp_path / "stats")]
    assert main(args + FAST) == 0
    assert (tmp_path / "runs" / "demo_finetune" / "run" / "export" / "model_index.json").is_file()


@pytest.mark.parametrize("dataset", ["fashion_mnist", "imagefolder"])
def test_class_id_out_of_range_is_one_line_before_the_model_loads(tmp_path, capsys, elsewhere, dataset):
    if dataset == "fashion_mnist":
        if not os.path.isdir(DEBIAN_ROOT):
            pytest.skip("needs the Debian package dataset-fashion-mnist")
        args, bad, count = ["-c", "demo_finetune.yaml"], "[5, 12]", "10 classes"
    else:
        root = make_image_folder(tmp_path / "images", classes=3, per_class=2)
        args, bad, count = ["-c", "own_images.yaml", "--data.root", root], "[1, 5]", "3 classes"
    missing = str(tmp_path / "no-model")  # had the model been loaded first, this would be the error
    args += ["--model.pretrained", missing, "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]
    assert main(["fit", *args, "--data.init_args.classes", bad]) == 2
    line = refusal(capsys)
    assert "data.init_args.classes" in line and count in line and "out of range" in line
    assert not (tmp_path / "runs").exists()


def test_a_start_that_fails_after_the_logger_began_leaves_no_run_folder(tmp_path, capsys, elsewhere):
    root = make_image_folder(tmp_path / "images", classes=3, per_class=2)
    runs = tmp_path / "runs"
    (runs / "own_images" / "version_0").mkdir(parents=True)  # an earlier run: never touched
    args = ["fit", "-c", "own_images.yaml", "--data.root", root, "--trainer.logger.init_args.save_dir", str(runs)]
    assert main(args + FAST + [CB + "prior", str(tmp_path / "no-prior")]) == 2  # fails in the callback's setup
    assert "no-prior" in refusal(capsys)
    assert sorted(os.listdir(runs / "own_images")) == ["version_0"]
    assert os.listdir(runs / "own_images" / "version_0") == []


def test_packaged_paths_are_the_package_and_other_paths_stay_relative(elsewhere):
    shipped = packaged("toolkit/assets/demo_base")
    assert os.path.isabs(shipped) and os.path.isfile(os.path.join(shipped, "model_index.json"))
    assert packaged("./toolkit/assets/demo_base") == shipped
    for own in ("toolkit/assets/not_shipped", "my/base", "facebook/DiT-XL-2-256", "../toolkit/assets/demo_base"):
        assert packaged(own) == own


def test_sampling_commands_find_the_packaged_base_from_any_folder(elsewhere):
    from priorswap.toolkit.dit.load import load_dit
    from priorswap.toolkit.priors import load_prior

    assert load_dit("toolkit/assets/demo_base").denoiser.num_classes == 10
    assert load_prior("toolkit/assets/demo_base").denoiser.num_classes == 10


def test_fashion_mnist_channels_replace_rgb(tmp_path):
    if not os.path.isdir(DEBIAN_ROOT):
        pytest.skip("needs the Debian package dataset-fashion-mnist")
    dm = FashionMNISTDataModule(limit_per_class=1, channels=3, batch_size=2)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["pixels"].shape[1] == 3
