"""Every recipe parses against the real classes' typed signatures (LightningCLI, nothing instantiated)."""

import glob
import os
import shutil

import pytest

from priorswap.toolkit.training.cli import PriorswapCLI, shipped_recipes
from priorswap.toolkit.training.model_choice import names_model_class
from priorswap.toolkit.training.module import DiTFineTune

import repo_paths

RECIPE_DIR = repo_paths.RECIPES
BASE = "dit_xl2_base.yaml"  # the paper recipes' shared settings; loaded by each of them, not used alone
RECIPES = sorted(r for r in glob.glob(os.path.join(RECIPE_DIR, "*.yaml")) if os.path.basename(r) != BASE)
PAPER = ["dit_xl2_food101.yaml", "dit_xl2_sun397.yaml", "dit_xl2_caltech101.yaml"]
LORA = [name.replace(".yaml", "_lora.yaml") for name in PAPER]


class ParseOnly(PriorswapCLI):
    def instantiate_classes(self) -> None:  # validate types and class paths, build nothing (no hub access)
        pass


def parse(*args):
    import lightning as L

    by_class = names_model_class(list(args))  # a text-to-image recipe names its module, as `priorswap fit` reads it
    model = L.LightningModule if by_class else DiTFineTune
    return ParseOnly(
        model, L.LightningDataModule, subclass_mode_model=by_class, subclass_mode_data=True, run=False, args=list(args)
    ).config


def test_there_are_recipes():
    names = {os.path.basename(r) for r in RECIPES}
    assert {*PAPER, *LORA, "tiny_food101.yaml", "demo_base.yaml", "demo_finetune.yaml"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=os.path.basename)
def test_recipe_parses(recipe):
    cfg = parse("-c", recipe)
    assert cfg.data.class_path.startswith("priorswap.data.")
    assert cfg.trainer.max_steps > 0
    if "xl2" in recipe:  # the paper's settings (appendix B)
        assert cfg.model.pretrained == "facebook/DiT-XL-2-256" and cfg.model.vae == "stabilityai/sd-vae-ft-ema"
        assert cfg.model.lr == 1e-4 and cfg.model.cfg_dropout == 0.1 and cfg.model.ema_decay == 0.9999
        assert (
            cfg.trainer.max_steps == 20000
            and cfg.data.init_args.batch_size == 64
            and cfg.data.init_args.resolution == 256
        )


@pytest.mark.parametrize("name", PAPER)
def test_paper_recipe_attaches_the_papers_evaluation(name):
    cfg = parse("-c", os.path.join(RECIPE_DIR, name))
    dataset = name[len("dit_xl2_") : -len(".yaml")]
    assert cfg.data.class_path.lower() == f"priorswap.data.{dataset}datamodule"
    assert cfg.trainer.logger.init_args.name == f"dit_xl2_{dataset}" and cfg.trainer.logger.init_args.version is None
    by_class = {c.class_path.rsplit(".", 1)[-1]: c.init_args for c in cfg.trainer.callbacks}
    ev, ckpt = by_class["PriorSwapEval"], by_class["ModelCheckpoint"]
    assert (
        cfg.trainer.callbacks[-1].class_path == "priorswap.callbacks.PriorSwapEval"
    )  # `--trainer.callbacks.init_args.X` sets it
    assert ev.prior == "facebook/DiT-XL-2-256" and ev.guidance_scales == [1.5]
    assert ev.steps == 50 and ev.scheduler == "ddim" and ev.num_samples == 5000 and ev.reference_samples == 5000
    assert ev.every_n_steps == 2000 and ev.on_checkpoint and ev.at_fit_end
    assert ev.extractor.class_path.endswith("InceptionExtractor") and ev.metric_name == "fid"
    assert ev.extractor.init_args.weights_path is None and ev.extractor.init_args.allow_download  # online: it just runs
    assert ckpt.every_n_train_steps == 2000 and ckpt.save_last  # checkpoints fall on the evaluation steps


def test_offline_inception_path_is_one_flag():
    weights = "/models/weights-inception-2015-12-05-6726825d.pth"
    cfg = parse(
        "-c",
        os.path.join(RECIPE_DIR, "dit_xl2_food101.yaml"),
        "--trainer.callbacks.init_args.extractor.init_args.weights_path",
        weights,
    )
    ev = cfg.trainer.callbacks[-1].init_args
    assert ev.extractor.init_args.weights_path == weights and ev.num_samples == 5000  # the rest of the recipe kept
    assert cfg.trainer.callbacks[0].init_args.every_n_train_steps == 2000
    with open(os.path.join(RECIPE_DIR, BASE)) as f:
        assert "--trainer.callbacks.init_args.extractor.init_args.weights_path" in f.read()  # the comment names it


def test_shared_settings_live_in_one_file(tmp_path):
    copy = tmp_path / "recipes"
    shutil.copytree(RECIPE_DIR, copy)
    base = (copy / BASE).read_text()
    assert base.count("lr: 1.0e-4") == 1
    (copy / BASE).write_text(base.replace("lr: 1.0e-4", "lr: 3.0e-5").replace("max_steps: 20000", "max_steps: 123"))
    for name in PAPER:
        assert "lr:" not in (copy / name).read_text()
        cfg = parse("-c", str(copy / name))
        assert cfg.model.lr == 3e-5 and cfg.trainer.max_steps == 123


def test_a_users_overrides_file_layers_on_top(tmp_path):
    mine = tmp_path / "mine.yaml"  # LightningCLI's repeated -c: later files override earlier ones
    mine.write_text("model.lr: 5.0e-5\ndata.init_args.root: /elsewhere\n")
    cfg = parse("-c", os.path.join(RECIPE_DIR, "dit_xl2_sun397.yaml"), "-c", str(mine))
    assert cfg.data.class_path == "priorswap.data.SUN397DataModule" and cfg.data.init_args.root == "/elsewhere"
    assert cfg.model.lr == 5e-5 and cfg.trainer.callbacks[-1].init_args.num_samples == 5000
    assert cfg.model.ema_decay == 0.9999 and cfg.data.init_args.batch_size == 64


@pytest.mark.parametrize("given", ["dit_xl2_food101.yaml", "recipes/dit_xl2_food101.yaml", "tiny_food101.yaml"])
def test_a_recipe_missing_here_is_the_shipped_one(tmp_path, monkeypatch, given):
    monkeypatch.chdir(tmp_path)  # no recipes/ here (a wheel install, or any project folder)
    args = shipped_recipes(["fit", "-c", given, "--data.root", "x"])
    assert os.path.isfile(args[2]) and os.path.basename(args[2]) == os.path.basename(given)
    assert parse(*args[1:]).data.class_path == "priorswap.data.Food101DataModule"


def test_a_local_recipe_wins_over_the_shipped_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "dit_xl2_food101.yaml").write_text("seed_everything: 0\n")
    assert shipped_recipes(["-c", "recipes/dit_xl2_food101.yaml"])[1] == "recipes/dit_xl2_food101.yaml"
    assert shipped_recipes(["--config=nothing_by_this_name.yaml"]) == ["--config=nothing_by_this_name.yaml"]


def test_print_config_shows_the_callback(capsys):
    from priorswap.toolkit.cli import main

    with pytest.raises(SystemExit) as done:
        main(["fit", "-c", os.path.join(RECIPE_DIR, "dit_xl2_caltech101.yaml"), "--print_config"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "priorswap.callbacks.PriorSwapEval" in out and "num_samples: 5000" in out
    assert "class_path: priorswap.data.Caltech101DataModule" in out and "lr: 0.0001" in out


def test_abbreviated_flag_is_refused(capsys):
    with pytest.raises(SystemExit) as err:
        parse("-c", os.path.join(RECIPE_DIR, "tiny_food101.yaml"), "--trainer.max_step", "3")
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--trainer.max_step" in lines[0]


@pytest.mark.parametrize("name", LORA)
def test_lora_recipe_is_the_paper_recipe_with_a_lora_and_a_free_prior(name):
    cfg, paper = (
        parse("-c", os.path.join(RECIPE_DIR, name)),
        parse("-c", os.path.join(RECIPE_DIR, name[:-10] + ".yaml")),
    )
    assert cfg.model.lora.rank == 16 and cfg.model.lora.alpha == 16.0 and "norm1.linear" in cfg.model.lora.targets
    assert paper.model.lora is None
    assert cfg.trainer.logger.init_args.name == paper.trainer.logger.init_args.name + "_lora"
    assert cfg.data.class_path == paper.data.class_path and cfg.data.init_args.root == paper.data.init_args.root
    ev = cfg.trainer.callbacks[-1]
    assert ev.class_path == "priorswap.callbacks.PriorSwapEval"
    assert ev.init_args.prior == cfg.model.pretrained  # the base the LoRA started from: its adapter-off self
    assert ev.init_args == paper.trainer.callbacks[-1].init_args


def test_demo_regime_recipes_say_what_the_demo_runs():
    """Each regime's recipe (what a user runs by hand) holds the same set size and budget as the demo's Regime."""
    from priorswap.toolkit.demo.config import REGIMES

    for regime in REGIMES:
        cfg = parse("-c", os.path.join(RECIPE_DIR, regime.recipe))
        assert cfg.trainer.max_steps == regime.steps, regime.name
        assert cfg.data.init_args.limit_per_class == regime.images_per_class, regime.name
        assert cfg.data.init_args.batch_size == 32 and cfg.model.cfg_dropout == regime.dropout, regime.name
        assert (cfg.model.lora is not None) == regime.lora, regime.name
