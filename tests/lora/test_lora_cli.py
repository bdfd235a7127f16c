"""`priorswap sample dit` with DiT LoRA exports: the free prior (`--prior base`) equals a two-model swap in pixels,
`--prior-dtype`, and one-line errors (exit 2) for LoRAs that cannot give a free prior or do not fit their base."""

import json
import os
import shutil

import lightning as L
import numpy as np
import pytest
import torch

from priorswap.data import Food101DataModule
from priorswap.toolkit.cli import main
from priorswap.toolkit.dit.load import load_dit
from priorswap.toolkit.dit.lora import LoRASpec, add_class_rows, inject, lora_config
from priorswap.toolkit.dit.lora_files import export_dit_lora, fingerprint
from priorswap.toolkit.training.module import DiTFineTune

from factories import save_dit_pipeline
from fakedata import make_food101
from repo_paths import RECIPES


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """(base, LoRA export, food root): a LoRA trained a few steps at a high learning rate, so it really differs."""
    root = tmp_path_factory.mktemp("lora_cli")
    base = save_dit_pipeline(str(root / "base"), num_classes=10, sample_size=16, latent=False, in_channels=3)
    food = make_food101(str(root / "food"), classes=3, per_class=6)
    dm = Food101DataModule(root=food, resolution=16, batch_size=6, num_workers=0)
    model = DiTFineTune(
        pretrained=base,
        vae=None,
        num_classes=3,
        class_names=dm.class_names,
        lora=LoRASpec(rank=4, alpha=8),
        lr=3e-2,
        ema_decay=0.0,
        export_dir=str(root / "export"),
    )
    L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False).fit(
        model, dm
    )
    return base, str(root / "export"), food


def sample(capsys, tmp_path, name, *args):
    out = tmp_path / f"{name}.npz"
    code = main(
        ["sample", "dit", "--labels", "0", "1", "2", "1", "--steps", "5", "--no-progress", "--output", str(out), *args]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    return np.load(out)["arr_0"].astype(np.int16)


@pytest.mark.parametrize(
    "extra", [[], ["--prior-mix", "0.5"], ["--guidance-interval", "0.2", "0.8", "--rescale", "0.5"]], ids=str
)
def test_free_prior_equals_two_model_swap_within_one_level(dirs, tmp_path, capsys, extra):
    base, export, _ = dirs
    common = ["--model", export, "--guidance-scale", "4", *extra]
    free = sample(capsys, tmp_path, "free", *common, "--prior", "base")
    two = sample(capsys, tmp_path, "two", *common, "--prior", base)
    vanilla = sample(capsys, tmp_path, "vanilla", *common)
    diff = np.abs(free - two).max()
    print(f"free prior vs two models {extra}: max {diff}/255, mean {np.abs(free - two).mean():.4f}/255")
    assert diff <= 1  # within 1/255
    assert np.abs(free - vanilla).max() > 8  # and the swap changes the samples


def test_lora_on_an_explicit_base_and_the_python_api(dirs, tmp_path, capsys):
    base, export, _ = dirs
    named = sample(capsys, tmp_path, "a", "--model", export, "--prior", "base")
    explicit = sample(capsys, tmp_path, "b", "--model", base, "--lora", export, "--prior", "base")
    assert np.array_equal(named, explicit)
    from priorswap.toolkit.api import sample_dit
    from priorswap.toolkit.images import to_uint8

    images = sample_dit(export, labels=[0, 1, 2, 1], prior="base", steps=5, progress=False)
    assert np.abs(to_uint8(images).astype(np.int16) - named).max() <= 1


@pytest.mark.parametrize("scale", ["1.5", "4"])
def test_prior_dtype_bf16_keeps_the_model_in_fp32(dirs, tmp_path, capsys, scale):
    base, _, food = dirs
    full = save_dit_pipeline(str(tmp_path / "ft"), num_classes=3, sample_size=16, latent=False, in_channels=3, seed=3)
    common = ["--model", full, "--prior", base, "--guidance-scale", scale]
    fp32 = sample(capsys, tmp_path, "fp32", *common)
    bf16 = sample(capsys, tmp_path, "bf16", *common, "--prior-dtype", "bf16")
    diff = np.abs(fp32 - bf16)
    print(f"bf16 prior vs fp32 prior at g={scale}: max {diff.max()}/255, mean {diff.mean():.4f}/255")
    assert 0 < diff.mean() < 1  # the prior really ran in bf16, and moved the average pixel by under one level


def dora_export(base: str, path: str) -> str:
    tr = load_dit(base).denoiser.transformer
    print_ = fingerprint(tr)
    add_class_rows(tr, 3)
    config = lora_config(LoRASpec(rank=4), 10, 3, base)
    config.use_dora = True
    tr = inject(tr, config)
    return export_dit_lora(tr, base, print_, ["a", "b", "c"], path)


def unknown_format(tmp_path) -> str:
    from safetensors.torch import save_file

    path = str(tmp_path / "kohya.safetensors")
    save_file({"lora_unet_blocks_0_attn_to_q.lora_down.weight": torch.zeros(4, 64)}, path)
    return path


@pytest.mark.parametrize(
    "case,needle",
    [
        ("other_base", "does not fit base"),
        ("other_architecture", "does not fit base"),
        ("dora", "DoRA"),
        ("full_model", "is a full model (a merged LoRA is one too)"),
        ("unknown_format", "not a LoRA format priorswap reads"),
        ("no_config", "not a LoRA format priorswap reads"),
        ("prior_dtype_with_free_prior", "--prior-dtype needs --prior MODEL"),
    ],
)
def test_bad_lora_input_is_one_line_exit_2(dirs, tmp_path, capsys, case, needle):
    base, export, _ = dirs
    if case == "other_base":
        other = save_dit_pipeline(
            str(tmp_path / "other"), num_classes=10, sample_size=16, latent=False, in_channels=3, seed=7
        )
        args = ["--model", other, "--lora", export, "--prior", "base"]
    elif case == "other_architecture":
        other = save_dit_pipeline(str(tmp_path / "other"), num_classes=10, sample_size=8, latent=False, in_channels=3)
        args = ["--model", other, "--lora", export]
    elif case == "dora":
        args = ["--model", dora_export(base, str(tmp_path / "dora")), "--prior", "base"]
    elif case == "full_model":
        args = ["--model", base, "--prior", "base"]
    elif case == "unknown_format":
        args = ["--model", base, "--lora", unknown_format(tmp_path)]
    elif case == "no_config":
        broken = shutil.copytree(export, tmp_path / "broken")
        os.remove(broken / "adapter_model.safetensors")
        args = ["--model", str(broken)]
    else:
        args = ["--model", export, "--prior", "base", "--prior-dtype", "bf16"]
    code = main(
        ["sample", "dit", "--labels", "0", "--steps", "2", "--no-progress", "--output", str(tmp_path / "o.npz"), *args]
    )
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("priorswap")]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_dora_lora_still_samples_vanilla_and_with_a_separate_prior(dirs, tmp_path, capsys):
    base, _, _ = dirs
    dora = dora_export(base, str(tmp_path / "dora"))
    assert sample(capsys, tmp_path, "v", "--model", dora).shape == (4, 16, 16, 3)
    assert sample(capsys, tmp_path, "s", "--model", dora, "--prior", base).shape == (4, 16, 16, 3)


def test_lora_export_records_its_base(dirs):
    base, export, _ = dirs
    with open(os.path.join(export, "adapter_config.json")) as f:
        assert json.load(f)["base_model_name_or_path"] == base
    with open(os.path.join(export, "priorswap_lora.json")) as f:
        meta = json.load(f)
    assert meta["base"] == base and meta["base_classes"] == 10 and meta["num_classes"] == 3


def test_fit_cli_takes_a_lora_block(dirs, tmp_path, monkeypatch):
    base, _, food = dirs
    monkeypatch.chdir(tmp_path)  # LightningCLI writes config.yaml and checkpoints/ here
    recipe = os.path.join(RECIPES, "tiny_food101.yaml")
    args = ["fit", "-c", recipe, "--data.root", food, "--data.init_args.resolution", "16", "--trainer.logger", "false"]
    args += ["--model.pretrained", base, "--model.sample_size", "16", "--trainer.max_steps", "2"]
    args += ["--model.lora", '{"rank": 4, "alpha": 4}', "--trainer.callbacks", "[]", "--trainer.limit_val_batches", "0"]
    args += ["--model.export_dir", str(tmp_path / "export"), "--trainer.enable_progress_bar", "false"]
    assert main(args) == 0
    assert load_dit(str(tmp_path / "export")).denoiser.num_classes == 3
