"""Motion Smoothness: the AMT-S port against a reference made by upstream's own code, its strict loading, and
VBench's per-video rule in closed form (a stub interpolator).

``fixtures/amt_upstream.npz`` was made once with VBench at commit 45e79ec (``vbench/third_party/amt``, run from a
scratch copy with yaml standing in for omegaconf): ``build_from_cfg(cfgs/AMT-S.yaml)``, weights from
``vbench_factories.fabricated_amt`` on upstream's own ``state_dict()`` names and shapes (seed 0), saved as
``{'epoch', 'state_dict', 'optim'}`` and loaded by upstream's ``load_state_dict``. It holds the weights' per-tensor
L1 norms (sorted names); for the pairs ``amt_pattern(h, w, 0)`` / ``amt_pattern(h, w, 6)`` at 256x256 and 201x137,
upstream's ``model(InputPadder(16).pad(img2tensor(...)), embt=0.5, scale_factor=1.0, eval=True)['imgt_pred']``,
unpadded: its 8x8 corners and its row and column means per channel; and for the 16-frame 136x150 video
``amt_pattern(136, 150, 2 t)`` (written as PNGs, read back by VBench), ``MotionSmoothness(..., 'cpu').motion_score``
and its 7 ``get_diff`` values. On the machine that made it the port gave the same numbers to the bit.
"""

import os

import numpy as np
import pytest
import torch

from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.vbench import amt as A
from priorswap.toolkit.vbench.amt_net import AMTS

from repo_paths import FIXTURES
from vbench_factories import amt_file, amt_pattern, amt_state

REF = os.path.join(FIXTURES, "amt_upstream.npz")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("amt") / "amt-s.pth"
    amt_file(str(path))
    return str(path)


@pytest.fixture(scope="module")
def model(weights):
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return A.load_amt(weights)


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(REF))


def test_recipe_and_architecture_match_upstream(ref):
    state = amt_state()
    assert len(state) == 213 and sum(v.numel() for v in state.values()) == 2_990_543  # upstream's AMT-S
    got = np.array([state[k].double().abs().sum().item() for k in sorted(state)])
    np.testing.assert_allclose(got, ref["weight_l1"], rtol=1e-6)


@pytest.mark.parametrize("name,size", [("p256", (256, 256)), ("p201x137", (201, 137))])
def test_interpolation_matches_upstream(model, ref, name, size):
    h, w = size
    x = [torch.from_numpy(amt_pattern(h, w, s)).permute(2, 0, 1)[None] / 255.0 for s in (0, 6)]
    (a, b), pads = zip(*[A.pad16(t) for t in x])
    assert pads[0] == {(256, 256): (0, 0, 0, 0), (201, 137): (3, 4, 3, 4)}[size]  # extra pixel after, as InputPadder
    with torch.no_grad():
        out = model(a, b, 0.5, 1.0)
    l, r, t, bt = pads[0]
    u = out[0, :, t : out.shape[2] - bt, l : out.shape[3] - r].double()
    assert u.shape == (3, h, w)
    np.testing.assert_allclose(u[:, :8, :8].numpy(), ref[f"{name}_first"], atol=1e-5)
    np.testing.assert_allclose(u[:, -8:, -8:].numpy(), ref[f"{name}_last"], atol=1e-5)
    np.testing.assert_allclose(u.mean(2).numpy(), ref[f"{name}_rows"], atol=1e-6)
    np.testing.assert_allclose(u.mean(1).numpy(), ref[f"{name}_cols"], atol=1e-6)


def test_video_score_matches_vbench(model, ref):
    frames = np.stack([amt_pattern(136, 150, 2 * t) for t in range(16)])
    mids = A.interpolated(model, frames)
    assert len(mids) == 7 and all(m.shape == (136, 150, 3) and m.dtype == np.uint8 for m in mids)
    diffs = [np.mean(np.abs(frames[2 * i + 1].astype(int) - m.astype(int))) for i, m in enumerate(mids)]
    np.testing.assert_allclose(diffs, ref["video_pair_diffs"], atol=2e-3)  # a level on ~100 of 61,200 values
    assert A.smoothness_score(frames, mids) == pytest.approx(float(ref["video_score"]), abs=1e-5)


class Midpoint:
    """An interpolator that returns the exact average of its two frames (what a perfect one gives for linear
    motion of brightness); it records the pairs it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, a, b, t, scale):
        self.calls.append((a.clone(), b.clone(), t, scale))
        return (a + b) / 2


def test_rule_even_inputs_odd_targets_frame_15_unused():
    # frame k is constant k * 10: the exact midpoint of frames 2i and 2i + 2 equals frame 2i + 1
    frames = np.stack([np.full((120, 130, 3), 10 * k, np.uint8) for k in range(16)])
    frames[15] = 255  # never compared (frame 15 of 16)
    stub = Midpoint()
    assert A.motion_smoothness(stub, frames) == 1.0
    assert len(stub.calls) == 7  # pairs (0, 2), ..., (12, 14)
    for i, (a, b, t, scale) in enumerate(stub.calls):
        assert a.shape == (1, 3, 128, 144)  # padded to multiples of 16, replicate
        assert torch.allclose(a, torch.full_like(a, 20 * i / 255.0)) and torch.allclose(
            b, torch.full_like(b, (20 * i + 20) / 255.0)
        )
        assert t == 0.5 and scale == 1.0


def test_rule_truncates_and_averages_absdiff():
    # midpoints of (0, 3): 1.5 -> tensor2img truncates to 1; the odd frame is 2, so |2 - 1| = 1 everywhere
    frames = np.zeros((3, 128, 128, 3), np.uint8)
    frames[1], frames[2] = 2, 3
    assert A.motion_smoothness(Midpoint(), frames) == (255.0 - 1.0) / 255.0
    mids = [np.full((128, 128, 3), 9, np.uint8), np.full((128, 128, 3), 9, np.uint8)]
    odd = np.zeros((5, 128, 128, 3), np.uint8)
    odd[1] = 7  # |7 - 9| = 2 (absdiff, not a wrapped uint8 difference)
    odd[3, :64] = 13  # |13 - 9| = 4 on half the pixels, 9 on the other half: mean 6.5
    assert A.smoothness_score(odd, mids) == (255.0 - (2 + 6.5) / 2) / 255.0


def test_static_video_scores_one(model):
    frames = np.repeat(amt_pattern(128, 128, 0)[None], 5, 0)
    score = A.motion_smoothness(model, frames)  # fabricated weights need not reproduce a still frame
    assert 0.0 <= score <= 1.0
    assert A.motion_smoothness(Midpoint(), frames) == 1.0  # the formula: 255 - 0 over 255


def test_unpad_crops_the_replicated_border():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7) / 300
    padded, pads = A.pad16(x)
    assert padded.shape[-2:] == (16, 16) and pads == (4, 5, 5, 6)
    assert torch.equal(padded[..., 0, 0], x[..., 0, 0]) and torch.equal(padded[..., -1, -1], x[..., -1, -1])
    np.testing.assert_array_equal(A.to_uint8(padded[:1], pads), (x[0] * 255).permute(1, 2, 0).numpy().astype(np.uint8))


def test_loads_official_layout_and_bare_state_dict_strictly(weights, tmp_path):
    m = A.load_amt(weights)
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    bare = tmp_path / "bare.pth"
    torch.save(amt_state(), bare)
    torch.testing.assert_close(A.load_amt(str(bare)).state_dict(), m.state_dict())


def _one_line(fn, *needles):
    with pytest.raises(PriorswapError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg


def test_bad_weights_are_one_line(tmp_path):
    _one_line(lambda: A.load_amt(str(tmp_path / "none.pth")), "none.pth", "expected amt-s.pth")
    state = amt_state()
    state.pop("comb_block.2.bias")
    torch.save({"state_dict": state}, tmp_path / "missing.pth")
    _one_line(lambda: A.load_amt(str(tmp_path / "missing.pth")), "missing.pth", "comb_block.2.bias", "amt-s.pth")
    torch.save({"state_dict": AMTS().state_dict() | {"extra.weight": torch.zeros(1)}}, tmp_path / "extra.pth")
    _one_line(lambda: A.load_amt(str(tmp_path / "extra.pth")), "extra.pth", "extra.weight")
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "other.pth")
    _one_line(lambda: A.load_amt(str(tmp_path / "other.pth")), "other.pth", "do not fit AMT-S")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    _one_line(lambda: A.load_amt(str(tmp_path / "junk.pth")), "junk.pth", "could not be read")


def test_bad_frames_are_one_line():
    stub = Midpoint()
    _one_line(lambda: A.motion_smoothness(stub, np.zeros((2, 128, 128, 3), np.uint8)), "at least 3 frames")
    _one_line(lambda: A.motion_smoothness(stub, np.zeros((5, 112, 200, 3), np.uint8)), "at least 113x113", "112x200")
    _one_line(lambda: A.motion_smoothness(stub, np.zeros((5, 128, 128, 3), np.float32)), "uint8")
    assert A.motion_smoothness(stub, np.zeros((3, 113, 113, 3), np.uint8)) == 1.0  # pads to 128: the smallest allowed
