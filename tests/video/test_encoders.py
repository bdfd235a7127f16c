"""DynamiCrafter / VideoCrafter1 conditioning ported without lvdm: OpenCLIP text and image towers, the Resampler
and the VAE, checked against tensors the original upstream code computed with tiny random models.

The reference folder (``../shared/dynamicrafter-reference`` beside the checkout, or ``$PRIORSWAP_DC_REFERENCE``)
is described by its README; tests needing it skip without it, the others build tiny towers here.
Max errors measured on CPU float32 are noted at each tolerance.
"""

from __future__ import annotations

import os

import pytest
import torch
import yaml

from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.video.encoders import (
    OpenCLIPImageEncoder,
    OpenCLIPTextEncoder,
    build_openclip,
    openclip_config,
)
from priorswap.toolkit.video.resampler import Resampler, ResamplerConfig
from priorswap.toolkit.video.vae import decode_frames, diffusers_vae_config, encode_mean, ldm_vae_to_diffusers

from repo_paths import REPO

NO_REFERENCE = "the DynamiCrafter reference folder (../shared/dynamicrafter-reference) is not beside this checkout"
TINY_CLIP = {  # a few-layer tower for the tests that need no reference
    "embed_dim": 8,
    "vision_cfg": {"image_size": 64, "layers": 1, "width": 16, "head_width": 8, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 8, "heads": 2, "layers": 3},
}


def reference_dir() -> str | None:
    for path in (
        os.environ.get("PRIORSWAP_DC_REFERENCE"),
        os.path.join(REPO, "..", "shared", "dynamicrafter-reference"),
    ):
        if path and os.path.isdir(path):
            return path
    return None


def prefixed(state_dict: dict, prefix: str) -> dict:
    """The entries under ``prefix``, with it stripped (how each tower sits in the released checkpoint)."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def ref() -> str:
    path = reference_dir()
    if path is None:
        pytest.skip(NO_REFERENCE)
    return path


@pytest.fixture(scope="module")
def dc(ref):
    """(state_dict, yaml model params, components) of tiny DynamiCrafter."""
    sd = torch.load(os.path.join(ref, "tiny_dc.ckpt"), weights_only=True)["state_dict"]
    with open(os.path.join(ref, "tiny_dc.yaml")) as f:
        params = yaml.safe_load(f)["model"]["params"]
    components = torch.load(os.path.join(ref, "unet_io_dc.pt"), weights_only=True)["components"]
    return sd, params, components


@pytest.fixture(scope="module")
def clip_cfg(ref, dc) -> dict:
    arch = dc[1]["cond_stage_config"]["params"]["arch"]
    return openclip_config(arch, os.path.join(ref, f"{arch}.json"))


@pytest.fixture(scope="module")
def dc_text(dc, clip_cfg) -> OpenCLIPTextEncoder:
    enc = OpenCLIPTextEncoder(build_openclip(clip_cfg), layer=dc[1]["cond_stage_config"]["params"]["layer"])
    enc.load_state_dict(prefixed(dc[0], "cond_stage_model.model."), strict=True)
    return enc


@pytest.fixture(scope="module")
def dc_image(dc, clip_cfg) -> OpenCLIPImageEncoder:
    enc = OpenCLIPImageEncoder(build_openclip(clip_cfg))
    enc.load_state_dict(prefixed(dc[0], "embedder.model."), strict=True)
    return enc


@pytest.fixture(scope="module")
def dc_resampler(dc) -> Resampler:
    res = Resampler(ResamplerConfig(**dc[1]["image_proj_stage_config"]["params"]))
    res.load_state_dict(prefixed(dc[0], "image_proj_model."), strict=True)
    return res.eval()


@pytest.fixture(scope="module")
def dc_vae(dc):
    sd, params, _ = dc
    return ldm_vae_to_diffusers(sd, params["first_stage_config"]["params"]["ddconfig"], params["scale_factor"])


# ---------------------------------------------------------------- text


def test_text_encoder_matches_upstream(dc, dc_text):
    c = dc[2]
    tokens = dc_text.tokenize(c["prompts"])
    assert torch.equal(tokens, c["tokens"])
    assert tokens[1, :3].tolist() == [49406, 49407, 0]  # "" -> SOT, EOT, zero padding (README item 5)
    with torch.no_grad():
        emb = dc_text(tokens)
    assert emb.shape == (2, 77, 16)
    torch.testing.assert_close(emb, c["text_emb"], atol=1e-5, rtol=0)  # measured 1.3e-6
    torch.testing.assert_close(dc_text.encode(c["prompts"]), emb, atol=0, rtol=0)


def test_vc1_text_encoder_matches_upstream(ref, clip_cfg):
    sd = torch.load(os.path.join(ref, "tiny_vc1.ckpt"), weights_only=True)["state_dict"]
    c = torch.load(os.path.join(ref, "unet_io_vc1.pt"), weights_only=True)["components"]
    enc = OpenCLIPTextEncoder(build_openclip(clip_cfg))
    enc.load_state_dict(prefixed(sd, "cond_stage_model.model."), strict=True)
    tokens = enc.tokenize(c["prompts"])
    assert torch.equal(tokens, c["tokens"])
    with torch.no_grad():
        torch.testing.assert_close(enc(tokens), c["text_emb"], atol=1e-5, rtol=0)  # measured 1.3e-6


def test_text_layers_and_causal_mask():
    torch.manual_seed(0)
    clip = build_openclip(TINY_CLIP)
    last = OpenCLIPTextEncoder(clip, layer="last")
    pen = OpenCLIPTextEncoder(clip, layer="penultimate")
    tokens = pen.tokenize(["a red ball rolls"])
    with torch.no_grad():
        assert (last(tokens) - pen(tokens)).abs().max() > 1e-3  # "last" runs one block more
        changed = tokens.clone()
        changed[0, 4] = 1000  # a later token
        a, b = pen(tokens), pen(changed)
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=0, rtol=0)  # earlier positions cannot see it
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-3
    with pytest.raises(PriorswapError, match="pooled"):
        OpenCLIPTextEncoder(clip, layer="pooled")


def test_towers_hold_the_checkpoint_keys():
    clip = build_openclip(TINY_CLIP)
    text_keys = set(OpenCLIPTextEncoder(clip).state_dict())
    assert not any(k.startswith("visual.") for k in text_keys) and "ln_final.weight" in text_keys
    image_keys = set(OpenCLIPImageEncoder(build_openclip(TINY_CLIP)).state_dict())
    assert not any(k.startswith("transformer.") for k in image_keys)
    assert {"token_embedding.weight", "ln_final.bias", "text_projection", "logit_scale", "visual.proj"} <= image_keys


def test_openclip_config_errors(tmp_path):
    with pytest.raises(PriorswapError, match="no-such-arch"):
        openclip_config("no-such-arch")
    with pytest.raises(PriorswapError, match="missing.json"):
        openclip_config("x", str(tmp_path / "missing.json"))
    with pytest.raises(PriorswapError, match="custom_text"):
        build_openclip({**TINY_CLIP, "custom_text": True})


# ---------------------------------------------------------------- image


def test_image_encoder_matches_upstream(dc, dc_image, dc_resampler):
    c = dc[2]
    assert torch.equal(
        c["null_image"], torch.zeros_like(c["image"])
    )  # the null image is mid grey, not a zero embedding
    torch.testing.assert_close(dc_image.preprocess(c["image"]), c["clip_input"], atol=1e-6, rtol=0)  # measured 0
    with torch.no_grad():
        for image, tokens, projected in [
            (c["image"], c["embedder_out"], c["image_proj_out"]),
            (c["null_image"], c["null_embedder_out"], c["null_image_proj_out"]),
        ]:
            out = dc_image(image)
            assert out.shape == (1, 50, 64)  # all tokens, vision width, no ln_post / proj
            torch.testing.assert_close(out, tokens, atol=1e-5, rtol=0)  # measured 1.6e-6 (image), 1.9e-6 (null)
            # the Resampler alone on upstream's tokens, then chained on ours
            torch.testing.assert_close(dc_resampler(tokens), projected, atol=1e-5, rtol=0)  # measured 1.3e-6
            torch.testing.assert_close(dc_resampler(out), projected, atol=2e-5, rtol=0)


def test_resampler_queries_per_frame():
    cfg = ResamplerConfig(dim=16, depth=1, dim_head=8, heads=3, num_queries=4, embedding_dim=32, output_dim=12)
    x = torch.randn(2, 5, 32)
    assert Resampler(cfg)(x).shape == (2, 4, 12)
    assert Resampler(ResamplerConfig(**{**cfg.__dict__, "video_length": 3}))(x).shape == (2, 12, 12)


# ---------------------------------------------------------------- VAE


def test_vae_matches_upstream(dc, dc_vae):
    c = dc[2]
    scale = dc[1]["scale_factor"]
    mean = encode_mean(dc_vae, c["image"])
    torch.testing.assert_close(mean, c["vae_posterior_mean"], atol=1e-5, rtol=0)  # measured 4.4e-6
    # upstream's concat latent is a posterior sample, 0.18215 * (mean + std * eps); std is pinned at 4.5e-5, so
    # the mean lands within 0.18215 * max|std * eps| = 2.35e-5 of it (measured 2.35e-5) ...
    torch.testing.assert_close(scale * mean, c["cond_latent"], atol=3e-5, rtol=0)
    # ... and with upstream's eps the sample itself is reproduced (measured 7.9e-7)
    std = dc_vae.encode(c["image"]).latent_dist.std
    sample = scale * (mean + std * c["vae_posterior_noise"])
    torch.testing.assert_close(sample, c["cond_latent"], atol=2e-6, rtol=0)
    video = decode_frames(dc_vae, c["cond_latent"][:, :, None].repeat(2, 1, 2, 1, 1), scale)
    assert video.shape == (2, 3, 2, 64, 64)
    for b in range(2):
        for t in range(2):  # measured 5.0e-6, values up to 2.7 (not clamped)
            torch.testing.assert_close(
                video[b : b + 1, :, t : t + 1], c["vae_decode_of_cond_latent"], atol=2e-5, rtol=0
            )


def test_vae_loads_stripped_keys_strictly(dc):
    sd, params, c = dc
    ddconfig = params["first_stage_config"]["params"]["ddconfig"]
    stripped = prefixed(sd, "first_stage_model.")
    vae = ldm_vae_to_diffusers(stripped, ddconfig, params["scale_factor"])
    assert vae.config.scaling_factor == params["scale_factor"] and list(vae.config.block_out_channels) == [
        32,
        32,
        32,
        64,
    ]
    with pytest.raises(PriorswapError, match="missing"):
        ldm_vae_to_diffusers({k: v for k, v in stripped.items() if k != "decoder.conv_out.bias"}, ddconfig, 0.18215)
    with pytest.raises(PriorswapError, match="unexpected"):  # a key diffusers' map renames but the model lacks
        ldm_vae_to_diffusers({**stripped, "encoder.down.0.attn.0.q.weight": torch.zeros(1)}, ddconfig, 0.18215)
    with pytest.raises(PriorswapError, match="no diffusers counterpart"):  # a key the map drops (LDM's loss.*)
        ldm_vae_to_diffusers({**stripped, "loss.logvar": torch.zeros(())}, ddconfig, 0.18215)
    with pytest.raises(PriorswapError, match="do not fit"):
        ldm_vae_to_diffusers(stripped, {**ddconfig, "ch": 64}, 0.18215)


def test_vae_config_refuses_what_diffusers_cannot_express():
    ddconfig = {"in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "z_channels": 4}
    assert diffusers_vae_config({**ddconfig, "resolution": 64, "attn_resolutions": []}, 0.18215)["sample_size"] == 64
    with pytest.raises(PriorswapError, match=r"attn_resolutions=\[32\]"):
        diffusers_vae_config({**ddconfig, "resolution": 64, "attn_resolutions": [32]}, 0.18215)
    with pytest.raises(PriorswapError, match="double_z=False"):
        diffusers_vae_config({**ddconfig, "resolution": 64, "double_z": False}, 0.18215)
