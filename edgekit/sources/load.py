"""Load user models into a Model: factories (+ state_dict), torch.export .pt2, TorchScript, ONNX.

Nothing here runs code from a model *file* unless ``trust_pickle=True``: state dicts load with
``torch.load(weights_only=True)``. A factory is the user's own code and is run on purpose.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import threading
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UsageError, one_line
from ..core.iospec import IOSpec, spec_from_array, synthetic_input
from ..core.model import Model
from ..files.onnx_io import iospec_from_onnx, load_onnx


def load_model(source: str, *, weights: str | Path | None = None, trust_pickle: bool = False,
               sample_inputs: dict[str, np.ndarray] | None = None, dynamic: dict | None = None) -> Model:
    """A Model from ``source``.

    ``source`` is ``file.py:factory``, ``package.module:factory``, a ``.pt2`` torch.export file,
    a TorchScript or pickled ``.pt``/``.pth`` file, an ``.onnx`` file, a ``.keras`` file or a
    TensorFlow SavedModel folder. ``sample_inputs``
    (batched arrays keyed by input name, or ``x``) give shapes when the model has no
    ``example_inputs()``.
    """
    path = Path(source)
    suffix = path.suffix.lower()
    from .keras import is_keras_source
    if is_keras_source(path):
        from .keras import load_keras
        return load_keras(path, sample_inputs)
    if suffix == ".onnx":
        return _from_onnx(path, sample_inputs)
    if suffix in (".pt2", ".pt", ".pth", ".ts"):
        if not path.is_file():
            raise UsageError(f"model file {source} not found; check the path")
        if suffix == ".pt2":
            return _from_pt2(path, sample_inputs)
        return _from_torch_file(path, trust_pickle, sample_inputs)
    if ":" in source:
        module = _call_factory(source)
        if weights is not None:
            _load_weights(module, Path(weights), trust_pickle)
        stem = source.rsplit(":", 1)[0]
        name = Path(stem).stem if stem.endswith(".py") else stem.rsplit(".", 1)[-1]
        return torch_model(module, name=name, loader="factory", origin=source, sample_inputs=sample_inputs,
                           dynamic=dynamic, meta={"factory": source.rpartition(":")[2]})
    if path.is_dir():
        raise UsageError(f"model {source} is a folder but not a SavedModel (no saved_model.pb in it)")
    if path.exists():
        raise UsageError(f"model {source}: unsupported file type '{suffix}'; give .onnx, .pt2, .pt, .keras, "
                         "a SavedModel folder or FILE.py:FACTORY")
    raise UsageError(f"model {source} not found; give a file (.onnx/.pt2/.pt/.keras), a SavedModel folder, a "
                     "language model (a Hugging Face folder or a .gguf file) or FILE.py:FACTORY / package.module:FACTORY")


def _call_factory(source: str):
    import torch

    target, _, attr = source.rpartition(":")
    if target.endswith(".py"):
        file = Path(target)
        if not file.is_file():
            raise UsageError(f"model factory file {target} not found; check the path")
        mod = load_user_file(file, target)
    else:
        try:
            mod = importlib.import_module(target)
        except Exception as exc:
            raise UsageError(f"model module {target} cannot be imported ({one_line(exc)}); check the name and PYTHONPATH") from None
    factory = getattr(mod, attr, None)
    if factory is None or not callable(factory):
        raise UsageError(f"model factory {source}: '{attr}' is not a callable in {target}")
    from ..runtimes.torch_runner import caller_rng_kept

    try:
        with caller_rng_kept():
            module = factory()
    except Exception as exc:
        raise UsageError(f"model factory {source} raised {one_line(exc)}; fix the factory") from None
    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"model factory {source} returned {type(module).__name__}, not a torch.nn.Module")
    return module.eval()


_IMPORTS = threading.Lock()


def load_user_file(file: Path, target: str):
    """Import the user's file as a private module. Its folder is on ``sys.path`` only while it runs (so it
    can import its siblings), and neither it nor the siblings it imported stay in ``sys.modules``."""
    folder = str(file.resolve().parent)
    name = f"_edgekit_user_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, file)
    mod = importlib.util.module_from_spec(spec)
    with _IMPORTS:
        before = set(sys.modules)
        sys.path.insert(0, folder)
        sys.modules[name] = mod  # while it runs: dataclasses and typing look their module up by name
        try:
            spec.loader.exec_module(mod)
        except Exception as exc:
            raise UsageError(f"model file {target} failed to import ({one_line(exc)}); fix the file") from None
        finally:
            sys.path.remove(folder)
            for key in set(sys.modules) - before:
                origin = getattr(sys.modules[key], "__file__", None)
                if key == name or (origin and str(Path(origin).resolve()).startswith(folder + os.sep)):
                    del sys.modules[key]
    return mod


def _load_weights(module, path: Path, trust_pickle: bool) -> None:
    import torch

    if not path.is_file():
        raise UsageError(f"weights file {path} not found; check the path")
    try:
        state = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:
        if not trust_pickle and _is_pickled_objects(exc):
            raise UsageError(f"weights file {path} holds pickled Python objects, not a plain state_dict; "
                             "re-save it with torch.save(model.state_dict(), ...) or pass --trust-pickle "
                             "(this runs code from the file)") from None
        raise UsageError(f"weights file {path} cannot be read ({one_line(exc)}); is it a torch.save file?") from None
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise UsageError(f"weights file {path} holds a {type(state).__name__}, not a state_dict")
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"missing {len(result.missing_keys)} keys (e.g. {', '.join(result.missing_keys[:3])})")
        if result.unexpected_keys:
            parts.append(f"unexpected {len(result.unexpected_keys)} keys (e.g. {', '.join(result.unexpected_keys[:3])})")
        raise UsageError(f"weights file {path} does not match the model: {'; '.join(parts)}")


def _is_pickled_objects(exc: Exception) -> bool:
    """torch.load(weights_only=True) refused a real pickle of Python objects (not a corrupt file)."""
    text = str(exc)
    return "weights_only" in text and "Unsupported global" in text  # random bytes give "Unsupported operand"


def _from_pt2(path: Path, sample_inputs) -> Model:
    import torch

    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise UsageError(f"{path} is not a readable torch.export file ({one_line(exc)}); re-save it with torch.export.save") from None
    names = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    shapes = {}
    for name in names:
        val = placeholders[name].meta.get("val") if name in placeholders else None
        if val is not None:  # a SymInt is a dynamic axis; the batch axis keeps the name "batch"
            shapes[name] = tuple(int(d) if isinstance(d, int) else ("batch" if i == 0 else str(d))
                                 for i, d in enumerate(val.shape))
    examples = None
    if getattr(program, "example_inputs", None):
        args, _ = program.example_inputs
        examples = {n: _to_numpy(a) for n, a in zip(names, args)}
    module = program.module()
    for name, shape in shapes.items():
        if isinstance(shape[0], int) and shape[0] != 1:
            raise UsageError(f"{path}: input '{name}' has a fixed batch of {shape[0]}; re-export it with batch 1 "
                             "or a dynamic batch (torch.export.Dim) so it can be validated sample by sample")
    return torch_model(module, name=path.stem, loader="torch.export", origin=str(path),
                       sample_inputs=examples or sample_inputs, input_names=names, input_shapes=shapes)


def _from_torch_file(path: Path, trust_pickle: bool, sample_inputs) -> Model:
    import torch

    if _is_torchscript(path):
        try:
            module = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:
            raise UsageError(f"{path} is not a loadable TorchScript file ({one_line(exc)})") from None
        names = [a.name for a in module.forward.schema.arguments[1:]]
        return torch_model(module, name=path.stem, loader="torchscript", origin=str(path),
                           sample_inputs=sample_inputs, input_names=names)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:
        if not trust_pickle and _is_pickled_objects(exc):
            raise UsageError(f"{path} is a full-model pickle; loading it runs code from the file. "
                             "Pass --trust-pickle if you trust it, or export with torch.export / a factory") from None
        raise UsageError(f"{path} is not a readable torch file ({one_line(exc)})") from None
    if isinstance(obj, torch.nn.Module):
        return torch_model(obj.eval(), name=path.stem, loader="pickle", origin=str(path), sample_inputs=sample_inputs)
    raise UsageError(f"{path} holds a {type(obj).__name__} (a state_dict?), not a model; "
                     "give the factory as FILE.py:FACTORY and this file as --weights")


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.split("/", 1)[-1].startswith("code/") for n in zf.namelist())
    except zipfile.BadZipFile:
        return False


def _from_onnx(path: Path, sample_inputs) -> Model:
    proto = load_onnx(path)
    spec = iospec_from_onnx(proto)
    examples = _pick_samples(spec.input_names, sample_inputs, str(path))
    if examples is None:
        examples = {t.name: synthetic_input(t) for t in spec.inputs}
    return Model(name=path.stem, kind="onnx", loader="onnx", origin=str(path), iospec=spec,
                 example_inputs=examples, onnx_path=path)


def torch_model(module, *, name: str, loader: str, origin: str, sample_inputs=None,
                input_names: list[str] | None = None, input_shapes: dict[str, tuple] | None = None,
                meta: dict[str, Any] | None = None, dynamic: dict | None = None) -> Model:
    """Wrap a torch module: find its input names and example inputs, run it once for the outputs."""
    import torch

    from ..runtimes.torch_runner import flatten_outputs

    names = list(getattr(module, "input_names", None) or input_names or _forward_params(module))
    examples = _module_examples(module, names, origin)
    if examples is None:
        examples = _pick_samples(names, sample_inputs, origin)
    if examples is None and sample_inputs:
        raise UsageError(f"model {origin}: the data has arrays {', '.join(sorted(sample_inputs))} but the model's "
                         f"inputs are {', '.join(names) or '(unknown)'}; name the arrays after the inputs (or 'x' "
                         "for one input)")
    if examples is None:
        raise UsageError(f"model {origin}: cannot tell its input shapes; give it an example_inputs() method "
                         "or pass --data with one array per input")
    names = list(examples)
    inputs = tuple(spec_from_array(n, a) for n, a in examples.items())
    if input_shapes:  # the source states which axes are dynamic (torch.export programs do)
        inputs = tuple(replace(t, shape=input_shapes.get(t.name, t.shape)) for t in inputs)
    marked = dynamic if dynamic is not None else getattr(module, "dynamic_axes", None)
    if marked:
        inputs = mark_dynamic(inputs, marked, origin)
    static_batch = not all(isinstance(t.shape[0], str) for t in inputs if t.shape)
    try:
        with torch.no_grad():
            result = module(*[torch.from_numpy(a) for a in examples.values()])
    except Exception as exc:
        floats = [n for n, a in examples.items() if a.dtype.kind == "f"]
        if floats and any(w in str(exc) for w in ("Long", "indices", "Int", "integer")):
            raise UsageError(f"model {origin}: input {floats[0]} is {examples[floats[0]].dtype} in the data, and the "
                             f"model takes integers there ({one_line(exc)[:120]}); save the array as int64") from None
        raise UsageError(f"model {origin} fails on inputs of shape "
                         f"{', '.join(f'{n}={tuple(a.shape)}' for n, a in examples.items())}: {one_line(exc)}") from None
    outs = flatten_outputs(result)
    out_names = list(getattr(module, "output_names", None) or
                     (list(result.keys()) if isinstance(result, dict) else
                      (["output"] if len(outs) == 1 else [f"output_{i}" for i in range(len(outs))])))
    outputs = tuple(spec_from_array(n, t.detach().numpy()) for n, t in zip(out_names, outs))
    if static_batch:
        outputs = tuple(replace(t, shape=(1,) + t.shape[1:]) for t in outputs)  # fixed batch is always 1
    return Model(name=name, kind="torch", loader=loader, origin=origin, iospec=IOSpec(inputs, outputs),
                 example_inputs=examples, module=module, meta=meta or {})


def mark_dynamic(inputs: tuple, marked: dict, origin: str) -> tuple:
    """Input specs with the axes ``marked`` ({input: {axis: name}} or {input: [axis, ...]}) made dynamic."""
    by_name = {t.name: t for t in inputs}
    unknown = sorted(set(marked) - set(by_name))
    if unknown:
        raise UsageError(f"model {origin}: dynamic axes name input(s) {', '.join(unknown)}, which the model does "
                         f"not have (its inputs: {', '.join(by_name)})")
    out = []
    for t in inputs:
        axes = marked.get(t.name) or {}
        axes = axes if isinstance(axes, dict) else {int(a): f"{t.name}_dim{int(a)}" for a in axes}
        shape = list(t.shape)
        for axis, name in axes.items():
            axis = int(axis)
            if not 0 <= axis < len(shape):
                raise UsageError(f"model {origin}: input '{t.name}' has {len(shape)} axes; axis {axis} cannot be dynamic")
            shape[axis] = "batch" if axis == 0 else str(name)
        out.append(replace(t, shape=tuple(shape)))
    return tuple(out)


def _forward_params(module) -> list[str]:
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _module_examples(module, names: list[str], origin: str) -> dict[str, np.ndarray] | None:
    fn = getattr(module, "example_inputs", None)
    if not callable(fn):
        return None
    try:
        ex = fn()
    except Exception as exc:
        raise UsageError(f"model {origin}: example_inputs() raised {one_line(exc)}") from None
    if isinstance(ex, dict):
        return {k: _to_numpy(v) for k, v in ex.items()}
    ex = ex if isinstance(ex, (tuple, list)) else (ex,)
    if len(names) < len(ex):
        names = names + [f"input_{i}" for i in range(len(names), len(ex))]
    return {n: _to_numpy(v) for n, v in zip(names, ex)}


def _pick_samples(names: list[str], samples: dict[str, np.ndarray] | None, origin: str):
    if not samples:
        return None
    if all(n in samples for n in names) and names:
        return {n: np.asarray(samples[n][:1]) for n in names}
    if "x" in samples and len(names) <= 1:
        return {(names[0] if names else "input"): np.asarray(samples["x"][:1])}
    return None


def _to_numpy(value) -> np.ndarray:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)
