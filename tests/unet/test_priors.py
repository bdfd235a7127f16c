"""UNet and PixArt priors: their own empty-prompt null, schedule bridging, and pairing refusals."""

import os

import pytest
import torch

from priorswap.toolkit.api import sample_dit
from priorswap.toolkit.core.pairing import pair, schedule_mismatch
from priorswap.toolkit.dit.load import load_dit
from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.priors import load_prior

from factories import save_dit_pipeline, save_pixart_pipeline, save_sd_pipeline


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("priors")
    return {
        "dit": save_dit_pipeline(str(root / "dit"), num_classes=5),
        "sd": save_sd_pipeline(str(root / "sd")),
        "sd_v": save_sd_pipeline(str(root / "sd_v"), prediction_type="v_prediction", seed=1),
        "sdxl_vae": save_sd_pipeline(str(root / "sdxl"), vae_scaling=0.13025),
        "pixart": save_pixart_pipeline(str(root / "pixart")),
        "pixel": save_dit_pipeline(str(root / "pixel"), num_classes=5, latent=False),
        "dit16": save_dit_pipeline(str(root / "dit16"), num_classes=5, sample_size=16),
    }


def test_unet_prior_uses_its_own_empty_prompt_embedding(paths):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(paths["sd"], safety_checker=None)
    tok = pipe.tokenizer([""], padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt")
    expected_null = pipe.text_encoder(tok.input_ids)[0]
    prior = load_prior(paths["sd"]).denoiser
    assert torch.allclose(prior.null_embedding, expected_null, atol=1e-6)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([100, 800])
    direct = pipe.unet(x, t, encoder_hidden_states=expected_null.expand(2, -1, -1)).sample
    assert torch.allclose(prior(x, t, None), direct, atol=1e-5)  # own schedule: no mapping
    # the encoder is gone after the one empty-prompt pass
    assert not hasattr(prior, "text_encoder")


def test_v_prediction_prior_is_converted_to_eps(paths):
    from diffusers import UNet2DConditionModel

    prior = load_prior(paths["sd_v"]).denoiser
    unet = UNet2DConditionModel.from_pretrained(paths["sd_v"], subfolder="unet")
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([300])
    v = unet(x, t, encoder_hidden_states=prior.null_embedding).sample
    a = prior.alphas_cumprod[300].float()
    assert torch.allclose(prior(x, t, None), a.sqrt() * v + (1 - a).sqrt() * x, atol=1e-5)


def test_pixart_prior_null_and_learned_sigma(paths):
    from diffusers import PixArtTransformer2DModel

    prior = load_prior(paths["pixart"]).denoiser
    assert prior.null_embedding.shape[1] == 120  # T5 padded to 120 tokens, as PixArt's pipeline does
    tr = PixArtTransformer2DModel.from_pretrained(paths["pixart"], subfolder="transformer")
    x, t = torch.randn(1, 4, 8, 8), torch.tensor([250])
    out = tr(
        x,
        encoder_hidden_states=prior.null_embedding,
        encoder_attention_mask=prior.null_mask,
        timestep=t,
        added_cond_kwargs={"resolution": None, "aspect_ratio": None},
    ).sample
    assert out.shape[1] == 8
    assert torch.allclose(prior(x, t, None), out[:, :4], atol=1e-5)


def test_pixart_null_equals_its_pipelines_negative_prompt(paths):
    """The prior's null is what PixArtAlphaPipeline encodes for negative_prompt="" (real sentencepiece T5 tokenizer)."""
    from diffusers import PixArtAlphaPipeline
    from transformers import T5Tokenizer

    assert sorted(os.listdir(os.path.join(paths["pixart"], "tokenizer"))) == ["spiece.model", "tokenizer_config.json"]
    prior = load_prior(paths["pixart"]).denoiser
    pipe = PixArtAlphaPipeline.from_pretrained(paths["pixart"])
    assert isinstance(pipe.tokenizer, T5Tokenizer)
    _, _, neg, neg_mask = pipe.encode_prompt(
        "a photo of a cat", do_classifier_free_guidance=True, negative_prompt="", device="cpu"
    )
    assert int(prior.null_mask.sum()) == 1 and prior.null_mask[0, 0] == 1  # "" is just </s>
    torch.testing.assert_close(prior.null_mask.to(neg_mask.dtype), neg_mask)
    torch.testing.assert_close(prior.null_embedding, neg, atol=1e-6, rtol=1e-5)


def test_dit_with_sd_prior_bridges_schedules(paths):
    model, prior = load_dit(paths["dit"]).denoiser, load_prior(paths["sd"]).denoiser
    paired = pair(model, prior, (8, 8))
    assert 0 < schedule_mismatch(model, prior) < 5e-3
    t = torch.tensor([500])
    t_prime = int(paired.model_timesteps(t))
    assert t_prime != 500  # called at the nearest-alpha_bar timestep instead
    assert abs(float(prior.alphas_cumprod[t_prime] - model.alphas_cumprod[500])) < 1e-3
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(paired(x, t, None), prior(x, torch.tensor([t_prime]), None))
    # pairing returns a new denoiser and leaves the prior on its own schedule
    assert not torch.allclose(paired(x, t, None), prior(x, t, None))
    out = sample_dit(paths["dit"], [1, 2], prior=paths["sd"], steps=3, progress=False)
    assert out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "model,prior,words",
    [
        ("dit", "sdxl_vae", ["latent spaces differ", "0.18215", "0.13025"]),
        ("pixel", "sd", ["latent spaces differ", "pixel space"]),
        ("dit16", "dit", ["fixed position embeddings", "8x8", "16x16"]),
    ],
)
def test_unpairable_models_are_refused_in_one_line(paths, model, prior, words):
    m = load_dit(paths[model]).denoiser
    p = load_prior(paths[prior]).denoiser
    size = m.sample_size
    with pytest.raises(PriorswapError) as err:
        pair(m, p, (size, size))
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg
