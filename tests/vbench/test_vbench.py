"""VBench-I2V dimensions: formulas on features and videos whose answer is known, and the networks read from the
files VBench loads (fabricated here in their official layouts)."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.vbench import dimensions, formulas
from priorswap.toolkit.vbench.networks import AestheticHead, DINOFeatures, load_openai_clip

from vbench_factories import openai_archive, original_raft_state


def unit(angles):
    return torch.tensor([[math.cos(a), math.sin(a)] for a in angles], dtype=torch.float32)


def test_consistency_formula_and_frame_weighting():
    static = formulas.consistency(unit([0.3] * 5))
    assert static.count == 4 and abs(static.video_value - 1) < 1e-6
    # frames at 0, 60, 120 degrees: pairs (cos60 + cos60)/2 and (cos60 + cos120 -> 0)/2
    v = formulas.consistency(unit([0, math.pi / 3, 2 * math.pi / 3]))
    assert v.total == pytest.approx(0.5 + 0.25, abs=1e-6) and v.count == 2
    short = formulas.PairSums(1.0, 1)  # one pair of value 1; the long video's mean is 0.375
    assert formulas.frame_weighted([short, v]) == pytest.approx((1.0 + 0.75) / 3)
    assert formulas.frame_weighted([short, v]) != pytest.approx(np.mean([short.video_value, v.video_value]))


def test_i2v_score_is_max_conformity_plus_mean_and_min_of_consecutive():
    img = torch.tensor([1.0, 0.0])
    frames = unit([0.0, 0.2, 0.5, 0.5])
    conformity_max = 1.0
    consec = [math.cos(0.2), math.cos(0.3), 1.0]
    want = 0.4 * conformity_max + 0.3 * np.mean(consec) + 0.3 * min(consec)
    assert formulas.i2v_score(img, frames) == pytest.approx(want, abs=1e-6)
    assert formulas.i2v_score(img, unit([math.pi, math.pi])) == pytest.approx(0.4 * 0 + 0.3 + 0.3, abs=1e-6)  # clamped


def test_temporal_flickering_closed_form():
    static = np.full((6, 4, 4, 3), 77, dtype=np.uint8)
    assert formulas.temporal_flickering(static) == 1.0
    alternating = np.stack([np.full((4, 4, 3), 100 + 10 * (i % 2), dtype=np.uint8) for i in range(6)])
    assert formulas.temporal_flickering(alternating) == pytest.approx((255 - 10) / 255)


# -- networks from fabricated files in the official layouts --------------------------------------------------
@pytest.fixture(scope="module")
def dino_file(tmp_path_factory):
    import timm

    torch.manual_seed(0)
    vit = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path_factory.mktemp("dino") / "dino_vitbase16_pretrain.pth"
    torch.save(vit.state_dict(), path)  # facebookresearch/dino's keys: cls_token, pos_embed, patch_embed, blocks, norm
    return str(path), vit.eval()


def test_dino_reads_the_official_file_and_gives_the_normed_cls(dino_file):
    path, vit = dino_file
    dino = DINOFeatures(path)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(dino(x), vit.forward_features(x)[:, 0], atol=1e-5)  # CLS after the final LayerNorm
        assert dino(torch.randn(1, 3, 224, 320)).shape == (1, 768)  # 14 x 20 grid: DINO's position interpolation


def test_dino_refuses_other_files(tmp_path):
    torch.save({"head.weight": torch.zeros(2, 2)}, tmp_path / "x.pth")
    with pytest.raises(PriorswapError, match="do not fit DINO ViT-B/16"):
        DINOFeatures(str(tmp_path / "x.pth"))
    with pytest.raises(PriorswapError, match="dino_vitbase16_pretrain.pth"):
        DINOFeatures(str(tmp_path / "missing.pth"))


def test_openai_clip_archive_loads_as_fp32_with_fp16_rounded_weights(tmp_path):
    ref = openai_archive(str(tmp_path / "ViT-B-32.pt"))
    clip = load_openai_clip(str(tmp_path / "ViT-B-32.pt"))
    w = clip.visual.conv1.weight
    assert w.dtype == torch.float32 and torch.equal(w, ref.visual.conv1.weight.half().float())
    ref.load_state_dict({k: v.half().float() for k, v in ref.state_dict().items()})
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(clip.encode_image(x), ref.eval().encode_image(x), atol=1e-5)


def test_aesthetic_head_is_linear_on_the_normalised_embedding(tmp_path):
    lin = nn.Linear(768, 1)
    torch.save(lin.state_dict(), tmp_path / "sa_0_4_vit_l_14_linear.pth")
    head = AestheticHead(str(tmp_path / "sa_0_4_vit_l_14_linear.pth"))
    e = torch.randn(3, 768) * 5
    with torch.no_grad():
        assert torch.allclose(head(e), lin(e / e.norm(dim=-1, keepdim=True)).squeeze(-1), atol=1e-6)


# -- dimensions on synthetic videos -----------------------------------------------------------------------
def test_static_video_is_perfectly_consistent(dino_file, tmp_path):
    dino = DINOFeatures(dino_file[0])
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    static = np.stack([frame] * 4)
    s = dimensions.subject_consistency(dino, static)
    assert s.count == 3 and abs(s.video_value - 1) < 1e-5
    assert dimensions.temporal_flickering(static) == 1.0
    openai_archive(str(tmp_path / "c.pt"))
    clip = load_openai_clip(str(tmp_path / "c.pt"))
    b = dimensions.background_consistency(clip, static)
    assert abs(b.video_value - 1) < 1e-5
    # the input image equal to frame 0: not identical embeddings (PIL vs tensor bicubic), but close
    score = dimensions.i2v_subject(dino, Image.fromarray(frame), static)
    assert 0.9 < score <= 1.0 + 1e-6
    moving = np.stack([np.roll(frame, 8 * i, axis=1) for i in range(4)])
    assert dimensions.subject_consistency(dino, moving).video_value < s.video_value


def test_aesthetic_quality_is_the_mean_score_over_frames_divided_by_10(tmp_path):
    import torch.nn.functional as F

    clip = (
        load_openai_clip(str(tmp_path / "c.pt")) if openai_archive(str(tmp_path / "c.pt"), seed=1) is not None else None
    )
    lin = nn.Linear(768, 1)
    torch.save(lin.state_dict(), tmp_path / "head.pth")
    head = AestheticHead(str(tmp_path / "head.pth"))
    head.linear = nn.Linear(32, 1)  # the tiny CLIP embeds in 32 dimensions
    frames = np.random.default_rng(1).integers(0, 255, (5, 32, 48, 3), dtype=np.uint8)
    with torch.no_grad():
        emb = clip.encode_image(dimensions.clip_frames(frames))
        want = (head.linear(F.normalize(emb, dim=-1)).squeeze(-1) / 10).mean().item()
    assert dimensions.aesthetic_quality(clip, head, frames, batch_size=2) == pytest.approx(want, abs=1e-6)


# -- dynamic degree ---------------------------------------------------------------------------------------
def test_raft_things_file_maps_onto_torchvision_raft_large(tmp_path):
    from priorswap.toolkit.vbench.raft import load_raft

    tv, state = original_raft_state()
    assert len(state) == 179 and "module.update_block.gru.convq2.weight" in state  # as raft-things.pth
    torch.save(state, tmp_path / "raft-things.pth")
    raft = load_raft(str(tmp_path / "raft-things.pth"))
    for k, v in tv.state_dict().items():
        assert torch.equal(raft.state_dict()[k], v), k
    del state["module.fnet.conv1.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(PriorswapError, match="do not fit RAFT-large"):
        load_raft(str(tmp_path / "broken.pth"))


def test_dynamic_degree_rule():
    from priorswap.toolkit.vbench.raft import is_dynamic, pad8, top5_magnitude

    flow = torch.zeros(1, 2, 20, 20)
    flow[0, 0, :2, :10] = 3.0  # 20 of 400 pixels move by (3, 4): the top 5% (20 values) have magnitude 5
    flow[0, 1, :2, :10] = 4.0
    assert top5_magnitude(flow) == pytest.approx(5.0)
    # 256 px: threshold 6 px; 16 frames need round(4) = 4 moving pairs; 10 frames round(2.5) = 2 (half to even)
    assert is_dynamic([7.0] * 4 + [0.0] * 11, 256, 256, 16) and not is_dynamic([7.0] * 3 + [0.0] * 12, 256, 256, 16)
    assert is_dynamic([7.0, 7.0] + [0.0] * 7, 256, 256, 10) and not is_dynamic([6.0] * 9, 256, 256, 10)  # strict >
    assert is_dynamic([3.5] * 15, 128, 200, 16)  # threshold 6 * 128 / 256 = 3
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    padded = pad8(x)
    assert padded.shape[-2:] == (8, 8) and torch.equal(padded[..., 1:6, 1:7], x)  # split evenly, edges replicated


def test_dynamic_degree_runs_on_frames_and_refuses_small_ones(tmp_path):
    from priorswap.toolkit.vbench.raft import dynamic_degree, load_raft, pair_scores

    _, state = original_raft_state()
    torch.save(state, tmp_path / "raft-things.pth")
    raft = load_raft(str(tmp_path / "raft-things.pth"))
    frames = np.random.default_rng(0).integers(0, 255, (6, 128, 136, 3), dtype=np.uint8)
    scores, n = pair_scores(raft, frames, fps=16)  # every second frame: 3 frames, 2 pairs
    assert n == 3 and len(scores) == 2 and all(s >= 0 for s in scores)
    assert isinstance(dynamic_degree(raft, frames, fps=8), bool)
    with pytest.raises(PriorswapError, match="at least 128x128"):
        pair_scores(raft, frames[:, :64, :64], fps=8)


def test_imaging_quality_matches_vbench_loop_on_pyiqa(tmp_path):
    pytest.importorskip("pyiqa", reason="imaging quality needs pyiqa (pip install 'priorswap[vbench]')")
    from pyiqa.archs.musiq_arch import MUSIQ
    from torchvision import transforms

    from priorswap.toolkit.vbench.networks import load_musiq

    from vbench_factories import musiq_file

    musiq_file(str(tmp_path / "musiq_spaq_ckpt-358bb6af.pth"))
    ours = load_musiq(str(tmp_path / "musiq_spaq_ckpt-358bb6af.pth"))
    frames = np.random.default_rng(0).integers(0, 255, (2, 400, 600, 3), dtype=np.uint8)  # longer side > 512
    value = dimensions.imaging_quality(ours, frames)
    ref = MUSIQ(pretrained_model_path=str(tmp_path / "musiq_spaq_ckpt-358bb6af.pth"))  # pyiqa's own loading
    ref.training = False  # VBench's exact setting (not .eval())
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = transforms.Resize(size=(int(512 / 600 * 400), int(512 / 600 * 600)), antialias=False)(x) / 255.0
    with torch.no_grad():
        want = sum(float(ref(x[i : i + 1])) for i in range(len(x))) / len(x)
    assert value == pytest.approx(want, abs=1e-5)
    torch.save({"head.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(PriorswapError, match="do not fit pyiqa's MUSIQ"):
        load_musiq(str(tmp_path / "bad.pth"))
