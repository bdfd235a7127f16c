"""Hub ids on a machine that cannot reach the hub: one line at once, not 30 s of retries."""

import socket

import pytest

from priorswap.toolkit.core import hub
from priorswap.toolkit.core.loading import read_model_index
from priorswap.toolkit.errors import PriorswapError


@pytest.fixture
def online_mode_without_network(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for v in hub.PROXY_VARS:
        monkeypatch.delenv(v, raising=False)
    calls = []

    def no_network(address, timeout=None):
        calls.append(address)
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", no_network)
    return calls


def test_unreachable_hub_is_one_line_before_any_hub_request(online_mode_without_network, monkeypatch):
    from diffusers import DiffusionPipeline

    def must_not_run(*a, **k):
        raise AssertionError("huggingface_hub was asked although the hub is unreachable")

    monkeypatch.setattr(DiffusionPipeline, "load_config", must_not_run)
    with pytest.raises(PriorswapError) as e:
        read_model_index("someone/some-model")
    msg = str(e.value)
    assert "\n" not in msg and "huggingface.co cannot be reached (Name or service not known)" in msg
    assert "hf download someone/some-model --local-dir DIR" in msg
    assert online_mode_without_network == [("huggingface.co", 443)]


def test_probe_is_skipped_behind_a_proxy_or_when_offline(online_mode_without_network, monkeypatch):
    assert hub.unreachable_reason() is not None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert hub.unreachable_reason() is None  # a direct connection says nothing about a proxied one
    monkeypatch.delenv("HTTPS_PROXY")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hub.unreachable_reason() is None
    assert hub.cached("not a repo id!", "model_index.json") is False


def test_clip_metric_hub_id_offline_is_one_line(online_mode_without_network):
    from priorswap.toolkit.metrics import CLIPSimilarity

    with pytest.raises(
        PriorswapError, match="openai/clip-vit-large-patch14' is not a local folder, not in the hub cache"
    ):
        CLIPSimilarity("openai/clip-vit-large-patch14")
