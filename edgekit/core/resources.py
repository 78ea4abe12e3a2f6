"""Where the shipped data folders (device_profiles/, exporters/) live."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]


def data_dir(name: str) -> Path:
    """The folder ``name``: beside the package in a checkout, inside it in a wheel."""
    repo = _REPO / name
    if repo.is_dir() and (_REPO / "pyproject.toml").is_file():
        return repo
    return Path(str(resources.files("edgekit") / "_data" / name))
