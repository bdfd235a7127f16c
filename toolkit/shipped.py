"""Model folders that ship inside the package, named in recipes and commands by their path in the source tree.

A shipped recipe says ``pretrained: toolkit/assets/demo_base``. Read relative to the working folder, that path
exists only at the root of a source checkout; a wheel install has no such folder anywhere. So a path of the form
``toolkit/assets/<name>...`` that names something the installed package holds is that packaged file, found with
importlib.resources (the same way in a checkout, an editable install and a wheel). Any other relative path, and a
``toolkit/assets/...`` path the package does not hold (a user's own folder of that name), stays relative to the
working folder.
"""

from __future__ import annotations

import os
from importlib import resources

PREFIX = ("toolkit", "assets")


def packaged(ref: str | None) -> str | None:
    """The installed package's file for a ``toolkit/assets/...`` path, else ``ref`` unchanged."""
    if not isinstance(ref, str) or os.path.isabs(ref) or ref.startswith("~"):
        return ref
    parts = [p for p in os.path.normpath(ref).replace("\\", "/").split("/") if p not in ("", ".")]
    if len(parts) <= len(PREFIX) or tuple(parts[: len(PREFIX)]) != PREFIX or ".." in parts:
        return ref
    found = resources.files("priorswap.toolkit").joinpath(*parts[1:])
    return str(found) if found.is_dir() or found.is_file() else ref
