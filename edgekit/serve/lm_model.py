"""An LM bundle opened for serving: which file, checked against the manifest's sha256, in which engine, with its
tokenizer, chat template and stop tokens, at the profile's threads and context.

The served runtime is llama.cpp (a GGUF file: parallel sequences in one context, see lm_engine). The bundle's
recommended file is served when it is a GGUF file; otherwise its best GGUF file is, and the note says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import UsageError
from .model import model_name, read_manifest

SERVED_FORMATS = ("gguf",)


def is_lm_bundle(bundle: str | Path) -> bool:
    """Whether ``bundle``'s manifest says it holds a language model (an unreadable one is left to the loader)."""
    import json

    try:
        return json.loads((Path(bundle) / "manifest.json").read_text()).get("kind") == "causal-lm"
    except (OSError, ValueError, AttributeError):
        return False


@dataclass
class ServedLm:
    name: str
    bundle: Path
    entry: dict
    path: Path  # the file the engine loads
    engine: object
    chat_template: str | None
    stop_ids: tuple[int, ...]
    context: int
    threads: int
    notes: list[str] = field(default_factory=list)

    @property
    def runtime(self) -> str:
        return self.engine.runtime

    def metadata(self) -> dict:
        """KServe v2 model metadata: text in, text out, edgekit's facts under ``parameters``."""
        e = self.entry
        params = {"file": e["folder"], "format": e["format"], "precision": e.get("precision", ""),
                  "sha256": e.get("sha256", ""), "runtime": self.runtime, "context": self.context,
                  "max_seqs": len(self.engine.slots), "threads": self.threads,
                  "chat_template": self.chat_template is not None, "prefix_cache": self.engine.prefix_cache}
        if e.get("quality"):
            params["ppl_increase"] = e["quality"].get("ppl_increase")
        return {"name": self.name, "versions": ["1"], "platform": "llama.cpp",
                "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1]}],
                "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [1]}], "parameters": params}


def choose_lm_file(manifest: dict, file: str | None) -> tuple[dict, list[str]]:
    entries = {e["folder"]: e for e in manifest["files"]}
    servable = [e for e in manifest["files"] if e["format"] in SERVED_FORMATS]
    if file is not None:
        entry = entries.get(file)
        if entry is None:
            raise UsageError(f"--file {file}: not in the bundle; its files: {', '.join(entries) or 'none'}")
        if entry["format"] not in SERVED_FORMATS:
            raise UsageError(f"--file {file}: a {entry['format']} file; edgekit serve runs LM files in llama.cpp "
                             f"(gguf); this bundle's gguf files: {', '.join(e['folder'] for e in servable) or 'none'}")
        return entry, []
    recommended = manifest.get("recommended")
    if isinstance(recommended, dict):
        recommended = recommended.get("folder")
    if recommended in entries and entries[recommended]["format"] in SERVED_FORMATS:
        return entries[recommended], []
    if not servable:
        have = ", ".join(sorted({e["format"] for e in manifest["files"]})) or "none"
        raise UsageError(f"the bundle has no gguf file to serve (it has {have}); edgekit serve runs LM files in "
                         "llama.cpp: rebuild with --formats gguf")
    gates = manifest.get("gates") or []

    def passed(e):
        return all(g.get("passed", True) for g in gates if g.get("file") == e["folder"])
    entry = max(servable, key=lambda e: (passed(e), (e.get("speed") or {}).get("decode_tokens_per_s") or 0))
    return entry, [f"the recommended file {recommended} is not a gguf file; serving {entry['folder']}, the bundle's "
                   "fastest gguf file" + ("" if passed(entry) else " (it missed a gate)")]


def open_lm(bundle: str | Path, *, file: str | None = None, max_seqs: int = 8, context: int | None = None,
            threads: int | None = None, batch_tokens: int = 512, prefix_cache: bool = True) -> ServedLm:
    from ..core.artifact import folder_digest
    from .lm_engine import LlamaEngine

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    if manifest.get("kind") != "causal-lm":
        raise UsageError(f"{bundle}: not a language-model bundle")
    entry, notes = choose_lm_file(manifest, file)
    folder = bundle / entry["folder"]
    if not folder.exists():
        raise UsageError(f"{folder}: listed in the manifest but missing; rebuild the bundle")
    if entry.get("sha256") and folder_digest(folder)[0] != entry["sha256"]:
        raise UsageError(f"{folder}: its sha256 differs from the manifest's; the file changed after the build")
    path = next(iter(sorted(folder.glob("*.gguf"))), None) if folder.is_dir() else folder
    if path is None:
        raise UsageError(f"{folder}: no .gguf file inside; rebuild the bundle")
    threads = threads or int((entry.get("speed") or {}).get("threads") or 0) or 1
    context = context or int((entry.get("memory") or {}).get("context") or 0) or 2048
    engine = LlamaEngine(path, context=context, slots=max_seqs, threads=threads, batch_tokens=batch_tokens,
                         prefix_cache=prefix_cache)
    if engine.context < context:
        notes.append(f"context {context} is over the model's {engine.context}: serving {engine.context}")
    tokenizer = manifest.get("tokenizer") or {}
    stop_ids = tuple(int(t) for t in tokenizer.get("eos_token_ids") or ())
    return ServedLm(name=model_name(manifest, bundle), bundle=bundle, entry=entry, path=path, engine=engine,
                    chat_template=engine.chat_template, stop_ids=stop_ids, context=engine.context, threads=threads,
                    notes=notes)
