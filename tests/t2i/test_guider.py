"""PriorSwapGuidance in diffusers' own modular SDXL pipeline, on tiny random components, against hand-written loops.

The hand-written loop is the reference: Euler steps over the pipeline's own conditions, the conditional prediction
from the LoRA'd (or fine-tuned) UNet and the unconditional one from a *separate* base UNet (no adapter switching),
so the guider's adapter toggling and forward routing are checked against something that uses neither.
"""

import copy

import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from diffusers.guiders import ClassifierFreeGuidance
from peft.utils import get_peft_model_state_dict

from priorswap.toolkit.core.guidance import mix_prior, rescale
from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.t2i.guider import PriorSwapGuidance

from t2i_factories import (
    IMAGE_SIZE,
    SD3_POOLED_DIM,
    SD3_TEXT_DIM,
    add_lora,
    flow_scheduler,
    save_sdxl_components,
    sd3_modular_pipeline,
    sdxl_modular_pipeline,
    tiny_sd3_transformer,
    tiny_sdxl_unet,
)

STEPS, SCALE = 4, 5.0
CONDITIONS = [
    "prompt_embeds",
    "negative_prompt_embeds",
    "pooled_prompt_embeds",
    "negative_pooled_prompt_embeds",
    "add_time_ids",
    "negative_add_time_ids",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_sdxl_components(str(tmp_path_factory.mktemp("sdxl")))


@pytest.fixture
def pipe(folder):
    return sdxl_modular_pipeline(folder)


def noise():
    return torch.randn(1, 4, IMAGE_SIZE // 2, IMAGE_SIZE // 2, generator=torch.Generator().manual_seed(0))


def run(pipe, guider, output="latents"):
    pipe.update_components(guider=guider)
    return pipe(
        prompt="a red shirt",
        negative_prompt="",
        num_inference_steps=STEPS,
        height=IMAGE_SIZE,
        width=IMAGE_SIZE,
        latents=noise(),
        output=output,
    )


def conditions(pipe):
    """The conditions the pipeline itself computes (its text encoders, its micro-conditions), one guided run."""
    return run(pipe, ClassifierFreeGuidance(guidance_scale=SCALE), output=CONDITIONS)


def call(unet, x, t, emb, negative: bool, null: dict | None = None):
    pre = "negative_" if negative else ""
    text, pooled = emb[pre + "prompt_embeds"], emb[pre + "pooled_prompt_embeds"]
    if null is not None:  # the prior's own null condition
        text, pooled = null["prompt_embeds"], null["text_embeds"]
    added = {"text_embeds": pooled, "time_ids": emb[pre + "add_time_ids"]}
    return unet(x, t, encoder_hidden_states=text, added_cond_kwargs=added).sample


@torch.no_grad()
def hand_loop(pipe, emb, cond_unet, prior_unet, lam=1.0, window=(0.0, 1.0), phi=0.0, null=None):
    """Eq. 7 by hand: u = lam * prior(x, null) + (1 - lam) * own(x, null); eps = u + g (own(x, c) - u)."""
    sched = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(STEPS)
    x = noise() * sched.init_noise_sigma
    for i, t in enumerate(sched.timesteps):
        xi = sched.scale_model_input(x, t)
        cond = call(cond_unet, xi, t, emb, negative=False)
        eps = cond
        if int(window[0] * STEPS) <= i < int(window[1] * STEPS):
            uncond = call(prior_unet, xi, t, emb, negative=True, null=null)
            if lam != 1.0:
                uncond = mix_prior(uncond, call(cond_unet, xi, t, emb, negative=True), lam)
            eps = rescale(uncond + SCALE * (cond - uncond), cond, phi)
        x = sched.step(eps, t, x).prev_sample
    return x


def base_unet(folder):
    return UNet2DConditionModel.from_pretrained(f"{folder}/unet").eval()


# -- (1) with no prior in play it is diffusers' CFG ------------------------------------------------------------
def test_prior_mix_zero_is_diffusers_cfg_exactly(pipe):
    add_lora(pipe.unet)
    expected = run(pipe, ClassifierFreeGuidance(guidance_scale=SCALE, guidance_rescale=0.3))
    got = run(pipe, PriorSwapGuidance(guidance_scale=SCALE, prior_mix=0.0, guidance_rescale=0.3))
    assert torch.equal(got, expected)


def test_identity_prior_is_diffusers_cfg_exactly(pipe):
    expected = run(pipe, ClassifierFreeGuidance(guidance_scale=SCALE))
    copy_of_itself = copy.deepcopy(pipe.unet)
    assert torch.equal(run(pipe, PriorSwapGuidance(guidance_scale=SCALE, prior_module=copy_of_itself)), expected)
    assert torch.equal(run(pipe, PriorSwapGuidance(guidance_scale=SCALE, prior_module=pipe.unet)), expected)


def test_window_and_scale_one_match_cfg(pipe):
    for kwargs in ({"start": 0.25, "stop": 0.75}, {"guidance_scale": 1.0}):
        kwargs = {"guidance_scale": SCALE, **kwargs}
        expected = run(pipe, ClassifierFreeGuidance(**kwargs))
        assert torch.equal(run(pipe, PriorSwapGuidance(prior_mix=0.0, **kwargs)), expected)


# -- (2) a LoRA and its adapter-off self ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"prior_mix": 0.5}, {"start": 0.25, "stop": 0.75, "guidance_rescale": 0.5}],
    ids=["swap", "mix-half", "window-rescale"],
)
def test_lora_base_prior_equals_hand_loop(pipe, folder, kwargs):
    emb = conditions(pipe)
    add_lora(pipe.unet)
    got = run(pipe, PriorSwapGuidance(guidance_scale=SCALE, **kwargs))
    lam, phi = kwargs.get("prior_mix", 1.0), kwargs.get("guidance_rescale", 0.0)
    window = (kwargs.get("start", 0.0), kwargs.get("stop", 1.0))
    expected = hand_loop(pipe, emb, pipe.unet, base_unet(folder), lam=lam, window=window, phi=phi)
    assert (got - expected).abs().max() <= 1e-4
    vanilla = run(pipe, ClassifierFreeGuidance(guidance_scale=SCALE))
    assert (got - vanilla).abs().max() > 1e-2  # the swap changed something: the LoRA's base is not the LoRA


# -- (3) another denoiser as the prior -------------------------------------------------------------------------
@pytest.mark.parametrize("own_null", [False, True], ids=["negative-prompt", "prior-null"])
def test_module_prior_equals_hand_loop(pipe, own_null):
    emb = conditions(pipe)
    other = tiny_sdxl_unet(seed=5)
    gen = torch.Generator().manual_seed(1)
    null = {"prompt_embeds": torch.randn(1, 16, 64, generator=gen), "text_embeds": torch.randn(1, 32, generator=gen)}
    null = null if own_null else None
    got = run(pipe, PriorSwapGuidance(guidance_scale=SCALE, prior_module=other, prior_inputs=null))
    expected = hand_loop(pipe, emb, pipe.unet, other, null=null)
    assert (got - expected).abs().max() <= 1e-4
    assert not pipe.unet._diffusers_hook.hooks  # the routing hook is gone after each batch


# -- (4) nothing stays switched off -----------------------------------------------------------------------------
def test_adapters_back_on_after_every_step(pipe):
    add_lora(pipe.unet)
    pipe.unet.requires_grad_(False)
    x, t = noise(), torch.tensor(500)
    emb = conditions(pipe)
    with torch.no_grad():
        before = call(pipe.unet, x, t, emb, negative=False)
    seen = []

    class Watch(PriorSwapGuidance):
        def cleanup_models(self, denoiser):
            super().cleanup_models(denoiser)
            with torch.no_grad():
                seen.append(torch.equal(call(denoiser, x, t, emb, negative=False), before))

    run(pipe, Watch(guidance_scale=SCALE))
    assert len(seen) == 2 * STEPS and all(seen)
    assert not any(p.requires_grad for p in pipe.unet.parameters())  # peft's switch-on did not make it trainable


def test_lora_base_without_lora_is_one_line_error(pipe):
    with pytest.raises(PriorswapError, match="no LoRA adapter switched on"):
        run(pipe, PriorSwapGuidance(guidance_scale=SCALE))


def test_unknown_prior_input_names_the_pipelines(pipe):
    guider = PriorSwapGuidance(guidance_scale=SCALE, prior_module=tiny_sdxl_unet(5), prior_inputs={"y": torch.zeros(1)})
    with pytest.raises(PriorswapError, match="this pipeline's are .*prompt_embeds"):
        run(pipe, guider)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(PriorswapError, match="prior_mix"):
        PriorSwapGuidance(prior_mix=1.5)
    with pytest.raises(PriorswapError, match="unknown prior"):
        PriorSwapGuidance(prior="other")
    with pytest.raises(PriorswapError, match="prior='module'"):
        PriorSwapGuidance(prior="lora-base", prior_module=torch.nn.Identity())


# -- save / load -----------------------------------------------------------------------------------------------
def test_round_trip_keeps_settings_and_needs_the_module_reattached(pipe, tmp_path):
    other = tiny_sdxl_unet(seed=5)
    guider = PriorSwapGuidance(guidance_scale=SCALE, prior_mix=0.5, guidance_rescale=0.2, stop=0.75, prior_module=other)
    expected = run(pipe, guider)
    guider.save_pretrained(tmp_path)
    loaded = PriorSwapGuidance.from_pretrained(tmp_path)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(guider.config)
    assert public(loaded.config) == {
        "guidance_scale": SCALE,
        "prior_mix": 0.5,
        "guidance_rescale": 0.2,
        "prior": "module",
        "start": 0.0,
        "stop": 0.75,
        "enabled": True,
    }
    assert loaded.config.prior == "module" and loaded.prior_module is None
    with pytest.raises(PriorswapError, match="attach_prior"):
        run(pipe, loaded)
    assert torch.equal(run(pipe, loaded.attach_prior(other)), expected)
    assert torch.equal(run(pipe, guider.new()), expected)  # diffusers' new() keeps the attached prior


# -- the README's lines ----------------------------------------------------------------------------------------
def test_readme_example(pipe, folder, tmp_path):
    emb = conditions(pipe)
    lora = str(tmp_path / "lora")
    StableDiffusionXLPipeline.save_lora_weights(
        lora, unet_lora_layers=get_peft_model_state_dict(add_lora(pipe.unet), adapter_name="ft")
    )
    pipe = sdxl_modular_pipeline(folder)  # a user's modular SDXL pipeline, its LoRA in a diffusers LoRA folder
    # README begins
    pipe.load_lora_weights(lora)
    pipe.update_components(guider=PriorSwapGuidance(guidance_scale=5.0))  # prior: the LoRA's adapter-off base
    image = pipe(prompt="a red shirt", negative_prompt="", num_inference_steps=STEPS, output="images")[0]
    # README ends
    assert image.size == (IMAGE_SIZE, IMAGE_SIZE)
    latents = run(pipe, pipe.guider)
    assert (latents - hand_loop(pipe, emb, pipe.unet, base_unet(folder))).abs().max() <= 1e-4


# -- SD3: diffusers' own SD3 denoise step (a transformer, flow matching) ------------------------------------------
def sd3_inputs():
    gen = torch.Generator().manual_seed(2)
    text, pooled = torch.randn(1, 8, SD3_TEXT_DIM, generator=gen), torch.randn(1, SD3_POOLED_DIM, generator=gen)
    negative = torch.randn(1, 8, SD3_TEXT_DIM, generator=gen), torch.randn(1, SD3_POOLED_DIM, generator=gen)
    return {
        "prompt_embeds": text,
        "pooled_prompt_embeds": pooled,
        "negative_prompt_embeds": negative[0],
        "negative_pooled_prompt_embeds": negative[1],
    }


def run_sd3(pipe, guider):
    pipe.update_components(guider=guider)
    return pipe(
        **sd3_inputs(),
        num_inference_steps=STEPS,
        height=IMAGE_SIZE,
        width=IMAGE_SIZE,
        latents=noise(),
        output="latents",
    )


@torch.no_grad()
def hand_loop_sd3(cond_model, prior_model):
    sched = flow_scheduler()
    sched.set_timesteps(STEPS)
    emb, x = sd3_inputs(), noise()
    for t in sched.timesteps:
        step = t.expand(1)
        cond = cond_model(x, emb["prompt_embeds"], emb["pooled_prompt_embeds"], step).sample
        uncond = prior_model(x, emb["negative_prompt_embeds"], emb["negative_pooled_prompt_embeds"], step).sample
        x = sched.step(uncond + SCALE * (cond - uncond), t, x).prev_sample
    return x


def test_sd3_prior_mix_zero_is_diffusers_cfg_exactly():
    pipe = sd3_modular_pipeline(add_lora(tiny_sd3_transformer()))
    expected = run_sd3(pipe, ClassifierFreeGuidance(guidance_scale=SCALE))
    assert torch.equal(run_sd3(pipe, PriorSwapGuidance(guidance_scale=SCALE, prior_mix=0.0)), expected)


@pytest.mark.parametrize("kind", ["lora-base", "module"])
def test_sd3_prior_equals_hand_loop(kind):
    base = tiny_sd3_transformer()
    if kind == "lora-base":
        model, guider = add_lora(copy.deepcopy(base)), PriorSwapGuidance(guidance_scale=SCALE)
    else:
        model, guider = base, PriorSwapGuidance(guidance_scale=SCALE, prior_module=tiny_sd3_transformer(seed=5))
    got = run_sd3(sd3_modular_pipeline(model), guider)
    expected = hand_loop_sd3(model, base if kind == "lora-base" else guider.prior_module)
    assert (got - expected).abs().max() <= 1e-4
    assert (got - hand_loop_sd3(model, model)).abs().max() > 1e-2  # not the model's own CFG


# -- the block-state path (Wan, LTX, Z-Image denoise steps), through the guider's own API ---------------------------
def test_block_state_path_three_batches_and_prior_null():
    from diffusers.modular_pipelines.modular_pipeline import BlockState

    gen = torch.Generator().manual_seed(4)
    text, negative, null = (torch.randn(2, 3, 5, generator=gen) for _ in range(3))
    state = BlockState(prompt_embeds=text, negative_prompt_embeds=negative)
    fields = {"encoder_hidden_states": ("prompt_embeds", "negative_prompt_embeds")}
    own, prior = torch.nn.Linear(5, 5), torch.nn.Linear(5, 5)
    guider = PriorSwapGuidance(guidance_scale=3.0, prior_mix=0.25, prior_module=prior)
    guider.attach_prior(prior, prior_inputs={"encoder_hidden_states": null[:1]})
    guider.set_state(step=0, num_inference_steps=4, timestep=torch.tensor(999))
    batches = guider.prepare_inputs_from_block_state(state, fields)
    assert [b.__guidance_identifier__ for b in batches] == ["pred_cond", "pred_prior", "pred_uncond"]
    for batch in batches:
        guider.prepare_models(own)
        batch.noise_pred = own(batch.encoder_hidden_states)
        guider.cleanup_models(own)
    with torch.no_grad():
        cond, base, mine = own(text), prior(null[:1].expand(2, 3, 5)), own(negative)
    uncond = 0.25 * base + 0.75 * mine
    assert torch.allclose(guider(batches).pred, uncond + 3.0 * (cond - uncond), atol=1e-6)
