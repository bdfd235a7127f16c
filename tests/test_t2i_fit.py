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
