"""The KServe v2 / Open Inference Protocol over HTTP: JSON tensors and Triton's binary-tensor extension.

Decoding checks every tensor against the served model's inputs (name, datatype, shape, element count,
finite values) and raises ``BadRequest`` with one line a client can act on; encoding writes the outputs as
JSON data or, where the request asks for ``binary_data``, as raw little-endian bytes after the JSON header.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field

import numpy as np

DATATYPES = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
             "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64", "FP16": "float16",
             "FP32": "float32", "FP64": "float64"}
DTYPE_NAMES = {v: k for k, v in DATATYPES.items()}
HEADER_LENGTH = "inference-header-content-length"


class BadRequest(ValueError):
    """A request the server refuses (400, or ``status``), with the message it answers."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InferRequest:
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...]  # the outputs asked for, in order (all when the request names none)
    binary: frozenset[str] = field(default_factory=frozenset)  # outputs to send as binary data
    id: str | None = None


def datatype(dtype) -> str:
    return DTYPE_NAMES[np.dtype(dtype).name]


@dataclass(frozen=True)
class _Input:
    name: str
    dtype: np.dtype
    datatype: str
    shape: tuple  # an int per fixed axis, None per dynamic one


@functools.lru_cache(maxsize=16)
def _signature(spec) -> tuple[dict[str, _Input], tuple[str, ...]]:
    """The served tensors, worked out once per model instead of once per request."""
    inputs = {t.name: _Input(t.name, np.dtype(t.dtype), datatype(t.dtype),
                             tuple(d if isinstance(d, int) else None for d in t.shape)) for t in spec.inputs}
    return inputs, tuple(t.name for t in spec.outputs)


def decode(body: bytes, header_length: str | None, spec) -> InferRequest:
    """``body`` as an inference request for a model whose inputs and outputs are ``spec`` (an IOSpec)."""
    json_bytes, rest = body, b""
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            raise BadRequest(f"Inference-Header-Content-Length {header_length!r} is not an integer") from None
        if not 0 < size <= len(body):
            raise BadRequest(f"Inference-Header-Content-Length {size} does not fit a body of {len(body)} bytes")
        json_bytes, rest = body[:size], body[size:]
    try:
        request = json.loads(json_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the request body is not JSON ({exc})") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise BadRequest("the request needs an 'inputs' list of tensors")
    wanted, names = _signature(spec)
    inputs, offset = {}, 0
    for tensor in request["inputs"]:
        if not isinstance(tensor, dict):
            raise BadRequest("each input must be an object with name, shape, datatype and data")
        name = tensor.get("name")
        if name not in wanted:
            raise BadRequest(f"unknown input {name!r}; the model takes {', '.join(wanted)}")
        if name in inputs:
            raise BadRequest(f"input {name!r} is given twice")
        array, offset = _decode_tensor(tensor, wanted[name], rest, offset)
        inputs[name] = array
    missing = [n for n in wanted if n not in inputs]
    if missing:
        raise BadRequest(f"missing input(s) {', '.join(map(repr, missing))}; the model takes {', '.join(wanted)}")
    if offset != len(rest):
        raise BadRequest(f"{len(rest) - offset} bytes of binary data follow the tensors that were declared")
    batches = {n: a.shape[0] for n, a in inputs.items() if a.ndim}
    if len(set(batches.values())) > 1:
        raise BadRequest(f"the inputs disagree on the batch size: {batches}")
    params = request.get("parameters") or {}
    all_binary = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    asked = request.get("outputs")
    if asked is None:
        outputs, binary = names, frozenset(names) if all_binary else frozenset()
    else:
        if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
            raise BadRequest("'outputs' must be a list of objects with a name")
        unknown = [o.get("name") for o in asked if o.get("name") not in names]
        if unknown:
            raise BadRequest(f"unknown output(s) {unknown}; the model returns {', '.join(names)}")
        outputs = tuple(o["name"] for o in asked)
        binary = frozenset(o["name"] for o in asked
                           if (o.get("parameters") or {}).get("binary_data", all_binary))
    request_id = request.get("id")
    return InferRequest(inputs, outputs, binary, str(request_id) if request_id is not None else None)


def _decode_tensor(tensor: dict, spec: _Input, rest: bytes, offset: int) -> tuple[np.ndarray, int]:
    name = spec.name
    dt = tensor.get("datatype")
    if dt != spec.datatype:
        if dt not in DATATYPES:
            raise BadRequest(f"input {name!r}: datatype {dt!r} is not supported; use {spec.datatype}")
        raise BadRequest(f"input {name!r}: datatype {dt} does not match the model's {spec.datatype}")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    expected = spec.shape
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
        want = [-1 if e is None else e for e in expected]
        raise BadRequest(f"input {name!r}: shape {shape} does not fit the model's {want} (-1: any size)")
    count = math.prod(shape)
    dtype = spec.dtype
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size != count * dtype.itemsize:
            raise BadRequest(f"input {name!r}: binary_data_size {size!r} is not {count} x {dtype.itemsize} bytes")
        if offset + size > len(rest):
            raise BadRequest(f"input {name!r}: binary data ends after {len(rest) - offset} of {size} bytes")
        array = np.frombuffer(rest, dtype=dtype.newbyteorder("<"), count=count, offset=offset)
        if array.dtype != dtype:  # a big-endian host: to native order
            array = array.astype(dtype)
        offset += size
    else:
        data = tensor.get("data")
        if data is None:
            raise BadRequest(f"input {name!r} has no 'data' (and no binary_data_size)")
        array = _from_json(data, dtype, name)
        if array.size != count:
            raise BadRequest(f"input {name!r}: {array.size} values do not fill shape {shape} ({count})")
    array = array.reshape(shape)
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise BadRequest(f"input {name!r} holds NaN or infinite values; the model takes finite numbers only")
    return array, offset


def _from_json(data, dtype: np.dtype, name: str) -> np.ndarray:
    flat = _flatten(data)
    kinds = {bool} if dtype.kind == "b" else {int} if dtype.kind in "iu" else {int, float}
    for v in flat:
        if type(v) not in kinds:
            raise BadRequest(f"input {name!r}: {v!r} is not a {dtype.name} value")
    try:
        array = np.array(flat, dtype=dtype)
    except OverflowError:
        raise BadRequest(f"input {name!r}: a value does not fit {dtype.name}") from None
    if dtype.kind in "iu" and flat and any(int(a) != v for a, v in zip(array.tolist(), flat)):
        raise BadRequest(f"input {name!r}: a value does not fit {dtype.name}")
    return array


def _flatten(data) -> list:
    if not isinstance(data, list):
        return [data]
    out = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def encode(request: InferRequest, outputs: dict[str, np.ndarray], model: str, version: str = "1"
           ) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary data follows it (else None)."""
    tensors, blobs = [], []
    for name in request.outputs:
        value = np.asarray(outputs[name])
        entry = {"name": name, "datatype": datatype(value.dtype), "shape": list(value.shape)}
        if name in request.binary:
            raw = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = value.reshape(-1).tolist()
        tensors.append(entry)
    body = {"model_name": model, "model_version": version, "outputs": tensors}
    if request.id is not None:
        body["id"] = request.id
    head = json.dumps(body, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
