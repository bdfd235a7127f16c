"""ADM center crop against hand-computed cases, and the seeded selection helpers."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
from PIL import Image

from priorswap.data.splits import limit_per_class, select_classes, stratified_split
from priorswap.data.transforms import AdmTransform, PadTransform, adm_center_crop
from priorswap.toolkit.errors import PriorswapError


def test_adm_crop_box_halves_twice_then_center_crops():
    # 24x16 image made of 4x4 constant blocks: two BOX halvings give exactly the 6x4 block grid
    # (a bicubic or bilinear halving would blur across blocks); short side 4 == res, so no resize;
    # center crop takes columns (6-4)//2 = 1 .. 4.
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)  # (rows, cols, RGB)
    image = Image.fromarray(blocks.repeat(4, axis=0).repeat(4, axis=1))  # (16, 24, 3)
    out = adm_center_crop(image, 4)
    assert out.size == (4, 4)
    np.testing.assert_array_equal(np.asarray(out), blocks[:, 1:5])


def test_adm_crop_bicubic_resize_of_short_side():
    # 10x7, res 4: 7 < 8 so no halving; scale 4/7 -> (round(5.71)=6, 4); crop left (6-4)//2 = 1
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (7, 10, 3), dtype=np.uint8))
    expected = image.resize((6, 4), Image.BICUBIC).crop((1, 0, 5, 4))
    np.testing.assert_array_equal(np.asarray(adm_center_crop(image, 4)), np.asarray(expected))


def test_adm_transform_range_rgb_and_flip():
    grey = Image.fromarray(np.tile(np.arange(0, 256, 32, dtype=np.uint8), (8, 1)))  # (8, 8) L mode
    plain = AdmTransform(8, flip=False)(grey)
    assert plain.shape == (3, 8, 8)
    assert plain.min() == -1.0 and plain[:, :, -1].max() == pytest.approx(224 / 127.5 - 1)
    torch.manual_seed(0)
    flips = [AdmTransform(8, flip=True)(grey) for _ in range(16)]
    assert any(torch.equal(f, plain) for f in flips) and any(torch.equal(f, plain.flip(-1)) for f in flips)


def test_pad_transform_keeps_pixels_and_pads_black():
    digit = Image.fromarray(np.full((28, 28), 255, dtype=np.uint8))
    out = PadTransform(2, 32, flip=False)(digit)
    assert out.shape == (1, 32, 32)
    assert out[:, 2:30, 2:30].eq(1).all() and out[:, :2].eq(-1).all() and out[:, :, 30:].eq(-1).all()
    assert PadTransform(2, 32, flip=False, channels=3)(digit).shape == (3, 32, 32)


def test_stratified_split_is_seeded_and_per_class():
    labels = [0] * 10 + [1] * 10 + [2] * 3
    train, val = stratified_split(labels, 0.2, seed=0)
    assert sorted(train + val) == list(range(23)) and not set(train) & set(val)
    assert [sum(labels[i] == c for i in val) for c in range(3)] == [2, 2, 1]
    assert stratified_split(labels, 0.2, seed=0) == (train, val)
    assert stratified_split(labels, 0.2, seed=1)[1] != val
    # a class's split does not depend on the other classes present
    only_first_two = stratified_split(labels[:20], 0.2, seed=0)[1]
    assert only_first_two == [i for i in val if i < 20]
    with pytest.raises(PriorswapError):
        stratified_split(labels, 1.0, seed=0)


def test_limit_and_select_classes():
    labels = [0, 1, 2, 3] * 5
    kept = limit_per_class(labels, 2, seed=3)
    assert len(kept) == 8 and all(sum(labels[i] == c for i in kept) == 2 for c in range(4))
    assert limit_per_class(labels, 2, seed=3) == kept and limit_per_class(labels, 2, seed=4) != kept
    idx, new = select_classes(labels, [3, 1], num_classes=4)
    assert [labels[i] for i in idx] == [1, 3] * 5 and new == [1, 0] * 5
    with pytest.raises(PriorswapError, match=r"\[0, 4\)"):
        select_classes(labels, [4], num_classes=4)
