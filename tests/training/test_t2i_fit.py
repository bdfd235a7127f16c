"""Text-to-image fine-tunes end to end on tiny random pipelines (CPU): the captioned datamodules' latent + caption
cache wired to ``T2IFineTune``, ``priorswap fit`` -> export -> ``priorswap sample t2i``, the prompt evaluation
callback (``callbacks/t2i_eval.py``) against the sampling command, and every shipped text-to-image recipe's shape."""

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch

from priorswap.data.caption_sources import CaptionedFolderDataModule
from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.t2i.tiny import save_sd3, save_sdxl
from priorswap.toolkit.training.t2i_export import T2ILoRA
from priorswap.toolkit.training.t2i_module import T2IFineTune
from priorswap.toolkit.unet.tiny import save_image, save_sd

from metric_factories import tiny_conv_features
from repo_paths import RECIPES as RECIPES_DIR
from trainers import trainer

CAPTIONS = ["a red cat", "blue sky", "two dogs", "a green tree"]
MODULE = "priorswap.toolkit.training.t2i_module.T2IFineTune"
FOLDER_DM = "priorswap.data.caption_sources.CaptionedFolderDataModule"


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return {"sd": save_sd(str(root / "sd")), "sdxl": save_sdxl(str(root / "sdxl")), "sd3": save_sd3(str(root / "sd3"))}


def captioned_folder(root, n=4, size=(40, 32)):
    """n PNGs with a metadata.jsonl, as diffusers' --train_data_dir reads them."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "metadata.jsonl"), "w") as f:
        for i in range(n):
            save_image(os.path.join(root, f"{i}.png"), size, seed=i)
            f.write(json.dumps({"file_name": f"{i}.png", "text": CAPTIONS[i % len(CAPTIONS)]}) + "\n")
    return str(root)


def folder_dm(root, **kw):
    args = dict(resolution=32, center_crop=True, batch_size=2, num_workers=0)
    return CaptionedFolderDataModule(root, **{**args, **kw})


# -- the cache protocol ---------------------------------------------------------------------------------------------
def test_cache_refuses_random_crops_and_flips(tmp_path):
    root = captioned_folder(tmp_path / "imgs")
    with pytest.raises(PriorswapError, match="center_crop: true and random_flip: false"):
        folder_dm(root, center_crop=False, t2i_cache=str(tmp_path / "c"))
    with pytest.raises(PriorswapError, match="random crops and flips"):
        folder_dm(root, random_flip=True, t2i_cache=str(tmp_path / "c"))


def test_cache_set_but_never_built_is_one_line(tmp_path):
    dm = folder_dm(captioned_folder(tmp_path / "imgs"), t2i_cache=str(tmp_path / "c"))
    dm.setup("fit")
    with pytest.raises(PriorswapError, match="build_t2i_cache"):
        dm.train_dataloader()


def test_fit_from_the_folder_cache_equals_fit_from_pixels(bases, tmp_path):
    """The module builds the datamodule's cache in setup, then trains on cached rows: the same weights as pixels."""
    root = captioned_folder(tmp_path / "imgs")
    results = {}
    for name, cache in (("pixels", None), ("cache", str(tmp_path / "cache"))):
        module = T2IFineTune(bases["sdxl"], lora=T2ILoRA(rank=2), lr=1e-2, caption_dropout=0.5, export_on_fit_end=False)
        dm = folder_dm(root, t2i_cache=cache)
        trainer(tmp_path / name, 3, enable_checkpointing=False).fit(module, dm)
        results[name] = {k: v.clone() for k, v in module.net.state_dict().items() if "lora_" in k}
        if cache:
            assert len(dm._t2i_dirs) == 2 and all(f.is_relative_to(tmp_path / "cache") for f in dm._t2i_dirs.values())
            assert "latent_mean" in next(iter(dm.train_dataloader()))
    for k, v in results["pixels"].items():
        assert torch.allclose(results["cache"][k], v, atol=1e-5), k
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in results["cache"].items() if "lora_B" in k)


def test_priorswap_fit_on_a_cached_folder_exports_what_sample_t2i_reads(bases, tmp_path):
    """A user's path: a recipe over a folder of PNGs + metadata.jsonl with a cache, fit, resume, export, sample."""
    from priorswap.toolkit.cli import main

    root = captioned_folder(tmp_path / "imgs")
    recipe = tmp_path / "lora.yaml"
    recipe.write_text(
        f"""
trainer: {{max_steps: 2, accelerator: cpu, logger: false, enable_progress_bar: false,
          default_root_dir: {tmp_path / "run"}}}
model:
  class_path: {MODULE}
  init_args: {{pretrained: {bases["sd"]}, lora: {{rank: 2}}, lr: 0.01, export_dir: {tmp_path / "export"}}}
data:
  class_path: {FOLDER_DM}
  init_args: {{root: {root}, resolution: 32, center_crop: true, batch_size: 2, num_workers: 0,
              t2i_cache: {tmp_path / "cache"}}}
"""
    )
    assert main(["fit", "-c", str(recipe)]) == 0
    assert (tmp_path / "cache").is_dir() and (tmp_path / "export" / "pytorch_lora_weights.safetensors").is_file()
    # resume: the cache is found again (no re-encoding) and two more steps run
    assert main(["fit", "-c", str(recipe), "--trainer.max_steps", "4", "--ckpt_path", "last"]) == 0
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert state["global_step"] == 4
    out = tmp_path / "s.npz"
    argv = ["sample", "t2i", "--model", bases["sd"], "--lora", str(tmp_path / "export"), "--prior", "base"]
    argv += ["--prompts", "a red cat", "--steps", "2", "--output", str(out), "--compare", "--device", "cpu"]
    assert main([*argv, "--no-progress"]) == 0
    with np.load(out) as f:
        assert f["arr_0"].shape == f["vanilla"].shape == (1, 32, 32, 3) and not np.array_equal(f["arr_0"], f["vanilla"])


# -- the prompt evaluation callback -----------------------------------------------------------------------------------
def sample_cli(tmp_path, model, prompts, *extra):
    from priorswap.toolkit.cli import main

    out = tmp_path / "cli.npz"
    argv = ["sample", "t2i", "--model", model, "--prompts", *prompts, "--steps", "2", "--seed", "5", "--compare"]
    assert main([*argv, "--output", str(out), "--device", "cpu", "--no-progress", *extra]) == 0
    with np.load(out) as f:
        return {"vanilla": f["vanilla"], "swapped": f["arr_0"]}


def assert_rows_equal(callback, cli):
    from priorswap.toolkit.images import to_uint8

    for mode in ("vanilla", "swapped"):
        mine = to_uint8(callback.last_samples[mode])
        assert mine.shape == cli[mode].shape
        # the same pipeline call on the same weights; batch composition may move a value across a rounding edge
        assert np.abs(mine.astype(int) - cli[mode].astype(int)).max() <= 1, mode
    assert not np.array_equal(cli["vanilla"], cli["swapped"])


def test_eval_rows_equal_sample_t2i_on_the_exported_lora(bases, tmp_path):
    """SD LoRA, free prior: the callback's rows are `sample t2i --model BASE --lora EXPORT --prior base`'s."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from priorswap.callbacks import T2IPriorSwapEval

    from metric_factories import write_tiny_clip

    root = captioned_folder(tmp_path / "imgs", n=6)
    cb = T2IPriorSwapEval(
        prompts=["a red cat", "two dogs"], samples_per_prompt=2, steps=2, batch_size=3, seed=5, every_n_steps=None,
        reference=root, extractor=tiny_conv_features(), clip_model=str(write_tiny_clip(str(tmp_path / "clip")) and tmp_path / "clip"),
        stats_cache=None,
    )  # fmt: skip
    module = T2IFineTune(bases["sd"], lora=T2ILoRA(rank=2), lr=5e-2, ema_decay=0.5, export_on_fit_end=False)
    logger = TensorBoardLogger(str(tmp_path / "tb"), name="run")
    t = trainer(tmp_path / "run", 3, enable_checkpointing=False, callbacks=[cb])
    t._loggers = [logger]  # trainers() builds without a logger; the grids need TensorBoard
    t.fit(module, folder_dm(root))
    export = module.export(str(tmp_path / "export"))
    cli = sample_cli(tmp_path, bases["sd"], cb.expanded_prompts, "--lora", export, "--prior", "base")
    assert_rows_equal(cb, cli)
    v = cb.last_values
    for key in ("fd_vanilla", "fd_swapped", "fd_delta", "clip_score_vanilla", "clip_score_swapped"):
        assert np.isfinite(v[key]), key
    assert v["fd_delta"] == pytest.approx(v["fd_swapped"] - v["fd_vanilla"])
    assert v["fd_vanilla"] != v["fd_swapped"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()["images"]
    assert len(tags) == 2 and any("two dogs" in tag for tag in tags)
    rows = [json.loads(line) for line in open(os.path.join(logger.log_dir, "t2i_eval.jsonl"))]
    assert rows[-1]["step"] == 3 and rows[-1]["fd_swapped"] == pytest.approx(v["fd_swapped"])


@pytest.mark.parametrize("name", ["sdxl", "sd3"])
def test_eval_rows_equal_sample_t2i_on_the_exported_full_fine_tune(bases, tmp_path, name):
    """Full fine-tune, named base prior (the pretrained pipeline by default): `sample t2i --model EXPORT --prior BASE`."""
    from priorswap.callbacks import T2IPriorSwapEval

    cb = T2IPriorSwapEval(prompts=["a red cat", "blue sky"], samples_per_prompt=1, steps=2, seed=5, every_n_steps=None)
    module = T2IFineTune(bases[name], lr=1e-2, ema_decay=0.5, export_on_fit_end=False)
    trainer(tmp_path / "run", 2, enable_checkpointing=False, callbacks=[cb]).fit(
        module, folder_dm(captioned_folder(tmp_path / "imgs"))
    )
    export = module.export(str(tmp_path / "export"))
    assert_rows_equal(cb, sample_cli(tmp_path, export, cb.expanded_prompts, "--prior", bases[name]))


def test_eval_refuses_a_bad_set_up_at_once(bases, tmp_path):
    from priorswap.callbacks import T2IPriorSwapEval

    with pytest.raises(PriorswapError, match="exactly one of prompts and prompt_file"):
        T2IPriorSwapEval()
    (tmp_path / "p.txt").write_text("\n  \n")
    with pytest.raises(PriorswapError, match=">= 1 prompt"):
        T2IPriorSwapEval(prompt_file=str(tmp_path / "p.txt"))
    cb = T2IPriorSwapEval(prompts=["x"], prior="base")
    module = T2IFineTune(bases["sd"], export_on_fit_end=False)
    with pytest.raises(PriorswapError, match="no LoRA"):
        trainer(tmp_path, 1, callbacks=[cb]).fit(module, folder_dm(captioned_folder(tmp_path / "imgs")))
    cb = T2IPriorSwapEval(prompts=["x"], prior=bases["sd3"])  # flow matching cannot answer a DDPM model
    with pytest.raises(PriorswapError, match="flow matching"):
        trainer(tmp_path, 1, callbacks=[cb]).fit(module, folder_dm(captioned_folder(tmp_path / "imgs")))


# -- the shipped recipes, shape for shape on tiny models ------------------------------------------------------------
RECIPES = {
    "sdxl_lora_captioned.yaml": "sdxl",
    "sdxl_dreambooth_lora.yaml": "sdxl",
    "sd3_lora_captioned.yaml": "sd3",
    "pixart_sigma_lora.yaml": "pixart",
}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipe_runs_on_tiny_models(bases, tmp_path, recipe):
    """Each recipe as shipped (its module, datamodule, cache, callback), only the paths and sizes made tiny."""
    from priorswap.toolkit.cli import main
    from priorswap.toolkit.t2i.tiny import save_pixart

    base = bases.get(RECIPES[recipe]) or save_pixart(str(tmp_path / "pixart"))
    root = captioned_folder(tmp_path / "imgs")
    path = os.path.join(RECIPES_DIR, recipe)
    argv = ["fit", "-c", path, "--model.init_args.pretrained", base, "--data.init_args.root", root]
    argv += ["--model.init_args.export_dir", str(tmp_path / "export"), "--data.init_args.resolution", "32"]
    argv += ["--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0"]
    argv += ["--data.init_args.t2i_cache", str(tmp_path / "cache"), "--trainer.max_steps", "2"]
    argv += ["--trainer.accelerator", "cpu", "--trainer.precision", "32", "--trainer.enable_progress_bar", "false"]
    argv += ["--trainer.logger.init_args.save_dir", str(tmp_path / "runs")]
    argv += ["--trainer.callbacks.init_args.prompts", "[a cat, a dog]", "--trainer.callbacks.init_args.steps", "2"]
    argv += ["--trainer.callbacks.init_args.samples_per_prompt", "1"]
    if RECIPES[recipe] != "sdxl":
        argv += ["--model.init_args.max_sequence_length", "16"]
    assert main(argv) == 0
    assert (tmp_path / "cache").is_dir() and os.listdir(tmp_path / "export")
    logs = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "runs") for f in fs if f == "t2i_eval.jsonl"]
    assert len(logs) == 1 and json.loads(open(logs[0]).readline())["step"] == 2
