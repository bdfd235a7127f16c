"""KID (unbiased MMD² under the cubic polynomial kernel) against torchmetrics' implementation and its defining property."""

import pytest
import torch
from torchmetrics.image.kid import poly_mmd

from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.metrics import KIDReference, kernel_inception_distance


@pytest.mark.parametrize("d", [4, 32])
def test_equals_torchmetrics_poly_mmd_on_equal_sizes(d):
    g = torch.Generator().manual_seed(d)
    x = torch.randn(60, d, generator=g, dtype=torch.float64)
    y = torch.randn(60, d, generator=g, dtype=torch.float64) * 1.3 + 0.2
    ours = kernel_inception_distance(x, y)
    theirs = float(poly_mmd(y, x))  # torchmetrics: (real, fake), gamma 1/d, coef 1, degree 3
    assert ours == pytest.approx(theirs, rel=1e-10, abs=1e-12)
    assert ours > 0


def test_unbiased_for_unequal_sizes():
    """Same distribution, m != n: the estimator averages to 0 (the plug-in V-statistic would be clearly positive)."""
    g = torch.Generator().manual_seed(0)
    vals = []
    for _ in range(300):
        vals.append(kernel_inception_distance(torch.randn(20, 6, generator=g), torch.randn(45, 6, generator=g)))
    v = torch.tensor(vals, dtype=torch.float64)
    assert abs(float(v.mean())) < 3 * float(v.std()) / len(v) ** 0.5
    shifted = kernel_inception_distance(torch.randn(20, 6, generator=g) + 1.0, torch.randn(45, 6, generator=g))
    assert shifted > float(v.mean()) + 5 * float(v.std())


def test_symmetric_and_reference_is_reusable():
    g = torch.Generator().manual_seed(1)
    x, y, z = (torch.randn(n, 8, generator=g) for n in (30, 50, 70))
    assert kernel_inception_distance(x, y) == pytest.approx(kernel_inception_distance(y, x), rel=1e-12)
    ref = KIDReference(y)
    assert ref.kid(x) == pytest.approx(kernel_inception_distance(x, y), rel=1e-12)
    assert ref.kid(z) == pytest.approx(kernel_inception_distance(z, y), rel=1e-12)


def test_bad_shapes_are_one_line():
    with pytest.raises(PriorswapError, match="at least 2"):
        kernel_inception_distance(torch.randn(1, 4), torch.randn(5, 4))
    with pytest.raises(PriorswapError, match="4-d but the reference's are 3-d"):
        KIDReference(torch.randn(5, 3)).kid(torch.randn(5, 4))
