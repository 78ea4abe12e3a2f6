"""Atomic bundle folders: built in a hidden sibling folder and renamed into place."""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ..core.errors import UsageError


def check_writable(out: Path) -> None:
    """Refuse up front (before any model loads) an ``--out`` that cannot hold a bundle."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder; choose another --out")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"--out {out}: {probe} is a file, not a folder; choose another --out")
    try:  # a real write: permission bits, read-only filesystems and root's exceptions all answer the same way
        os.rmdir(tempfile.mkdtemp(prefix=".edgekit-probe-", dir=probe))
    except OSError as exc:
        raise UsageError(f"--out {out}: {probe} is not writable ({exc.strerror}); choose a folder you can "
                         "write to") from None


def check_target(final: Path, force: bool) -> None:
    """Refuse up front when the bundle folder exists and ``force`` is not given."""
    if final.exists() and not force:
        raise UsageError(f"output folder {final} already exists; pass --force to replace it or choose another --out")
    if final.exists() and not final.is_dir():
        raise UsageError(f"output path {final} exists and is not a folder; remove it or choose another --out")


@contextlib.contextmanager
def staging(final: Path, force: bool) -> Iterator[Path]:
    """Yield a fresh folder; on success it replaces ``final`` in one rename, on error it is removed."""
    check_target(final, force)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        tmp.chmod(0o755)
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Strict JSON: a non-finite number (e.g. the SNR of an exact match) is written as null."""
    plain = json.loads(json.dumps(data, default=_jsonable))
    path.write_text(json.dumps(_finite(plain), indent=2, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
