"""`priorswap sample t2i` on tiny random SDXL, SD3 and PixArt-Sigma pipelines: vanilla is diffusers' own pipeline
call, and the swapped row equals hand-written loops (scheduler.step, the prior answering the unconditional half)."""

import numpy as np
import pytest
import torch

from priorswap.toolkit.cli import main
from priorswap.toolkit.t2i import tiny

from t2i_factories import randomize_lora

PROMPTS, SEED, STEPS, SCALE = ["a cat", "a red dog"], 3, 3, 6.0


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    """(SDXL folder, LoRA folder adapting the UNet and both text encoders)."""
    from diffusers import StableDiffusionXLPipeline
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    root = tmp_path_factory.mktemp("sdxl")
    path = tiny.save_sdxl(str(root / "sdxl"))
    pipe = StableDiffusionXLPipeline.from_pretrained(path)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    for enc in (pipe.text_encoder, pipe.text_encoder_2):
        inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"]), enc)
    randomize_lora(pipe.unet, pipe.text_encoder, pipe.text_encoder_2)
    StableDiffusionXLPipeline.save_lora_weights(
        str(root / "lora"),
        unet_lora_layers=get_peft_model_state_dict(pipe.unet),
        text_encoder_lora_layers=get_peft_model_state_dict(pipe.text_encoder),
        text_encoder_2_lora_layers=get_peft_model_state_dict(pipe.text_encoder_2),
    )
    return path, str(root / "lora")


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    """(SD3 folder, transformer LoRA folder, a second SD3 folder: another model in the same latent space)."""
    from diffusers import StableDiffusion3Pipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    root = tmp_path_factory.mktemp("sd3")
    path = tiny.save_sd3(str(root / "sd3"))
    pipe = StableDiffusion3Pipeline.from_pretrained(path)
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    randomize_lora(pipe.transformer)
    StableDiffusion3Pipeline.save_lora_weights(
        str(root / "lora"), transformer_lora_layers=get_peft_model_state_dict(pipe.transformer)
    )
    return path, str(root / "lora"), tiny.save_sd3(str(root / "sd35"), seed=1)


@pytest.fixture(scope="module")
def pixart(tmp_path_factory):
    root = tmp_path_factory.mktemp("pixart")
    return tiny.save_pixart(str(root / "sigma"), seed=2), tiny.save_pixart(str(root / "alpha"), seed=2, sigma=False)


@pytest.fixture(scope="module")
def pixart_lora(pixart, tmp_path_factory):
    """A transformer LoRA of the PixArt-Sigma folder as peft itself writes it (``PeftModel.save_pretrained``):
    diffusers has no PixArt LoRA loader, so this folder is the format."""
    from diffusers import PixArtTransformer2DModel
    from peft import LoraConfig, get_peft_model

    folder = str(tmp_path_factory.mktemp("pixart_lora") / "lora")
    net = PixArtTransformer2DModel.from_pretrained(pixart[0], subfolder="transformer")
    peft = get_peft_model(net, LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    randomize_lora(peft)
    peft.save_pretrained(folder)
    return folder


def cli(tmp_path, *args, capsys=None) -> dict:
    out = tmp_path / "o.npz"
    code = main(
        ["sample", "t2i", *args, "--prompts", *PROMPTS, "--steps", str(STEPS), "--seed", str(SEED),
         "--guidance-scale", str(SCALE), "--output", str(out), "--no-progress", "--device", "cpu"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err if capsys else code
    data = np.load(out)
    return {k: data[k] for k in data.files}


def u8(images) -> np.ndarray:
    arr = images if isinstance(images, np.ndarray) else images.permute(0, 2, 3, 1).numpy()
    return (arr * 255).round().astype(np.int32)


def diffusers_call(pipe, **kwargs) -> np.ndarray:
    gens = [torch.Generator("cpu").manual_seed(SEED + i) for i in range(len(PROMPTS))]
    kw = dict(guidance_scale=SCALE, num_inference_steps=STEPS, output_type="np", generator=gens)
    return u8(pipe(PROMPTS, **{**kw, **kwargs}).images)


def close(a, b, tol=2):
    return np.abs(np.asarray(a, np.int32) - np.asarray(b, np.int32)).max() <= tol


# -- vanilla is diffusers' own pipeline call ---------------------------------------------------------
@pytest.mark.parametrize("family", ["sdxl", "sd3", "pixart_sigma"])
def test_vanilla_equals_the_diffusers_pipeline_with_the_lora_loaded(
    family, sdxl, sd3, pixart, pixart_lora, tmp_path, capsys
):
    from diffusers import DiffusionPipeline
    from peft import PeftModel

    extra = {}
    if family == "sdxl":
        path, lora = sdxl
    elif family == "sd3":
        path, lora, _ = sd3
    else:  # its tiny size has no resolution-binning table
        (path, _), lora, extra = pixart, pixart_lora, {"use_resolution_binning": False}
    pipe = DiffusionPipeline.from_pretrained(path)
    if family == "pixart_sigma":  # no diffusers loader: peft's own, merged into the transformer
        pipe.transformer = PeftModel.from_pretrained(pipe.transformer, lora).merge_and_unload()
    else:
        pipe.load_lora_weights(lora)
    ref = diffusers_call(pipe, **extra)
    data = cli(tmp_path, "--model", path, *(["--lora", lora] if lora else []), capsys=capsys)
    assert data["arr_0"].shape == ref.shape and close(data["arr_0"], ref)
    assert list(data["prompts"]) == PROMPTS and "vanilla" not in data


def test_rescale_is_the_pipelines_guidance_rescale(sdxl, tmp_path, capsys):
    from diffusers import StableDiffusionXLPipeline

    path, _ = sdxl
    ref = diffusers_call(StableDiffusionXLPipeline.from_pretrained(path), guidance_rescale=0.7)
    plain = diffusers_call(StableDiffusionXLPipeline.from_pretrained(path))
    data = cli(tmp_path, "--model", path, "--rescale", "0.7", capsys=capsys)
    assert close(data["arr_0"], ref) and not close(ref, plain, 1)


# -- the swapped row equals hand-written loops -------------------------------------------------------
def decode(pipe, latents):
    vae = pipe.vae
    latents = latents / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
    with torch.no_grad():
        return u8((vae.decode(latents).sample / 2 + 0.5).clamp(0, 1))


def start_noise(shape):
    return torch.cat([torch.randn((1, *shape), generator=torch.Generator().manual_seed(SEED + i)) for i in range(2)])


@torch.no_grad()
def sdxl_loop(pipe, uncond_fn):
    """SDXL's Euler loop by hand: the LoRA'd pipeline's cond eps, ``uncond_fn(x, t)`` the unconditional one."""
    embeds, _, pooled, _ = pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=False)
    ids = torch.tensor([[32.0, 32, 0, 0, 32, 32]]).repeat(2, 1)  # original size, crop corner, target size
    sched = pipe.scheduler
    sched.set_timesteps(STEPS)
    x = start_noise((4, 16, 16)) * sched.init_noise_sigma
    for t in sched.timesteps:
        xin = sched.scale_model_input(x, t)
        c = pipe.unet(xin, t, encoder_hidden_states=embeds, added_cond_kwargs={"text_embeds": pooled, "time_ids": ids})
        u = uncond_fn(xin, t, ids)
        x = sched.step(u + SCALE * (c.sample - u), t, x).prev_sample
    return decode(pipe, x)


def test_free_prior_equals_a_hand_loop_with_the_adapter_off(sdxl, tmp_path, capsys):
    """--prior base: the unconditional half is the UNet with its LoRA off, on SDXL's null (the empty prompt is zeros,
    force_zeros_for_empty_prompt), whatever the text-encoder LoRA does."""
    from diffusers import StableDiffusionXLPipeline

    path, lora = sdxl
    pipe = StableDiffusionXLPipeline.from_pretrained(path)
    pipe.load_lora_weights(lora)

    def base_uncond(x, t, ids):
        pipe.disable_lora()
        zeros, pooled = torch.zeros(2, 16, 64), torch.zeros(2, 32)
        u = pipe.unet(x, t, encoder_hidden_states=zeros, added_cond_kwargs={"text_embeds": pooled, "time_ids": ids})
        pipe.enable_lora()
        return u.sample

    ref = sdxl_loop(pipe, base_uncond)
    data = cli(tmp_path, "--model", path, "--lora", lora, "--prior", "base", "--compare", capsys=capsys)
    assert close(data["arr_0"], ref)
    assert not close(data["arr_0"], data["vanilla"], 2)  # the swap changed the images


def test_free_prior_equals_the_two_model_swap(sdxl, tmp_path, capsys):
    """The adapter-off self in one mixed batch == the base loaded as a second pipeline (no LoRA)."""
    path, lora = sdxl
    free = cli(tmp_path, "--model", path, "--lora", lora, "--prior", "base", capsys=capsys)["arr_0"]
    two = cli(tmp_path, "--model", path, "--lora", lora, "--prior", path, capsys=capsys)["arr_0"]
    assert close(free, two, 1)


def test_pixart_lora_free_prior_equals_the_two_model_swap(pixart, pixart_lora, tmp_path, capsys):
    """A PixArt LoRA (peft folder): its adapter-off self in the mixed batch == the base as a second pipeline."""
    path = pixart[0]
    free = cli(tmp_path, "--model", path, "--lora", pixart_lora, "--prior", "base", "--compare", capsys=capsys)
    two = cli(tmp_path, "--model", path, "--lora", pixart_lora, "--prior", path, capsys=capsys)["arr_0"]
    assert close(free["arr_0"], two, 1)
    assert not close(free["arr_0"], free["vanilla"], 2)  # the swap changed the images


def test_pixart_sigma_prior_for_a_v_prediction_sdxl_equals_a_hand_loop(sdxl, pixart, tmp_path, capsys):
    """A separate prior on another schedule: SDXL (scaled-linear betas, v-prediction) guided by PixArt-Sigma
    (linear betas, eps, learned sigma; the same SDXL VAE). The prior runs at the nearest-alpha_bar timestep on its
    own T5 null, its eps is turned into the model's v with the model's alpha_bar, its sigma channels dropped."""
    from diffusers import PixArtSigmaPipeline, StableDiffusionXLPipeline

    model = tiny.save_sdxl(str(tmp_path / "sdxl_v"), seed=4, prediction_type="v_prediction")
    _, sigma_path = None, pixart[0]
    pipe, prior = StableDiffusionXLPipeline.from_pretrained(model), PixArtSigmaPipeline.from_pretrained(sigma_path)
    with torch.no_grad():
        null, mask, _, _ = prior.encode_prompt("", do_classifier_free_guidance=False, num_images_per_prompt=2)
    acp_model, acp_prior = pipe.scheduler.alphas_cumprod.double(), prior.scheduler.alphas_cumprod.double()

    def pixart_uncond(x, t, ids):
        lo = int(t.floor())
        w = float(t) - lo
        a = acp_model[lo] * (1 - w) + acp_model[min(lo + 1, 999)] * w
        t_prior = int((acp_prior - a).abs().argmin())
        out = prior.transformer(x, encoder_hidden_states=null, encoder_attention_mask=mask,
                                timestep=torch.tensor([t_prior] * 2), added_cond_kwargs={"resolution": None,
                                "aspect_ratio": None}).sample  # fmt: skip
        eps = out[:, :4]
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        return (a.sqrt() * eps - (1 - a).sqrt() * x0).float()  # the v the model would have predicted

    ref = sdxl_loop(pipe, pixart_uncond)
    data = cli(tmp_path, "--model", model, "--prior", sigma_path, capsys=capsys)
    assert close(data["arr_0"], ref)


def test_sd35_prior_for_an_sd3_lora_equals_a_flow_hand_loop(sd3, tmp_path, capsys):
    """Flow matching: the same sigma is the same t for both, and the prior's velocity is used as it is."""
    from diffusers import StableDiffusion3Pipeline

    path, lora, other = sd3
    pipe, prior = StableDiffusion3Pipeline.from_pretrained(path), StableDiffusion3Pipeline.from_pretrained(other)
    pipe.load_lora_weights(lora)
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(PROMPTS, None, None, do_classifier_free_guidance=False)
        null, _, null_pooled, _ = prior.encode_prompt([""] * 2, None, None, do_classifier_free_guidance=False)
        sched = pipe.scheduler
        sched.set_timesteps(STEPS)
        x = start_noise((4, 16, 16))
        for t in sched.timesteps:
            tt = t.expand(2)
            c = pipe.transformer(x, encoder_hidden_states=embeds, pooled_projections=pooled, timestep=tt).sample
            u = prior.transformer(x, encoder_hidden_states=null, pooled_projections=null_pooled, timestep=tt).sample
            x = sched.step(u + SCALE * (c - u), t, x).prev_sample
    ref = decode(pipe, x)
    data = cli(tmp_path, "--model", path, "--lora", lora, "--prior", other, "--compare", capsys=capsys)
    assert close(data["arr_0"], ref) and not close(data["arr_0"], data["vanilla"], 2)


def test_prior_mix_0_and_an_empty_guidance_interval(sd3, tmp_path, capsys):
    """lambda = 0 is vanilla CFG; a guidance interval no step falls in is CFG off (uncond := cond), i.e. g = 1."""
    from diffusers import StableDiffusion3Pipeline

    path, lora, other = sd3
    mixed = cli(tmp_path, "--model", path, "--prior", other, "--prior-mix", "0", "--compare", capsys=capsys)
    assert close(mixed["arr_0"], mixed["vanilla"], 1)
    unguided = diffusers_call(StableDiffusion3Pipeline.from_pretrained(path), guidance_scale=1.0)
    off = cli(tmp_path, "--model", path, "--prior", other, "--guidance-interval", "0", "0.001", capsys=capsys)
    assert close(off["arr_0"], unguided)


def test_the_free_prior_costs_what_vanilla_costs(sdxl):
    """One UNet pass of 2n rows per step in both rows: the base's half rides in the same batch."""
    from priorswap.toolkit.t2i.load import inspect_pipeline
    from priorswap.toolkit.t2i.run import Settings, prepare

    path, lora = sdxl
    info = inspect_pipeline(path)
    job = prepare(info, PROMPTS, Settings(steps=STEPS, progress=False), torch.float32, "cpu", lora=lora, prior="base")
    seen = []
    handle = job.pipe.unet.conv_in.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    try:
        job.sample(swapped=False)
        vanilla, seen[:] = list(seen), []
        job.sample(swapped=True)
    finally:
        handle.remove()
    assert vanilla == seen == [2 * len(PROMPTS)] * STEPS
