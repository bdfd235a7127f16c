"""Fréchet distance, streaming feature statistics, Inception Score and the reference-stats cache."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import scipy.linalg
import torch

from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.metrics import FeatureStats, feature_stats, frechet_distance, inception_score, reference_stats
from priorswap.toolkit.metrics.extractor import FeatureExtractor


def random_spd(d: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((d, d + 3))
    return a @ a.T / d + 1e-3 * np.eye(d)


def scipy_fd(mu1, s1, mu2, s2) -> float:
    """The pytorch-fid formula with scipy's general matrix square root."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fd_matches_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    v1, v2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_fd_matches_closed_form_for_commuting_covariances():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    v1, v2 = rng.uniform(0.1, 3, 12), rng.uniform(0.1, 3, 12)
    s1, s2 = q @ np.diag(v1) @ q.T, q @ np.diag(v2) @ q.T
    mu = rng.standard_normal(12)
    expected = ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu, s1, mu, s2) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("d", [3, 32, 128])
def test_fd_matches_scipy_sqrtm_on_random_spd(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d) * 0.1
    s1, s2 = random_spd(d, rng), random_spd(d, rng)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(scipy_fd(mu1, s1, mu2, s2), rel=1e-6)


def test_fd_rank_deficient_covariance_uses_eigh_fallback():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 20))
    s1 = np.cov(x, rowvar=False)  # rank 5: Cholesky fails, eigh square root used
    s2 = random_spd(20, rng)  # SPD: Cholesky path
    mu1, mu2 = rng.standard_normal(20), rng.standard_normal(20)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-7)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(scipy_fd(mu1, s1, mu2, s2), rel=1e-5)


def test_fd_of_a_gaussian_with_itself_is_zero_and_accepts_tensors():
    rng = np.random.default_rng(2)
    s = torch.from_numpy(random_spd(20, rng))
    mu = torch.randn(20)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-9


def test_fd_shape_mismatch_is_one_line_error():
    with pytest.raises(PriorswapError) as e:
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    assert "\n" not in str(e.value) and "(3,)" in str(e.value)


def test_feature_stats_is_mean_and_unbiased_covariance():
    x = np.random.default_rng(3).standard_normal((50, 7))
    mu, sigma = feature_stats(torch.from_numpy(x))
    np.testing.assert_allclose(mu.numpy(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)
    assert mu.dtype == torch.float64


def test_streaming_stats_equal_batch_stats_and_merge_equals_whole():
    x = torch.randn(101, 9, dtype=torch.float32) * 3 + 5
    whole = FeatureStats(9)
    for chunk in torch.split(x, 17):
        whole.add(chunk)
    mu, sigma = feature_stats(x)
    s_mu, s_sigma = whole.mean_cov()
    torch.testing.assert_close(s_mu, mu, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s_sigma, sigma, rtol=1e-9, atol=1e-9)

    a, b = FeatureStats(9).add(x[:40]), FeatureStats(9).add(x[40:])
    merged = a.merge(b)
    assert merged.n == 101
    torch.testing.assert_close(merged.mean_cov()[1], s_sigma, rtol=1e-9, atol=1e-9)

    # what a DDP all_reduce(SUM) of the two states gives
    rank0, rank1 = FeatureStats(9).add(x[:40]).state(), b.state()
    summed = {k: rank0[k] + rank1[k] for k in rank0}
    rebuilt = FeatureStats.from_state(summed)
    assert rebuilt.n == 101
    assert rebuilt.frechet_to(whole) == pytest.approx(0.0, abs=1e-8)


def test_feature_stats_frechet_to_matches_function():
    x, y = torch.randn(64, 5), torch.randn(64, 5) + 1
    fx, fy = FeatureStats(5).add(x), FeatureStats(5).add(y)
    assert fx.frechet_to(fy) == pytest.approx(frechet_distance(*feature_stats(x), *feature_stats(y)), rel=1e-9)
    with pytest.raises(PriorswapError):
        fx.add(torch.randn(3, 4))


def test_inception_score_uniform_logits_is_one():
    mean, std = inception_score(torch.zeros(40, 10), splits=4)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_one_hot_distinct_classes_is_number_of_classes():
    k = 8
    logits = torch.full((k, k), -1e4)
    logits[torch.arange(k), torch.arange(k)] = 0.0
    assert inception_score(logits, splits=1)[0] == pytest.approx(k, rel=1e-9)
    # two splits, each holding all 8 classes once: IS = 8 in both, std 0
    mean, std = inception_score(torch.cat([logits, logits]), splits=2)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    # each split sees 4 distinct classes -> 4
    assert inception_score(logits, splits=2)[0] == pytest.approx(k / 2, rel=1e-9)


def test_inception_score_bad_splits():
    with pytest.raises(PriorswapError, match="splits=10"):
        inception_score(torch.zeros(5, 3), splits=10)


class CountingExtractor(FeatureExtractor):
    """Mean colour per channel: a cheap deterministic extractor that counts its calls."""

    name, dim = "counting-mean-rgb", 3

    def __init__(self):
        super().__init__()
        self.calls = 0

    def features(self, images):
        self.calls += 1
        return images.mean(dim=(2, 3))


def batches(n=24, b=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(b, 3, 8, 8, generator=g), torch.zeros(b)) for _ in range(n // b)]


def test_reference_stats_cached_and_reused(tmp_path):
    ex = CountingExtractor()
    key = {"dataset": "toy", "split": "train", "resolution": 8}
    first = reference_stats(ex, batches(), 20, str(tmp_path), key)
    assert ex.calls == 3 and first.n == 20
    files = [f for f in os.listdir(tmp_path)]
    assert len(files) == 1 and files[0].startswith("refstats-toy-train-8-") and files[0].endswith(".safetensors")

    def must_not_iterate():
        raise AssertionError("cache hit must not touch the data")
        yield

    second = reference_stats(ex, must_not_iterate(), 20, str(tmp_path), key)
    assert ex.calls == 3
    torch.testing.assert_close(second.mean_cov()[1], first.mean_cov()[1])
    # another num_samples or resolution is another cache entry
    reference_stats(ex, batches(), 16, str(tmp_path), key)
    reference_stats(ex, batches(), 16, str(tmp_path), {**key, "resolution": 16})
    assert ex.calls == 3 + 2 + 2 and len(os.listdir(tmp_path)) == 3


def test_reference_stats_write_is_atomic(tmp_path, monkeypatch):
    import safetensors.torch

    def crash_mid_write(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a header")
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(safetensors.torch, "save_file", crash_mid_write)
    with pytest.raises(KeyboardInterrupt):
        reference_stats(CountingExtractor(), batches(), 16, str(tmp_path), {"dataset": "toy"})
    assert not any(f.startswith("refstats-") for f in os.listdir(tmp_path))
    monkeypatch.undo()
    ex = CountingExtractor()
    reference_stats(ex, batches(), 16, str(tmp_path), {"dataset": "toy"})
    assert ex.calls == 2 and sum(f.startswith("refstats-") for f in os.listdir(tmp_path)) == 1


def test_reference_stats_too_few_images(tmp_path):
    with pytest.raises(PriorswapError, match="gave 24 images"):
        reference_stats(CountingExtractor(), batches(), 100, str(tmp_path), {"dataset": "toy"})
    assert os.listdir(tmp_path) == []
