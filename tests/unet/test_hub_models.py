"""The hub models the README names, loaded through the project's own loading code, then one denoiser call at a
small size. Each check runs on a tiny local folder (always) and on the real hub model (``hub`` marker: only
with PRIORSWAP_HUB_TESTS=1 on a machine that can reach the hub, since each downloads gigabytes)."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from priorswap.toolkit.unet import tiny as uf

from factories import save_dit_pipeline, save_pixart_pipeline

ONLINE = os.environ.get("PRIORSWAP_HUB_TESTS") == "1"


def hub(ref: str, size: str):
    reason = f"downloads {ref} (about {size}) from the Hugging Face hub; set PRIORSWAP_HUB_TESTS=1 on a machine that can reach it"
    return pytest.param(ref, marks=[pytest.mark.hub, pytest.mark.skipif(not ONLINE, reason=reason)], id=ref)


@pytest.fixture
def resolve(request, tmp_path, monkeypatch):
    """A ref: a hub id as is (with hub access switched on for this test), or "tiny-<kind>" built locally."""
    from huggingface_hub import constants

    def get(ref: str) -> str:
        if not ref.startswith("tiny-"):
            monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the test session is offline by default
            return ref
        build = {
            "tiny-dit": lambda p: save_dit_pipeline(p, num_classes=10, sample_size=8),
            "tiny-sd": uf.save_sd,
            "tiny-pixart": save_pixart_pipeline,
            "tiny-ip2p": uf.save_ip2p,
            "tiny-zero123": uf.save_zero123,
            "tiny-vd": uf.save_vd,
        }[ref]
        return build(str(tmp_path / ref))

    return get


def finite_eps(den, x: torch.Tensor, conds) -> None:
    """One batched denoiser call: every condition's eps has x's shape and is finite."""
    x = x.to(den.device, den.dtype)
    with torch.no_grad():
        out = den.predict(x, torch.tensor(500), conds)
    assert len(out) == len(conds)
    for eps in out:
        assert eps.shape == x.shape and torch.isfinite(eps).all()


def grey(size: int) -> Image.Image:
    return Image.fromarray(np.full((size, size, 3), 128, dtype=np.uint8))


@pytest.mark.parametrize("ref", ["tiny-dit", hub("facebook/DiT-XL-2-256", "2.7 GB")])
def test_dit(ref, resolve):
    from priorswap.toolkit.dit.load import load_dit

    den = load_dit(resolve(ref)).denoiser
    size = den.sample_size  # DiT has fixed position embeddings: 32 latents for DiT-XL-2-256
    finite_eps(den, torch.randn(1, den.latent_channels, size, size), [torch.tensor([1]), None])


@pytest.mark.parametrize(
    "ref",
    [
        "tiny-sd",
        "tiny-pixart",
        hub("CompVis/stable-diffusion-v1-4", "4 GB"),
        hub("stabilityai/stable-diffusion-2-1", "5 GB"),
        hub("PixArt-alpha/PixArt-XL-2-512x512", "20 GB: its T5-XXL text encoder"),
    ],
)
def test_text_to_image_prior(ref, resolve):
    from priorswap.toolkit.priors import load_prior

    den = load_prior(resolve(ref)).denoiser
    finite_eps(den, torch.randn(1, den.latent_channels, 8, 8), [None])  # a prior only ever gives its null eps


@pytest.mark.parametrize("ref", ["tiny-ip2p", hub("timbrooks/instruct-pix2pix", "4 GB")])
def test_instruct_pix2pix(ref, resolve):
    from priorswap.toolkit.unet.ip2p import IP2PCond, image_latents, prompt_embedding
    from priorswap.toolkit.unet.load import load_ip2p

    model = load_ip2p(resolve(ref))
    image = image_latents(model.vae, torch.zeros(1, 3, 64, 64))
    text = prompt_embedding(model.encoders["tokenizer"], model.encoders["text_encoder"], ["make it blue"])
    hw = image.shape[-2:]
    finite_eps(model.denoiser, torch.randn(1, 4, *hw), [IP2PCond(image, text), IP2PCond(image, None), None])


@pytest.mark.parametrize("ref", ["tiny-zero123", hub("kxic/zero123-xl", "5 GB")])
def test_zero123(ref, resolve):
    from priorswap.toolkit.unet.ip2p import image_latents
    from priorswap.toolkit.unet.load import load_zero123
    from priorswap.toolkit.unet.zero123 import Zero123Cond, pose_vector, zero123_embedding

    model = load_zero123(resolve(ref))
    pixels = torch.zeros(1, 3, 64, 64)
    enc = model.encoders
    emb = zero123_embedding(
        enc["image_encoder"], enc["cc_projection"], pixels, pose_vector(30.0, 60.0, 0.0), enc["mean"], enc["std"]
    )
    image = image_latents(model.vae, pixels)
    finite_eps(model.denoiser, torch.randn(1, 4, *image.shape[-2:]), [Zero123Cond(emb, image), None])


@pytest.mark.parametrize("ref", ["tiny-vd", hub("shi-labs/versatile-diffusion", "5 GB of its image-variation parts")])
def test_versatile_diffusion(ref, resolve):
    from priorswap.toolkit.unet.load import load_vd
    from priorswap.toolkit.unet.versatile import vd_image_embedding

    model = load_vd(resolve(ref))
    emb = vd_image_embedding(model.encoders["feature_extractor"], model.encoders["image_encoder"], [grey(64)])
    finite_eps(model.denoiser, torch.randn(1, 4, 8, 8), [emb, None])


@pytest.mark.parametrize(
    "model,prior",
    [
        ("tiny", "tiny"),
        pytest.param(
            "Doubiiu/DynamiCrafter",
            "VideoCrafter/Text2Video-512",
            marks=[
                pytest.mark.hub,
                pytest.mark.skipif(
                    not ONLINE,
                    reason="downloads Doubiiu/DynamiCrafter and VideoCrafter/Text2Video-512 (several GB each) from the "
                    "Hugging Face hub; set PRIORSWAP_HUB_TESTS=1 on a machine that can reach it",
                ),
            ],
            id="dynamicrafter-256+videocrafter1",
        ),
    ],
)
def test_dynamicrafter_with_videocrafter1_prior(model, prior, tmp_path, monkeypatch):
    """Hub ids (or tiny released-layout checkpoints) go through conversion, strict loading and pairing, then
    one guided step each, vanilla and swapped."""
    from priorswap.toolkit.video.loading import convert, load_video_model
    from priorswap.toolkit.video.pipeline import VideoJob, prepare
    from priorswap.toolkit.video.tiny import save_tiny_checkpoint

    size = (64, 64)
    if model == "tiny":
        refs = []
        for flavour, seed in (("dynamicrafter", 1), ("videocrafter", 2)):
            p = save_tiny_checkpoint(str(tmp_path / flavour), flavour, seed)
            refs.append(convert(p["ckpt"], str(tmp_path / f"{flavour}-c"), flavour, p["config"], p["openclip"]))
        model, prior = refs
    else:
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HOME", str(tmp_path))  # converted copies go to a scratch cache
        size = (256, 256)
    dc = load_video_model(model, "dynamicrafter")
    vc = load_video_model(prior, "videocrafter")
    job = VideoJob(
        image=grey(size[0]), prompt="a dog running", steps=1, spacing="uniform_trailing", size=size, progress=False
    )
    prepared = prepare(dc, vc, job)
    for swapped in (False, True):
        video = prepared.samples(swapped)
        assert video.shape == (1, 3, 16, *size) and torch.isfinite(video).all()
