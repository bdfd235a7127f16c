"""Loading failures say what they are (offline, unreachable, gated, not logged in, missing file), and errors
name models by full path or hub id."""

import os
import shutil

import pytest

from priorswap.toolkit.core.hub import hub_problem
from priorswap.toolkit.core.loading import read_model_index, scheduler_config
from priorswap.toolkit.core.pairing import pair
from priorswap.toolkit.dit.load import load_dit
from priorswap.toolkit.errors import PriorswapError
from priorswap.toolkit.priors import load_prior

from factories import save_dit_pipeline


@pytest.fixture
def hub_offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


def test_offline_hub_id_says_offline_not_missing(hub_offline):
    with pytest.raises(PriorswapError) as e:
        read_model_index("someone/some-model")
    msg = one_line(e)
    assert (
        "HF_HUB_OFFLINE is set" in msg
        and "not in the local hub cache" in msg
        and "hf download someone/some-model" in msg
    )
    with pytest.raises(PriorswapError) as e:
        scheduler_config("someone/some-model")
    msg = one_line(e)
    assert (
        "HF_HUB_OFFLINE is set" in msg and "has no" not in msg
    )  # it used to say "has no readable scheduler_config.json"


def test_zero123_cc_projection_offline_says_offline(hub_offline):
    from priorswap.toolkit.unet.load import load_cc_projection

    with pytest.raises(PriorswapError) as e:
        load_cc_projection("kxic/zero123-xl")
    msg = one_line(e)
    assert "HF_HUB_OFFLINE is set" in msg and "has no cc_projection" not in msg


def test_folder_lacking_a_file_says_which(tmp_path):
    for part, expected in (
        ("scheduler", "has no scheduler/scheduler_config.json"),
        ("transformer", "has no transformer/ folder"),
    ):
        folder = save_dit_pipeline(str(tmp_path / part), latent=False, in_channels=3)
        shutil.rmtree(os.path.join(folder, part))
        with pytest.raises(PriorswapError) as e:
            load_dit(folder)
        assert expected in one_line(e)
    folder = str(tmp_path / "transformer")
    os.makedirs(os.path.join(folder, "transformer"))  # the folder is there, its files are not
    with pytest.raises(PriorswapError) as e:
        load_dit(folder)
    assert "has no 'transformer' weights or config" in one_line(e)


def test_zero123_folder_without_cc_projection_weights(tmp_path):
    from priorswap.toolkit.unet.load import load_cc_projection

    os.makedirs(tmp_path / "z" / "cc_projection")
    with pytest.raises(PriorswapError) as e:
        load_cc_projection(str(tmp_path / "z"))
    assert "has no cc_projection weights" in one_line(e)


def _chained(outer: str, inner: BaseException) -> OSError:
    """How diffusers and transformers report a hub failure: an OSError raised while handling the hub's error."""
    try:
        try:
            raise inner
        except BaseException:
            raise OSError(outer)  # noqa: B904 - the test builds exactly this implicit chain
    except OSError as e:
        return e


def _http(cls, status: int):
    """A hub HTTP error with only a status code (its constructor wants a response of the hub's HTTP library)."""
    from types import SimpleNamespace

    err = cls.__new__(cls)
    Exception.__init__(err, f"{status} error")
    err.response = SimpleNamespace(status_code=status, headers={})
    return err


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda E: _http(E.GatedRepoError, 403), "gated hub repository"),
        (lambda E: _http(E.RepositoryNotFoundError, 404), "not on the hub, or is private"),
        (lambda E: _http(E.HfHubHTTPError, 401), "hf auth login"),
        (lambda E: E.LocalEntryNotFoundError("no connection"), "the hub cannot be reached"),
        (lambda E: E.OfflineModeIsEnabled("offline"), "HF_HUB_OFFLINE is set"),
    ],
)
def test_hub_failures_are_named(make, expected, monkeypatch):
    from diffusers import DiffusionPipeline
    from huggingface_hub import errors

    error = _chained("owner/model does not appear to have a file named model_index.json.", make(errors))
    assert expected in hub_problem("owner/model", error)

    def fail(*a, **k):
        raise error

    monkeypatch.setattr(DiffusionPipeline, "load_config", fail)
    monkeypatch.setattr("priorswap.toolkit.core.hub.unreachable_reason", lambda: None)
    with pytest.raises(PriorswapError) as e:
        read_model_index("owner/model")
    msg = one_line(e)
    assert expected in msg and "does not appear" not in msg


def test_a_file_the_hub_lacks_is_missing_not_a_hub_problem():
    from huggingface_hub import errors

    error = _chained(
        "does not appear to have a file named scheduler_config.json.", _http(errors.RemoteEntryNotFoundError, 404)
    )
    assert hub_problem("owner/model", error) is None


def test_errors_name_models_by_full_path_not_folder_basename(tmp_path):
    """Every export folder is called ``export``: the error must still tell the two apart."""
    a = save_dit_pipeline(str(tmp_path / "run1" / "export"), latent=False, in_channels=1, sample_size=8)
    b = save_dit_pipeline(str(tmp_path / "run2" / "export"), latent=False, in_channels=3, sample_size=8)
    model, prior = load_dit(a), load_prior(b)
    with pytest.raises(PriorswapError) as e:
        pair(model.denoiser, prior.denoiser, (8, 8))
    msg = one_line(e)
    assert f"cannot use {tmp_path / 'run2' / 'export'} as the prior of {tmp_path / 'run1' / 'export'}" in msg
    assert "pixel space (1 channels)" in msg and "pixel space (3 channels)" in msg
