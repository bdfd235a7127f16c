"""A quick look at whether the Hugging Face hub can be reached, before asking huggingface_hub for a file.

Offline, huggingface_hub retries each request 5 times with backoff: about 30 s of warnings before the real
error. One TCP connection attempt answers the same question in a moment, so a hub id on an offline machine
gets its one-line error at once. Skipped when a proxy is configured (a direct connection would then say
nothing) and when ``HF_HUB_OFFLINE`` is set (huggingface_hub then fails fast, or uses its cache).
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def unreachable_reason(timeout: float = 5.0) -> str | None:
    """Why the hub endpoint cannot be reached now (DNS or TCP failure), or None if it can or we cannot tell."""
    from huggingface_hub import constants

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
    from huggingface_hub import try_to_load_from_cache

    path = f"{subfolder}/{filename}" if subfolder else filename
    try:
        return isinstance(try_to_load_from_cache(repo_id, path), str)
    except ValueError:  # not a valid repo id: certainly not cached
        return False


def offline_hint(ref: str) -> str:
    return f"on an offline machine download it elsewhere (`hf download {ref} --local-dir DIR`) and pass DIR"
