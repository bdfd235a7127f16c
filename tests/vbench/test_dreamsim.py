"""VBench-I2V's I2V background: DreamSim's ensemble read from DreamSim's own cache folder (fabricated in its layout),
checked against dreamsim 0.2.1's code (directly when installed, else through numbers it produced), and the
dimension on videos whose answer is known."""

import atexit
import json
import os
import shutil
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.vbench import dimensions
from priorswap.toolkit.vbench.dreamsim import DreamSimEnsemble, LoRAQKV, normalize_embeds

from repo_paths import FIXTURES
from vbench_factories import DREAMSIM_LORA_CONFIG, dreamsim_folder

_FULL = {}


def full_size_folder() -> str:
    """The ViT-B/16 x 3 folder (seed 0, ~1 GB), made once per test session."""
    if "path" not in _FULL:
        root = tempfile.mkdtemp(prefix="dreamsim-full-")
        atexit.register(shutil.rmtree, root, True)
        _FULL["path"] = dreamsim_folder(root, seed=0)
    return _FULL["path"]


def upstream_inputs() -> torch.Tensor:
    return torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))[:2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return dreamsim_folder(tmp_path_factory.mktemp("ds") / "models", seed=3, width=64)


# -- equality with DreamSim's own code ---------------------------------------------------------------------------
@torch.no_grad()
def test_matches_numbers_from_dreamsims_own_code():
    """dreamsim 0.2.1 run once on the seed-0 folder gave these features (tests/fixtures); they fix the architecture."""
    ref = json.load(open(os.path.join(FIXTURES, "dreamsim_ensemble_seed0.json")))
    ours = DreamSimEnsemble(full_size_folder())
    x = upstream_inputs()
    raw = torch.cat([ours(x[i : i + 1]) for i in range(len(x))])
    assert raw.shape == (2, 1792)
    assert (raw - torch.tensor(ref["raw"])).abs().max() < 2e-5  # 3.3e-6 measured; fused vs explicit attention
    assert (normalize_embeds(raw) - torch.tensor(ref["embed"])).abs().max() < 1e-6


@torch.no_grad()
def test_matches_the_dreamsim_package(tmp_path, monkeypatch):
    pytest.importorskip("dreamsim", reason="dreamsim is not installed; the stored numbers above stand in for it")
    from dreamsim import dreamsim
    from dreamsim.feature_extraction.vision_transformer import vit_base

    folder = full_size_folder()

    def hub_load(repo, name, *a, **k):  # torch.hub's facebookresearch/dino hubconf.py dino_vitb16, offline:
        assert (repo, name) == ("facebookresearch/dino:main", "dino_vitb16")  # dreamsim vendors its ViT code
        vit = vit_base(patch_size=16, num_classes=0)
        vit.load_state_dict(torch.load(os.path.join(folder, "checkpoints", "dino_vitbase16_pretrain.pth")), strict=True)
        return vit

    monkeypatch.setattr(torch.hub, "load", hub_load)
    monkeypatch.chdir(tmp_path)
    ref, _ = dreamsim(pretrained=True, cache_dir=folder, device="cpu")
    assert os.listdir(tmp_path) == []
    ours = DreamSimEnsemble(folder)
    x = upstream_inputs()
    for i in range(len(x)):
        assert (ours.embed(x[i : i + 1]) - ref.embed(x[i : i + 1])).abs().max() < 1e-6


# -- the dimension --------------------------------------------------------------------------------------------
def test_static_video_equal_to_the_image_scores_one(tiny):
    ds = DreamSimEnsemble(tiny)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)
    static = np.stack([frame] * 4)
    # at 224x224 neither resize changes anything: the image's tensor is the frames' exactly, and every cosine is 1
    assert dimensions.i2v_background(ds, Image.fromarray(frame), static) == pytest.approx(1.0, abs=1e-6)
    # at another size PIL's bicubic (rounded to uint8) and torchvision's (float, antialiased) differ a little:
    # the consecutive terms stay 1 (0.6 of the score), only the conformity drops below 1
    small = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    score = dimensions.i2v_background(ds, Image.fromarray(small), np.stack([small] * 4))
    assert 0.95 < score < 1.0
    moving = np.stack([np.roll(frame, 40 * i, axis=1) for i in range(4)])
    assert dimensions.i2v_background(ds, Image.fromarray(frame), moving) < 1.0 - 1e-4


def test_preprocessing_is_vbenchs():
    frames = np.random.default_rng(1).integers(0, 255, (2, 90, 160, 3), dtype=np.uint8)
    x = dimensions.dreamsim_frames(frames)
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32  # square: the aspect ratio is not kept
    img = dimensions.dreamsim_image(Image.fromarray(frames[0]))
    assert img.shape == (1, 3, 224, 224) and 0 <= img.min() and img.max() <= 1  # PIL rounds back to uint8


def test_aggregate_is_the_mean_over_videos():
    from priorswap.toolkit.vbench.protocol import aggregate

    assert aggregate("i2v_background", [0.5, 1.0, 0.9]) == pytest.approx(0.8)


@torch.no_grad()
def test_embed_is_dreamsims_normalisation_and_lora_counts(tiny):
    ds = DreamSimEnsemble(tiny)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    raw, emb = ds(x), ds.embed(x)
    assert raw.shape == (2, 64 + 2 * 42)  # DINO CLS ‖ CLIP ‖ OpenCLIP embeddings (768 + 512 + 512 at full size)
    assert emb.mean(dim=1).abs().max() < 1e-6 and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    qkv = ds.vits[1].blocks[3].attn.qkv
    assert isinstance(qkv, LoRAQKV) and qkv.scaling == 8 / 16  # lora_alpha / r from adapter_config.json
    h = torch.randn(5, 64)
    merged = qkv.base.weight + qkv.scaling * qkv.lora_B.weight @ qkv.lora_A.weight
    assert torch.allclose(qkv(h), h @ merged.T + qkv.base.bias, atol=1e-5)
    for vit in ds.vits:
        for blk in vit.blocks:
            blk.attn.qkv.scaling = 0.0
    assert (ds(x) - raw).abs().max() > 1e-3  # the adapter changes every branch's features
    with pytest.raises(PriorswapError, match=r"\(B, 3, 224, 224\)"):
        ds(torch.rand(1, 3, 256, 256))


@torch.no_grad()
def test_bin_adapter_loads_like_safetensors(tiny, tmp_path):
    other = dreamsim_folder(tmp_path / "m", seed=3, width=64, adapter="adapter_model.bin")
    x = torch.rand(1, 3, 224, 224)
    assert torch.equal(DreamSimEnsemble(other)(x), DreamSimEnsemble(tiny)(x))


# -- bad folders: one line each ---------------------------------------------------------------------------------
def _copy(tiny, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(tiny, dst)
    return str(dst)


def _one_line(folder, needle):
    with pytest.raises(PriorswapError, match=needle) as e:
        DreamSimEnsemble(folder)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "remove,needle",
    [
        ("checkpoints/dino_vitbase16_pretrain.pth", "has no checkpoints/dino_vitbase16_pretrain.pth"),
        ("clip_vitb16_pretrain.pth.tar", r"has no clip_vitb16_pretrain.pth.tar \(clip_vitb16\)"),
        ("open_clip_vitb16_pretrain.pth.tar", "has no open_clip_vitb16_pretrain.pth.tar"),
        ("ensemble_lora/adapter_config.json", "has no adapter_config.json"),
        ("ensemble_lora/adapter_model.safetensors", "neither adapter_model.safetensors nor adapter_model.bin"),
        ("ensemble_lora", "has no ensemble_lora/ .peft's LoRA adapter"),
    ],
)
def test_missing_file_is_named(tiny, tmp_path, remove, needle):
    folder = _copy(tiny, tmp_path)
    path = os.path.join(folder, remove)
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    _one_line(folder, needle)


def test_missing_or_old_folders(tiny, tmp_path):
    _one_line(str(tmp_path / "nowhere"), "is not a folder; expected DreamSim's cache folder")
    folder = _copy(tiny, tmp_path)
    os.rename(os.path.join(folder, "ensemble_lora"), os.path.join(folder, "dino_vitb16_lora"))
    _one_line(folder, "DreamSim 0.1.x's per-branch adapters")


def test_wrong_files_are_refused(tiny, tmp_path):
    folder = _copy(tiny, tmp_path)
    clip = os.path.join(folder, "clip_vitb16_pretrain.pth.tar")
    good = torch.load(clip)
    torch.save({"state_dict": {k: v for k, v in good["state_dict"].items() if k != "blocks.5.mlp.fc1.bias"}}, clip)
    _one_line(folder, "does not fit a ViT-B/16 in DINO's key names")
    torch.save({"state_dict": {k: v for k, v in good["state_dict"].items() if k != "proj"}}, clip)
    _one_line(folder, "has no .768, 512. 'proj'")
    torch.save(good, clip)
    dino = os.path.join(folder, "checkpoints", "dino_vitbase16_pretrain.pth")
    torch.save({"student": {}}, dino)  # DreamSim's head file put where the backbone belongs
    _one_line(folder, "has no .1, 1, 768. cls_token")


def test_wrong_adapters_are_refused(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _copy(tiny, tmp_path)
    cfg = os.path.join(folder, "ensemble_lora", "adapter_config.json")
    json.dump({**DREAMSIM_LORA_CONFIG, "use_dora": True, "target_modules": ["qkv", "proj"]}, open(cfg, "w"))
    _one_line(folder, r"sets target_modules=\['qkv', 'proj'\], use_dora=True")
    open(cfg, "w").write("{not json")
    _one_line(folder, "is not peft's LoRA adapter_config.json")
    json.dump(DREAMSIM_LORA_CONFIG, open(cfg, "w"))
    weights = os.path.join(folder, "ensemble_lora", "adapter_model.safetensors")
    lora = load_file(weights)
    save_file({**lora, "base_model.model.mlp.lora_A.weight": torch.zeros(1, 1)}, weights)
    _one_line(folder, "holds 1 unexpected keys")
    del lora["base_model.model.extractor_list.2.model.blocks.11.attn.qkv.lora_B.weight"]
    save_file(lora, weights)
    _one_line(folder, "lacks base_model.model.extractor_list.2.model.blocks.11.attn.qkv.lora_A/B")
