"""Feature extractors loaded from fabricated local weights through the real loading code."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"


import pytest
import torch
from torch import nn

from priorswap.toolkit.errors import PriorswapError  # noqa: E402
from priorswap.toolkit.metrics import (
    DINOv2Extractor,
    FeatureStats,
    InceptionExtractor,
    build_extractor,
    extract_stats,
    inception_score,
    load_feature_network,
)

import metric_factories as mf  # noqa: E402

TINY_VIT = mf.TINY_VIT
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.*deprecated:FutureWarning"
)  # TorchScript is still a supported input


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory) -> str:
    """Random weights with the FID Inception's exact keys and shapes (the real file is a download)."""
    return mf.inception_weights(str(tmp_path_factory.mktemp("inception") / "weights-inception-fabricated.pth"))


@pytest.fixture(scope="module")
def inception(inception_weights) -> InceptionExtractor:
    return InceptionExtractor(inception_weights)


def test_inception_fid_end_to_end(inception):
    g = torch.Generator().manual_seed(0)
    real = torch.rand(6, 3, 32, 32, generator=g)
    fake = (real * 0.3 + 0.6).clamp(0, 1)  # brighter, flatter images
    s_real = extract_stats(inception, torch.split(real, 3))
    s_same = extract_stats(inception, [real])  # other batching, same images
    s_fake = extract_stats(inception, [fake])
    assert inception.dim == 2048 and s_real.n == 6
    torch.testing.assert_close(s_same.mean_cov()[0], s_real.mean_cov()[0], rtol=1e-4, atol=1e-5)
    # each 2048-d FD costs a few seconds on 2 cores: two of them
    assert abs(s_same.frechet_to(s_real)) < 1e-3
    assert s_fake.frechet_to(s_real) > 1e-2


def test_inception_logits_feed_inception_score_and_grey_input(inception):
    images = torch.rand(4, 1, 24, 24)
    feats, logits = inception.features_and_logits(images)
    assert feats.shape == (4, 2048) and logits.shape == (4, 1008)
    torch.testing.assert_close(inception.logits(images.expand(-1, 3, -1, -1)), logits)
    mean, std = inception_score(logits, splits=2)
    assert 1.0 <= mean <= 2.0 and std >= 0


def test_extractor_stays_in_eval_mode_under_a_training_parent(inception):
    nn.Sequential(inception).train()  # a training parent calls .train() on its children
    assert not inception.training and not any(m.training for m in inception.modules())


def test_inception_name_depends_on_weights(inception, inception_weights, tmp_path):
    from safetensors.torch import save_file

    state = torch.load(inception_weights, weights_only=True)
    st = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    other = InceptionExtractor(str(st))
    assert other.name != inception.name and other.name.startswith("inception-v3-fid-")
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(other(x), inception(x))


def test_inception_missing_path_fails_at_construction(tmp_path):
    with pytest.raises(PriorswapError) as e:
        InceptionExtractor(str(tmp_path / "nope.pth"))
    msg = str(e.value)
    assert "\n" not in msg and "nope.pth" in msg and "weights-inception-2015-12-05" in msg


def test_inception_no_path_offline_names_url_and_option(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    with pytest.raises(PriorswapError) as e:
        build_extractor("inception")
    msg = str(e.value)
    assert (
        "\n" not in msg
        and "https://github.com/toshas/torch-fidelity/releases" in msg
        and "weights_path" in msg
        and "None" not in msg
    )


def test_inception_wrong_weights_file(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(PriorswapError, match="do not fit"):
        InceptionExtractor(str(path))


def test_images_out_of_range_rejected(inception):
    with pytest.raises(PriorswapError, match=r"expected \[0, 1\]"):
        inception(torch.rand(2, 3, 16, 16) * 2 - 1)


@pytest.fixture(scope="module")
def tiny_vit_weights(tmp_path_factory) -> str:
    return mf.tiny_vit_weights(str(tmp_path_factory.mktemp("vit") / "tiny_vit.safetensors"))


def test_dinov2_extractor_loads_local_weights(tiny_vit_weights):
    ex = build_extractor("dinov2", weights=tiny_vit_weights, model_name=TINY_VIT, image_size=32)
    assert isinstance(ex, DINOv2Extractor) and ex.dim == 192
    assert ex.name.startswith(f"{TINY_VIT}-32px-")
    a, b = torch.rand(3, 3, 20, 20), torch.rand(3, 1, 48, 48)
    fa = ex(a)
    assert fa.shape == (3, 192) and torch.isfinite(fa).all()
    torch.testing.assert_close(ex(a), fa)  # eval mode: deterministic
    # the loaded weights are the file's, not a fresh random init
    fresh = DINOv2Extractor(model_name=TINY_VIT, image_size=32, pretrained=False)
    assert not torch.allclose(fresh(a), fa)
    assert FeatureStats(192).add(ex(b)).n == 3


def test_dinov2_without_weights_offline_is_one_line_error():
    with pytest.raises(PriorswapError) as e:
        DINOv2Extractor()
    assert "\n" not in str(e.value) and "timm/vit_large_patch14_dinov2.lvd142m" in str(e.value)


def test_dinov2_unknown_timm_model(tiny_vit_weights):
    with pytest.raises(PriorswapError, match="not_a_model"):
        DINOv2Extractor(tiny_vit_weights, model_name="not_a_model")


def test_dinov2_weights_of_another_architecture(tiny_vit_weights):
    with pytest.raises(PriorswapError, match="do not fit"):
        DINOv2Extractor(tiny_vit_weights, model_name="vit_small_patch16_224", image_size=32)


@pytest.mark.hub
def test_dinov2_from_hub():
    """Needs the 1.2 GB vit_large_patch14_dinov2.lvd142m weights from the Hugging Face hub."""
    ex = DINOv2Extractor(allow_download=True)
    assert ex.dim == 1024 and ex(torch.rand(1, 3, 64, 64)).shape == (1, 1024)


@pytest.mark.hub
def test_inception_download():
    """Needs torch-fidelity's Inception weights from GitHub releases."""
    ex = InceptionExtractor(allow_download=True)
    assert ex(torch.rand(1, 3, 64, 64)).shape == (1, 2048)


class Pool(nn.Module):
    """A toy feature network: 4x4 average pooling of each channel, flattened."""

    def forward(self, x):
        return nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) * 2.0


def test_torchscript_feature_network(tmp_path):
    path = tmp_path / "pool.pt"
    torch.jit.save(torch.jit.script(Pool()), str(path))
    ex = build_extractor(str(path))
    assert ex.dim == 48 and ex.name.startswith("torchscript-pool-")
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(ex(x), Pool()(x))


def test_exported_feature_network(tmp_path):
    path = tmp_path / "pool.pt2"
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(Pool(), (torch.rand(2, 3, 16, 16),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    ex = build_extractor(str(path), image_size=16)  # the program was traced at 16 px
    assert ex.dim == 48 and ex.name.startswith("exported-pool-")
    x = torch.rand(5, 3, 16, 16)
    torch.testing.assert_close(ex(x), Pool()(x))


def test_module_feature_network_and_dim_check():
    ex = load_feature_network(Pool(), name="pool")
    assert ex.dim == 48 and ex.name == "pool"
    bad = load_feature_network(Pool(), dim=10, name="pool")
    with pytest.raises(PriorswapError, match=r"expected \(B, 10\)"):
        bad(torch.rand(1, 3, 8, 8))


def test_not_torchscript_file(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(PriorswapError, match="TorchScript") as e:
        build_extractor(str(path))
    assert "\n" not in str(e.value) and "state.pt" in str(e.value)


def test_unknown_extractor_lists_choices():
    with pytest.raises(PriorswapError) as e:
        build_extractor("clip-vit")
    msg = str(e.value)
    assert "\n" not in msg and "'clip-vit'" in msg and "inception" in msg and "dinov2" in msg
