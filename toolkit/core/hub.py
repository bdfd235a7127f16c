"""The Hugging Face hub: whether it can be reached before asking it for a file, and what kept a download from working.

Offline, huggingface_hub retries each request 5 times with backoff: about 30 s of warnings before the real
error. One TCP connection attempt answers the same question in a moment, so a hub id on an offline machine
gets its one-line error at once. Skipped when a proxy is configured (a direct connection would then say
nothing) and when ``HF_HUB_OFFLINE`` is set (huggingface_hub then fails fast, or uses its cache).
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from huggingface_hub import constants, try_to_load_from_cache
from huggingface_hub import errors as hf

from ..errors import PriorswapError

PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def unreachable_reason(timeout: float = 5.0) -> str | None:
    """Why the hub endpoint cannot be reached now (DNS or TCP failure), or None if it can or we cannot tell."""
    if constants.HF_HUB_OFFLINE or any(os.environ.get(v) for v in PROXY_VARS):
        return None
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host} cannot be reached ({e.strerror or type(e).__name__})"
    return None


def cached(repo_id: str, filename: str, subfolder: str | None = None) -> bool:
    """Whether ``filename`` of ``repo_id`` is already in the local hub cache."""
    path = f"{subfolder}/{filename}" if subfolder else filename
    try:
        return isinstance(try_to_load_from_cache(repo_id, path), str)
    except ValueError:  # not a valid repo id: certainly not cached
        return False


def offline_hint(ref: str) -> str:
    return f"on an offline machine download it elsewhere (`hf download {ref} --local-dir DIR`) and pass DIR"


def hub_problem(ref: str, error: BaseException) -> str | None:
    """What kept ``ref`` from being fetched (offline, unreachable, gated, not found, not logged in), in words,
    or None when the hub answered and the file is simply not there (or the error is not the hub's)."""
    chain, e = [], error
    while e is not None and e not in chain:  # diffusers and transformers re-raise hub errors as OSError
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if isinstance(e, hf.OfflineModeIsEnabled):
            return f"is not in the local hub cache and HF_HUB_OFFLINE is set; {offline_hint(ref)}"
        if isinstance(e, hf.GatedRepoError):
            return f"is a gated hub repository: accept its terms at https://huggingface.co/{ref}, then log in with `hf auth login`"
        if isinstance(e, hf.RevisionNotFoundError):
            return "has no such revision on the hub"
        if isinstance(e, hf.RepositoryNotFoundError):
            return "is not on the hub, or is private (log in with `hf auth login` if you have access)"
        if isinstance(e, hf.HfHubHTTPError) and getattr(e.response, "status_code", None) in (401, 403):
            return "was refused by the hub (not logged in, or no access): log in with `hf auth login`"
    for e in chain:
        if isinstance(e, hf.LocalEntryNotFoundError) or type(e).__name__ in (
            "ConnectError",
            "ConnectTimeout",
            "ConnectionError",
        ):
            return f"is not in the local hub cache and the hub cannot be reached; {offline_hint(ref)}"
    return None


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def fetch_error(ref: str, what: str, file: str, e: BaseException) -> PriorswapError:
    """A one-line error for a failed read of ``file`` from ``ref``: the hub's problem if there was one, a missing
    file if that is what it was, else the error itself."""
    problem = hub_problem(ref, e)
    if problem:
        return PriorswapError(f"{what} {ref!r} {problem}")
    if missing_file(e):
        return PriorswapError(f"{what} {ref!r} has no {file}")
    return PriorswapError(f"{what} {ref!r}: cannot read {file} ({first_line(e)})")


def missing_file(error: BaseException) -> bool:
    e, seen = error, []
    while e is not None and e not in seen:
        if isinstance(e, (hf.EntryNotFoundError, FileNotFoundError)):
            return True
        seen.append(e)
        e = e.__cause__ or e.__context__
    text = str(error)
    return "does not appear to have a file named" in text or "no file named" in text
