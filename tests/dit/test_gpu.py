"""On a CUDA device: the same seeds give the same samples as on the CPU, vanilla and swapped, and bf16 runs.

Skipped without CUDA (this project's CI machine has none); run with ``python -m pytest -m gpu`` on a GPU machine.
"""

import pytest
import torch

from priorswap.toolkit.api import sample_dit
from priorswap.toolkit.images import to_uint8

from factories import save_dit_pipeline

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    return save_dit_pipeline(str(root / "ft"), num_classes=10, seed=1), save_dit_pipeline(
        str(root / "base"), num_classes=1000
    )


@pytest.mark.parametrize("swapped", [False, True])
def test_cuda_samples_match_cpu_samples(pair, swapped):
    ft, base = pair
    kw = dict(labels=[0, 3, 7], guidance_scale=3.0, steps=6, seed=11, prior=base if swapped else None, progress=False)
    cpu = sample_dit(ft, device="cpu", **kw)
    gpu = sample_dit(ft, device="cuda", **kw).cpu()
    # per-sample noise is drawn on the CPU, so only kernel rounding differs (TF32 off by default in torch)
    assert (to_uint8(cpu).astype(int) - to_uint8(gpu).astype(int)).__abs__().max() <= 2


def test_bf16_on_cuda_runs_and_stays_close(pair):
    ft, base = pair
    kw = dict(labels=[1, 2], guidance_scale=1.5, steps=4, seed=0, prior=base, progress=False, device="cuda")
    fp32 = sample_dit(ft, **kw).cpu()
    bf16 = sample_dit(ft, dtype=torch.bfloat16, **kw).float().cpu()
    assert torch.isfinite(bf16).all() and (fp32 - bf16).abs().mean() < 0.05
