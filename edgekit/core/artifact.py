"""Artifact: one deployable file with its format, precision map, runtime, hash, metrics and latency."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .results import BenchResult, ExportInfo, ValidationResult


@dataclass(frozen=True)
class Artifact:
    file: str  # name inside the bundle
    format: str
    precision: str
    runtime: str
    sha256: str
    bytes: int
    iospec: dict[str, Any]
    precision_map: dict[str, str]
    export: ExportInfo
    validation: ValidationResult | None = None
    bench: BenchResult | None = None
    zip_bytes: int = 0  # deflate-compressed size: what sparsity and weight sharing actually save

    @property
    def drop(self) -> float | None:
        return None if self.validation is None else self.validation.drop

    @property
    def device_bytes(self) -> int:
        """What the device stores: for a C array, the embedded model."""
        return self.export.flash_bytes if self.export.flash_bytes is not None else self.bytes

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "format": self.format, "precision": self.precision, "runtime": self.runtime,
                "sha256": self.sha256, "bytes": self.bytes, "iospec": self.iospec,
                "precision_map": self.precision_map, "export": self.export.to_dict(),
                "validation": self.validation.to_dict() if self.validation else {},
                "bench": self.bench.to_dict() if self.bench else {}, "zip_bytes": self.zip_bytes}


def companion(path: Path) -> Path | None:
    """The file a deployable needs beside it: an OpenVINO IR's weights (.bin next to the .xml)."""
    path = Path(path)
    return path.with_suffix(".bin") if path.suffix == ".xml" else None


def file_digest(path: Path) -> tuple[str, int]:
    """sha256 of the file itself; its bytes on the device, with its companion file's (an IR's weights)."""
    data = Path(path).read_bytes()
    extra = companion(path)
    more = extra.stat().st_size if extra is not None and extra.is_file() else 0
    return hashlib.sha256(data).hexdigest(), len(data) + more


def folder_digest(folder: Path) -> tuple[str, int]:
    """sha256 over a model folder's files (each one's relative name and contents, in name order) and their bytes."""
    folder = Path(folder)
    digest, total = hashlib.sha256(), 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
                total += len(chunk)
    return digest.hexdigest(), total
