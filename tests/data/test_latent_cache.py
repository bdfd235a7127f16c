"""Latent cache: both flips stored, reuse without re-encoding, crash-resume, rank sharding, datamodule glue."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from priorswap.data import (
    CachedLatentDataset,
    Food101DataModule,
    ImageFolderDataModule,
    build_latent_cache,
    is_complete,
)
from priorswap.toolkit.errors import PriorswapError

try:
    from tests.fakedata import make_food101, make_image_folder
except ImportError:
    from fakedata import make_food101, make_image_folder


class FakeVAE:
    """Average-pools by 4 as the 'mean' and a positive function of it as 'std'; counts its calls."""

    def __init__(self, fail_at_call: int | None = None):
        self.calls, self.fail_at_call = 0, fail_at_call

    def __call__(self, pixels):
        self.calls += 1
        if self.fail_at_call is not None and self.calls >= self.fail_at_call:
            raise KeyboardInterrupt("simulated kill")
        mean = F.avg_pool2d(pixels, 4)  # (B, 3, H/4, W/4)
        return mean, 0.1 + mean.abs()


class Pixels(Dataset):
    """n seeded random images; item `bad` (if any) is unreadable (None)."""

    def __init__(self, n=12, bad=None):
        self.x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
        self.bad = bad

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return None if i == self.bad else {"pixels": self.x[i], "label": torch.tensor(i % 3)}


def _load(folder):
    ds = CachedLatentDataset(folder, flip=False)
    return ds.indices, ds.labels, torch.stack([ds[i]["latent_mean"] for i in range(len(ds))])


def test_both_flips_and_std_are_stored(tmp_path):
    data = Pixels(bad=5)
    assert build_latent_cache(tmp_path, data, FakeVAE(), batch_size=4, chunk_size=5)
    ds = CachedLatentDataset(tmp_path, flip=False)
    assert len(ds) == 11 and 5 not in ds.indices  # the unreadable item is left out
    assert json.loads((tmp_path / "complete.json").read_text())["skipped"] == 1
    item = ds[ds.indices.index(7)]
    expected = F.avg_pool2d(data.x[7:8], 4)[0]
    torch.testing.assert_close(item["latent_mean"], expected)
    torch.testing.assert_close(item["latent_std"], 0.1 + expected.abs())
    assert item["label"] == 7 % 3 and item["label"].dtype == torch.long
    flipping = CachedLatentDataset(tmp_path, flip=True)
    torch.manual_seed(0)
    seen = [flipping[ds.indices.index(7)]["latent_mean"] for _ in range(20)]
    assert any(torch.equal(s, expected) for s in seen)
    assert any(torch.allclose(s, F.avg_pool2d(data.x[7:8].flip(-1), 4)[0]) for s in seen)
    assert all(torch.equal(ds[3]["latent_mean"], ds[3]["latent_mean"]) for _ in range(3))  # no flip: fixed


def test_reuse_does_not_encode_again(tmp_path):
    first, second = FakeVAE(), FakeVAE()
    assert build_latent_cache(tmp_path, Pixels(), first, batch_size=4, chunk_size=4)
    assert first.calls == 3
    assert build_latent_cache(tmp_path, Pixels(), second, batch_size=4, chunk_size=4)
    assert second.calls == 0


def test_killed_encode_leaves_no_complete_cache_and_resumes(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        build_latent_cache(tmp_path, Pixels(), FakeVAE(fail_at_call=3), batch_size=2, chunk_size=4)
    assert not is_complete(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("chunk-*")) == ["chunk-000000.safetensors"]
    with pytest.raises(PriorswapError, match="not complete"):
        CachedLatentDataset(tmp_path)
    resumed = FakeVAE()
    assert build_latent_cache(tmp_path, Pixels(), resumed, batch_size=2, chunk_size=4)
    assert resumed.calls == 4  # only chunks 1 and 2, two batches each
    assert not list(tmp_path.glob(".*.tmp"))
    fresh = tmp_path.parent / "fresh"
    build_latent_cache(fresh, Pixels(), FakeVAE(), batch_size=2, chunk_size=4)
    for a, b in zip(_load(tmp_path), _load(fresh)):
        assert a == b if isinstance(a, list) else torch.equal(a, b)


def test_two_ranks_make_the_same_cache_as_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    single = FakeVAE()
    assert build_latent_cache(one, Pixels(n=10), single, batch_size=2, chunk_size=3)
    rank0, rank1 = FakeVAE(), FakeVAE()
    assert not build_latent_cache(two, Pixels(n=10), rank0, rank=0, world_size=2, batch_size=2, chunk_size=3)
    assert not is_complete(two)  # rank 1's chunks are still missing
    assert build_latent_cache(two, Pixels(n=10), rank1, rank=1, world_size=2, batch_size=2, chunk_size=3)
    # chunks of 3, 3, 3, 1 items: rank 0 encodes chunks 0 and 2 (4 batches), rank 1 chunks 1 and 3 (3 batches)
    assert (rank0.calls, rank1.calls, single.calls) == (4, 3, 7)
    for a, b in zip(_load(one), _load(two)):
        assert a == b if isinstance(a, list) else torch.equal(a, b)
    with pytest.raises(PriorswapError, match="rank"):
        build_latent_cache(tmp_path / "x", Pixels(), FakeVAE(), rank=2, world_size=2)


def test_datamodule_serves_cached_latents_keyed_on_encoder_and_classes(tmp_path):
    root = make_food101(tmp_path / "food", classes=3, per_class=4)
    cache = str(tmp_path / "cache")
    dm = Food101DataModule(root, resolution=16, batch_size=4, num_workers=0, latent_cache=cache)
    with pytest.raises(PriorswapError, match="build_latent_cache"):
        dm.train_dataloader()
    vae = FakeVAE()
    folders = dm.build_latent_cache(vae, "fake-vae", batch_size=8)
    assert vae.calls == 3  # 12 train items in 2 batches + 6 val items in 1; both flips go in one call
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"latent_mean", "latent_std", "label"}
    assert batch["latent_mean"].shape == (4, 3, 4, 4) and batch["latent_std"].min() > 0
    assert len(next(iter(dm.val_dataloader()))["label"]) == 4

    again = FakeVAE()
    Food101DataModule(root, resolution=16, num_workers=0, latent_cache=cache).build_latent_cache(again, "fake-vae")
    assert again.calls == 0
    other_encoder = Food101DataModule(root, resolution=16, num_workers=0, latent_cache=cache)
    assert other_encoder.latent_cache_dir("train", "other-vae") != folders["train"]
    subset = Food101DataModule(root, resolution=16, num_workers=0, latent_cache=cache, classes=[0, 2])
    assert subset.latent_cache_dir("train", "fake-vae") != folders["train"]
    other_res = Food101DataModule(root, resolution=32, num_workers=0, latent_cache=cache)
    assert other_res.latent_cache_dir("train", "fake-vae") != folders["train"]


def test_half_precision_storage(tmp_path):
    assert build_latent_cache(tmp_path, Pixels(), FakeVAE(), dtype="float16")
    item = CachedLatentDataset(tmp_path, flip=False)[2]
    assert item["latent_mean"].dtype == torch.float32  # stored half, served float
    torch.testing.assert_close(item["latent_mean"], F.avg_pool2d(Pixels().x[2:3], 4)[0], atol=1e-3, rtol=1e-3)
    with pytest.raises(PriorswapError, match="dtype"):
        build_latent_cache(tmp_path / "x", Pixels(), FakeVAE(), dtype="int8")


def test_restored_split_rekeys_the_cache(tmp_path):
    root = make_image_folder(tmp_path / "img", classes=2, per_class=6)
    kwargs = dict(resolution=8, batch_size=16, num_workers=0, val_fraction=0.5, latent_cache=str(tmp_path / "c"))
    saved = ImageFolderDataModule(root, seed=1, **kwargs).state_dict()
    dm = ImageFolderDataModule(root, seed=2, **kwargs)
    dm.setup()
    before = dm.build_latent_cache(FakeVAE(), "fake-vae")["train"]
    dm.load_state_dict(saved)  # what Lightning does after setup when resuming
    assert dm.split == saved["split"] and dm._latent_dirs["train"] != before
    served = CachedLatentDataset(dm._latent_dirs["train"])
    assert sorted(served.indices) == list(range(len(saved["split"]["train"])))


def test_leftovers_of_killed_atomic_writes_are_removed_when_the_cache_completes(tmp_path):
    from priorswap.toolkit.files import _temp_name

    tmp_path.mkdir(exist_ok=True)
    leftover = _temp_name(str(tmp_path / "chunk-000000.safetensors"))  # what a SIGKILLed chunk writer leaves
    open(leftover, "wb").close()
    assert build_latent_cache(tmp_path, Pixels(), FakeVAE(), batch_size=4, chunk_size=4)
    assert not os.path.exists(leftover) and not list(tmp_path.glob(".*.tmp"))
