"""Offline, CPU-only test set-up: no hub access, few threads, and skip reasons for gpu/hub markers."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is available on this machine")
    no_hub = pytest.mark.skip(
        reason="needs pretrained weights from the Hugging Face hub; set PRIORSWAP_HUB_TESTS=1 on a machine that can reach it"
    )
    no_real = pytest.mark.skip(
        reason="true-size models take minutes and ~20 GB of memory on a CPU; set PRIORSWAP_REAL_SIZE=1 to run them"
    )
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if "hub" in item.keywords and os.environ.get("PRIORSWAP_HUB_TESTS") != "1":
            item.add_marker(no_hub)
        if "slow_real_size" in item.keywords and os.environ.get("PRIORSWAP_REAL_SIZE") != "1":
            item.add_marker(no_real)
