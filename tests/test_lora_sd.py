"""`priorswap sample sd`: an SD LoRA (diffusers' LoRA file format), vanilla vs its base's unconditional in one mixed
batch, and one-line errors for LoRA files diffusers cannot read."""

import numpy as np
import pytest
import torch

from priorswap.toolkit.cli import main

from factories import save_sd_pipeline


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    """(pipeline folder, LoRA folder with pytorch_lora_weights.safetensors, as diffusers' training scripts write)."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    root = tmp_path_factory.mktemp("sd")
    path = save_sd_pipeline(str(root / "sd"))
    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_B" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    StableDiffusionPipeline.save_lora_weights(str(root / "lora"), unet_lora_layers=get_peft_model_state_dict(pipe.unet))
    return path, str(root / "lora")


def test_sample_sd_writes_vanilla_and_base_prior_rows(sd, tmp_path, capsys):
    path, lora = sd
    out = tmp_path / "s.npz"
    args = ["sample", "sd", "--model", path, "--lora", lora, "--prompts", "a cat", "a dog", "--steps", "3"]
    code = main(
        [*args, "--output", str(out), "--grid", str(tmp_path / "g.png"), "--no-progress", "--guidance-scale", "5"]
    )
    assert code == 0, capsys.readouterr().err
    data = np.load(out)
    assert data["arr_0"].shape == data["vanilla"].shape == (2, 8, 8, 3) and data["arr_0"].dtype == np.uint8
    assert np.abs(data["arr_0"].astype(int) - data["vanilla"].astype(int)).max() > 0
    assert (tmp_path / "g.png").exists()


@pytest.mark.parametrize("case", ["unknown_format", "missing"])
def test_bad_sd_lora_is_one_line_exit_2(sd, tmp_path, capsys, case):
    from safetensors.torch import save_file

    path, _ = sd
    lora = str(tmp_path / "x.safetensors")
    if case == "unknown_format":
        save_file({"something.else": torch.zeros(2, 2)}, lora)
    code = main(
        ["sample", "sd", "--model", path, "--lora", lora, "--prompts", "a", "--output", str(tmp_path / "o.npz")]
    )
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("priorswap")]
    assert code == 2 and len(lines) == 1 and "--lora" in lines[0], err
