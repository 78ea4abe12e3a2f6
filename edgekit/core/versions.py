"""Versions of edgekit and every converter and runtime a bundle used."""
from __future__ import annotations

import platform
from importlib import metadata

ALWAYS = ("edgekit", "numpy")


def tool_versions(used: tuple[str, ...] | list[str] = ()) -> dict[str, str]:
    """Installed versions of edgekit, numpy and the ``used`` distributions (by PyPI name)."""
    out = {"python": platform.python_version()}
    for name in (*ALWAYS, *used):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
