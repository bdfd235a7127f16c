"""Paired-image metrics on tiny inputs: PSNR, SSIM, LPIPS, CLIP-I/T/D and DINOv2 similarity."""

import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"


import pytest
import torch

from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.metrics import LPIPS, CLIPSimilarity, DINOv2Extractor, dino_similarity, psnr, ssim

import metric_factories as mf  # noqa: E402


def test_psnr_matches_mse_formula():
    a = torch.rand(3, 3, 16, 16)
    b = (a + 0.05 * torch.randn_like(a)).clamp(0, 1)
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(psnr(b, a), 10 * torch.log10(1 / mse), rtol=1e-4, atol=1e-4)


def test_ssim_identity_and_noise():
    a = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(ssim(a, a), torch.ones(2), rtol=1e-5, atol=1e-5)
    noisy = ssim((a + 0.3 * torch.randn_like(a)).clamp(0, 1), a)
    assert noisy.shape == (2,) and (noisy < 0.9).all()
    with pytest.raises(PriorswapError, match="11x11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(PriorswapError, match="equal"):
        psnr(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))


@pytest.fixture(scope="module")
def alexnet_weights(tmp_path_factory) -> str:
    return mf.alexnet_weights(str(tmp_path_factory.mktemp("lpips") / "alexnet-fabricated.pth"))


def test_lpips_ships_lin_weights_and_loads_local_backbone(alexnet_weights):
    metric = LPIPS("alex", backbone_weights=alexnet_weights)
    ref = torch.load(alexnet_weights, weights_only=True)
    torch.testing.assert_close(
        getattr(metric.net.net.slice1, "0").weight, ref["features.0.weight"]
    )  # backbone from the file
    torch.testing.assert_close(getattr(metric.net.net.slice5, "10").weight, ref["features.10.weight"])
    import torchmetrics.functional.image.lpips as tm_lpips

    shipped = os.path.join(os.path.dirname(tm_lpips.__file__), "lpips_models", "alex.pth")
    lin = torch.load(shipped, map_location="cpu", weights_only=True)  # the linear heads torchmetrics ships
    torch.testing.assert_close(metric.net.lin0.model[1].weight, lin["lin0.model.1.weight"])
    a, b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    same, diff = metric(a, a), metric(a, b)
    assert same.shape == (2,) and torch.allclose(same, torch.zeros(2), atol=1e-6)
    assert (diff > 0).all()


def test_lpips_without_backbone_names_url(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(PriorswapError) as e:
        LPIPS("alex")
    assert "\n" not in str(e.value) and "download.pytorch.org" in str(e.value)
    with pytest.raises(PriorswapError, match="'resnet'"):
        LPIPS("resnet")


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> str:
    folder = str(tmp_path_factory.mktemp("clip"))
    mf.write_tiny_clip(folder)
    return folder


def test_clip_i_t_d(clip_folder):
    clip = CLIPSimilarity(clip_folder)
    a, b = torch.rand(2, 3, 40, 48), torch.rand(2, 3, 40, 48)
    assert clip.preprocess(a).shape == (2, 3, 32, 32)
    torch.testing.assert_close(clip.clip_i(a, a), torch.ones(2), rtol=1e-5, atol=1e-5)
    ab = clip.clip_i(a, b)
    assert ab.shape == (2,) and (ab.abs() <= 1 + 1e-6).all() and (ab < 0.99999).all()
    emb_i, emb_t = clip.image_embeds(a), clip.text_embeds(["a red cat", "a dog"])
    torch.testing.assert_close(clip.clip_t(a, ["a red cat", "a dog"]), (emb_i * emb_t).sum(-1))
    # directional: the edit direction equals the text direction when embeddings move in lockstep
    d = clip.clip_directional(a, b, ["a cat", "a dog"], ["a red cat", "a blue dog"])
    d_img = clip.image_embeds(b) - clip.image_embeds(a)
    d_txt = clip.text_embeds(["a red cat", "a blue dog"]) - clip.text_embeds(["a cat", "a dog"])
    torch.testing.assert_close(d, torch.nn.functional.cosine_similarity(d_img, d_txt, dim=-1))
    assert torch.isfinite(d).all() and (d.abs() <= 1 + 1e-6).all()


def test_clip_token_ids_equal_strings(clip_folder):
    from transformers import CLIPTokenizer

    clip = CLIPSimilarity(clip_folder)
    tok = CLIPTokenizer.from_pretrained(clip_folder)(["a cat", "dogs"], padding=True, return_tensors="pt")
    torch.testing.assert_close(
        clip.text_embeds(tok["input_ids"], tok["attention_mask"]), clip.text_embeds(["a cat", "dogs"])
    )


def test_clip_without_tokenizer_needs_ids(clip_folder, tmp_path):
    import shutil

    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(clip_folder, f), bare / f)
    clip = CLIPSimilarity(str(bare))
    assert clip.tokenizer is None
    with pytest.raises(PriorswapError, match="no tokenizer"):
        clip.text_embeds(["a cat"])
    assert clip.text_embeds(torch.tensor([[188, 66, 189]])).shape == (1, 16)


def test_clip_unreachable_hub_id_is_one_line():
    with pytest.raises(PriorswapError) as e:
        CLIPSimilarity("openai/clip-vit-large-patch14-not-cached")
    assert "\n" not in str(e.value) and "hf download" in str(e.value)


def test_dino_similarity_with_tiny_vit():
    ex = DINOv2Extractor(model_name="vit_tiny_patch16_224", image_size=32, pretrained=False)
    a, b = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(dino_similarity(ex, a, a), torch.ones(3), rtol=1e-5, atol=1e-5)
    s = dino_similarity(ex, a, b)
    assert s.shape == (3,) and (s <= 1 + 1e-6).all() and not math.isclose(float(s.mean()), 1.0, abs_tol=1e-6)
