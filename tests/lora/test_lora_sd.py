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


@pytest.fixture(scope="module")
def sd_text_lora(sd, tmp_path_factory):
    """A LoRA of the UNet AND the text encoder (peft), saved as diffusers' training scripts save one."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    path, _ = sd
    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    te_config = LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj"])
    inject_adapter_in_model(te_config, pipe.text_encoder)  # transformers' own add_adapter wants a newer peft
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for net in (pipe.unet, pipe.text_encoder):
            for name, p in net.named_parameters():
                if "lora_B" in name:
                    p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    out = str(tmp_path_factory.mktemp("text_lora") / "lora")
    StableDiffusionPipeline.save_lora_weights(
        out,
        unet_lora_layers=get_peft_model_state_dict(pipe.unet),
        text_encoder_lora_layers=get_peft_model_state_dict(pipe.text_encoder),
    )
    return path, out


def test_vanilla_row_equals_diffusers_with_a_text_encoder_lora_loaded(sd_text_lora, tmp_path, capsys):
    """Vanilla CFG of a LoRA that adapts the text encoder is the LoRA'd pipeline as diffusers runs it: the prompts
    and "" both go through the LoRA'd text encoder. Only the swapped row takes the base's "" (text LoRA off)."""
    from diffusers import StableDiffusionPipeline

    path, lora = sd_text_lora
    prompts, seed, steps, scale = ["a cat", "a red dog"], 3, 4, 6.0
    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None)
    pipe.load_lora_weights(lora)
    assert any("lora" in n for n, _ in pipe.text_encoder.named_parameters())  # the text LoRA is really loaded
    gens = [torch.Generator("cpu").manual_seed(seed + i) for i in range(len(prompts))]
    ref = pipe(prompts, guidance_scale=scale, generator=gens, num_inference_steps=steps, output_type="np").images
    ref_u8 = (ref * 255).round().astype(np.int32)  # (N, H, W, 3)

    out = tmp_path / "s.npz"
    code = main(
        ["sample", "sd", "--model", path, "--lora", lora, "--prompts", *prompts, "--steps", str(steps), "--seed",
         str(seed), "--guidance-scale", str(scale), "--output", str(out), "--no-progress", "--device", "cpu"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    data = np.load(out)
    vanilla = data["vanilla"].astype(np.int32)
    assert vanilla.shape == ref_u8.shape
    assert np.abs(vanilla - ref_u8).max() <= 1  # within 1/255 per pixel
    # the swapped row is a two-model swap with the base pipeline loaded on its own: the LoRA'd pipeline's
    # conditional eps, the base's unconditional eps with the base's own "" (text LoRA off)
    base = StableDiffusionPipeline.from_pretrained(path, safety_checker=None)
    swapped = two_model_swap(pipe, base, prompts, seed, steps, scale)
    assert np.abs(data["arr_0"].astype(np.int32) - swapped).max() <= 1
    assert np.abs(swapped - vanilla).max() > 1  # and it is not the vanilla row


def two_model_swap(pipe, base, prompts, seed, steps, scale):
    from priorswap.toolkit.core.loading import latent_space
    from priorswap.toolkit.core.sampling import Guidance, sample, vae_decoder
    from priorswap.toolkit.images import to_uint8
    from priorswap.toolkit.unet.ip2p import prompt_embedding
    from priorswap.toolkit.unet.text_prior import UNetPrior, empty_prompt_embedding

    sched = dict(pipe.scheduler.config)
    space = latent_space("sd", sched, pipe.vae, 4)
    with torch.no_grad():
        cond = prompt_embedding(pipe.tokenizer, pipe.text_encoder, prompts)
        lora_null, _ = empty_prompt_embedding(pipe.tokenizer, pipe.text_encoder)
        base_null, _ = empty_prompt_embedding(base.tokenizer, base.text_encoder)
    model = UNetPrior(pipe.unet, lora_null, space, "lora")
    prior = UNetPrior(base.unet, base_null, space, "base")
    images = sample(model, cond, Guidance(scale=scale), prior=prior, seeds=[seed + i for i in range(len(prompts))],
                    shape=(4, 8, 8), steps=steps, scheduler="ddim", scheduler_config=sched,
                    decode=vae_decoder(pipe.vae))  # fmt: skip
    return to_uint8(images).astype(np.int32)


def test_readme_sample_sd_example_is_refused_before_sampling(sd, tmp_path, capsys, monkeypatch):
    """``--output out/``: a folder name for a file is one line before any model loads, not a traceback after
    sampling."""
    path, lora = sd
    monkeypatch.chdir(tmp_path)
    code = main(["sample", "sd", "--model", path, "--lora", lora, "--prompts", "a cat", "--output", "out/",
                 "--grid", "g.png", "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("priorswap")]
    assert code == 2 and len(lines) == 1 and "--output 'out/' ends in '/'" in lines[0], err
    assert not (tmp_path / "g.png").exists() and not (tmp_path / "out").exists()
