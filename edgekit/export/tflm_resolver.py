"""<model>_model_ops.h beside the C array: what firmware needs to run it on TensorFlow Lite for Microcontrollers.

The header lists the embedded .tflite's distinct ops as MicroMutableOpResolver calls (an X-macro and a
template that compiles without the TFLM headers), the tensor arena the tflite-micro Python interpreter
measured on those very bytes plus a margin, and the input/output tensors' type, shape and quantization.
An op with no MicroMutableOpResolver method in ``TFLM_METHODS`` is never guessed: the header names it
as unregistered (the firmware registers its kernel by hand), and the manifest lists it; whether TFLite-Micro
loads the file at all is the ``tflm_ops`` gate's verdict, as before.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..core.errors import UsageError

# BuiltinOperator name (as tflite_info.read_tflite names ops) -> MicroMutableOpResolver method, copied from
# tensorflow/tflite-micro tensorflow/lite/micro/micro_mutable_op_resolver.h (2025 revision): each entry is an
# `AddBuiltin(BuiltinOperator_<NAME>, ...)` or `AddCustom("<name>", ...)` call there. Names not read in
# that file stay out (GELU, for one, has no method there; the tflite-micro wheel has DYNAMIC_UPDATE_SLICE and
# REDUCE_ALL kernels too, but that copy of the header has no method for them, so they wait for one that does).
TFLM_METHODS: dict[str, str] = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax", "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable", "AVERAGE_POOL_2D": "AddAveragePool2D",
    "BATCH_MATMUL": "AddBatchMatMul", "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd",
    "BROADCAST_ARGS": "AddBroadcastArgs", "BROADCAST_TO": "AddBroadcastTo", "CALL_ONCE": "AddCallOnce",
    "CAST": "AddCast", "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D",
    "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv",
    "EMBEDDING_LOOKUP": "AddEmbeddingLookup", "ELU": "AddElu", "EQUAL": "AddEqual", "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill", "FLOOR": "AddFloor", "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod", "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd", "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish", "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D", "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog", "LOGICAL_AND": "AddLogicalAnd", "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr", "LOGISTIC": "AddLogistic", "LOG_SOFTMAX": "AddLogSoftmax",
    "MAXIMUM": "AddMaximum", "MAX_POOL_2D": "AddMaxPool2D", "MIRROR_PAD": "AddMirrorPad", "MEAN": "AddMean",
    "MINIMUM": "AddMinimum", "MUL": "AddMul", "NEG": "AddNeg", "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack",
    "PAD": "AddPad", "PADV2": "AddPadV2", "PRELU": "AddPrelu", "QUANTIZE": "AddQuantize",
    "READ_VARIABLE": "AddReadVariable", "REDUCE_MAX": "AddReduceMax", "REDUCE_MIN": "AddReduceMin",
    "RELU": "AddRelu", "RELU6": "AddRelu6", "RESHAPE": "AddReshape", "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "REVERSE_V2": "AddReverseV2", "ROUND": "AddRound",
    "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape", "SIN": "AddSin", "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax", "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV", "SQUEEZE": "AddSqueeze", "SQRT": "AddSqrt",
    "SQUARE": "AddSquare", "SQUARED_DIFFERENCE": "AddSquaredDifference", "STRIDED_SLICE": "AddStridedSlice",
    "SUB": "AddSub", "SUM": "AddSum", "SVDF": "AddSvdf", "TANH": "AddTanh", "TRANSPOSE_CONV": "AddTransposeConv",
    "TRANSPOSE": "AddTranspose", "UNPACK": "AddUnpack",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM", "VAR_HANDLE": "AddVarHandle",
    "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
    # custom ops TFLM ships a kernel for (AddCustom inside the method)
    "CUSTOM:TFLite_Detection_PostProcess": "AddDetectionPostprocess", "CUSTOM:CIRCULAR_BUFFER": "AddCircularBuffer",
}
# numpy dtype name -> TfLiteType value (tensorflow/lite/core/c/c_api_types.h), for checks against tensor->type
TFLITE_TYPES = {"float32": 1, "int32": 2, "uint8": 3, "int64": 4, "bool": 6, "int16": 7, "int8": 9, "float16": 10}
MARGIN = "the measured figure plus 10 %, rounded up to a whole KiB, plus 1 KiB"
HEADER_VERSION = 1  # the layout of <model>_model_ops.h; apps/mcu refuses, at compile time, a header of another


def resolver_methods(ops: list[str]) -> tuple[list[str], list[str]]:
    """(the MicroMutableOpResolver method of each op the table knows, the ops it does not know)."""
    known = [op for op in dict.fromkeys(ops) if op in TFLM_METHODS]
    return [TFLM_METHODS[op] for op in known], [op for op in dict.fromkeys(ops) if op not in TFLM_METHODS]


def model_ops(path: Path) -> list[str]:
    """The file's distinct ops in first-use order: the main graph's, then any only other subgraphs use."""
    from ..files.tflite_info import read_tflite

    ops = list(dict.fromkeys(read_tflite(path).ops))
    from ai_edge_litert import schema_py_generated as schema  # read_tflite just imported it

    model = schema.Model.GetRootAsModel(path.read_bytes(), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    for g in range(1, model.SubgraphsLength()):  # IF / WHILE bodies
        graph = model.Subgraphs(g)
        for i in range(graph.OperatorsLength()):
            code = model.OperatorCodes(graph.Operators(i).OpcodeIndex())
            name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            name = f"CUSTOM:{code.CustomCode().decode()}" if name == "CUSTOM" else name
            ops += [name] if name not in ops else []
    return ops


def with_margin(measured: int) -> int:
    """``MARGIN``: room for what differs on a target (optimized kernels' scratch buffers, alignment)."""
    return -(-measured * 11 // 10240) * 1024 + 1024


def measure_arena(path: Path) -> tuple[int | None, str]:
    """The arena the tflite-micro Python interpreter used for the file (after one invoke), or None and why not."""
    from ..runtimes.tflm import TflmRunner

    try:
        runner = TflmRunner(path)
        runner.interp.invoke()
        return runner.arena_used_bytes(), ""
    except (UsageError, RuntimeError) as exc:
        return None, str(exc).replace(str(path), path.name)


def io_tensors(path: Path) -> tuple[list[dict], list[dict]]:
    """Inputs and outputs in the subgraph's order (MicroInterpreter::input(i)) as LiteRT reads them:
    dtype, TfLiteType, scale and zero_point (0 and 0 for a float tensor), static shape."""
    from ..runtimes.litert import LiteRTRunner

    interp = LiteRTRunner(path).interp
    def one(d: dict) -> dict:
        dtype = np.dtype(d["dtype"]).name
        scale, zero = d.get("quantization", (0.0, 0))
        return {"name": d["name"], "dtype": dtype, "tflite_type": TFLITE_TYPES.get(dtype, 0),
                "scale": float(np.float32(scale)), "zero_point": int(zero), "shape": [int(s) for s in d["shape"]]}
    return [one(d) for d in interp.get_input_details()], [one(d) for d in interp.get_output_details()]


def names_for(model_name: str) -> tuple[str, str, str]:
    """(identifier, CamelCase, UPPER) spellings of a model name for C symbols: digits_cnn -> DigitsCnn."""
    ident = re.sub(r"[^0-9a-zA-Z_]", "_", model_name).lower()
    camel = "".join(part.capitalize() for part in ident.split("_") if part) or "Model"
    return ident, camel, ident.upper()


def write_ops_header(folder: Path, model_name: str, source: Path, precision: str, symbol: str,
                     data_header: str) -> dict:
    """Write <model>_model_ops.h for the embedded ``source``; the ExportInfo details it adds."""
    ops = model_ops(source)
    methods, unregistered = resolver_methods(ops)
    known = [op for op in ops if op not in unregistered]
    measured, why = measure_arena(source)
    arena = with_margin(measured) if measured is not None else 0
    inputs, outputs = io_tensors(source)
    ident, camel, upper = names_for(model_name)
    k = f"k{camel}"
    path = folder / f"{model_name}_model_ops.h"
    guard = f"EDGEKIT_{upper}_MODEL_OPS_H_"
    if measured is None:
        arena_text = (f"// Arena: not measured: TFLite-Micro could not load the file on the host ({why[:300]}).\n"
                      "// The arena constants are 0; apps/mcu/main.cc refuses to build with them.\n")
    else:
        arena_text = (f"// Arena: {measured} bytes, measured by the tflite-micro Python interpreter (x86-64 host,\n"
                      "// reference kernels, TFLM's recording allocator) on these very bytes.\n"
                      f"// {k}ArenaBytes = {arena} adds a margin: {MARGIN}.\n"
                      "// It covers what differs on a target: optimized kernels (CMSIS-NN, ...) asking for other\n"
                      "// scratch buffers, alignment (a 32-bit target's own TFLM structs are smaller). After\n"
                      "// AllocateTensors(), MicroInterpreter::arena_used_bytes() gives the target's own figure.\n")
    xs = " \\\n".join(f"  X({m}, \"{op.split(':', 1)[-1]}\")" for m, op in zip(methods, known))
    missing = "".join(f"// UNREGISTERED: {op} has no MicroMutableOpResolver method edgekit knows; register its kernel "
                      "by hand (resolver.AddCustom or AddBuiltin) or AllocateTensors() fails.\n" for op in unregistered)
    calls = "".join(f"  failed += r.{m}() != 0 ? 1 : 0;\n" for m in methods)
    text = (
        f"// Generated by edgekit from {source.name} ({precision}); do not edit.\n"
        f"// TFLite-Micro companion of {data_header} ({symbol}): the op resolver list,\n"
        "// the tensor arena and the input/output quantization. It needs no TFLM header; in firmware:\n"
        f"//   tflite::MicroMutableOpResolver<{k}OpCount> resolver;\n"
        f"//   if (edgekit_register_{ident}_ops(resolver) != 0) {{ /* an Add* call failed */ }}\n"
        f"//   alignas(16) static uint8_t arena[{k}ArenaBytes];\n//\n{arena_text}"
        f"#ifndef {guard}\n#define {guard}\n\n#define EDGEKIT_OPS_HEADER_VERSION {HEADER_VERSION}\n\n"
        f"{missing}// The graph's distinct ops in first-use order: X(MicroMutableOpResolver method, op name).\n"
        f"#define EDGEKIT_{upper}_OPS(X) \\\n{xs}\n\n"
        f"constexpr int {k}OpCount = {len(methods) + len(unregistered)};  // room for the unregistered ones too\n"
        f"constexpr int {k}UnregisteredOps = {len(unregistered)};\n"
        f"constexpr unsigned int {k}ArenaMeasuredBytes = {measured or 0};  // measured, see above\n"
        f"constexpr unsigned int {k}ArenaBytes = {arena};  // measured + margin: size the arena with this\n\n"
        "// Registers every op; returns how many Add* calls failed (each returns TfLiteStatus, kTfLiteOk == 0).\n"
        f"template <typename Resolver>\ninline int edgekit_register_{ident}_ops(Resolver& r) {{\n"
        f"  int failed = 0;\n{calls}  return failed;\n}}\n\n"
        "// Input and output tensors in the subgraph's order (MicroInterpreter::input(i), output(i)).\n"
        "// Affine quantization: real = scale * (q - zero_point); a float tensor has scale 0 and zero_point 0\n"
        "// (feed it floats as they are). TfLiteType values: 1 float32, 2 int32, 3 uint8, 4 int64, 7 int16, 9 int8.\n"
        + _io_block(k, "Input", inputs) + _io_block(k, "Output", outputs) +
        "\n// Model-independent names: apps/mcu uses only these.\n"
        f"#define EDGEKIT_MODEL_NAME \"{model_name}\"\n"
        f"#define EDGEKIT_MODEL_DATA {symbol}\n#define EDGEKIT_MODEL_DATA_LEN {symbol}_len\n"
        f"#define EDGEKIT_MODEL_OPS(X) EDGEKIT_{upper}_OPS(X)\n"
        f"#define EDGEKIT_MODEL_OP_COUNT {k}OpCount\n#define EDGEKIT_MODEL_ARENA_BYTES {k}ArenaBytes\n"
        f"#define EDGEKIT_MODEL_ARENA_MEASURED_BYTES {k}ArenaMeasuredBytes\n"
        f"#define EDGEKIT_MODEL_K(name) {k}##name  // EDGEKIT_MODEL_K(InputScale) is {k}InputScale\n"
        f"#define edgekit_register_model_ops edgekit_register_{ident}_ops\n\n#endif  // {guard}\n")
    path.write_text(text)
    return {"ops_header": path.name, "ops": ops, "resolver_methods": methods, "unregistered_ops": unregistered,
            "arena_bytes": measured,
            "arena_bytes_with_margin": arena if measured is not None else None}


def _io_block(k: str, side: str, tensors: list[dict]) -> str:
    def arr(ctype: str, name: str, values: list[str]) -> str:
        return f"constexpr {ctype} {k}{side}{name}[] = {{{', '.join(values)}}};\n"
    width = max([len(t["shape"]) for t in tensors] + [1])
    shapes = ", ".join("{" + ", ".join(str(s) for s in (t["shape"] + [0] * width)[:width]) + "}" for t in tensors)
    return (f"constexpr int {k}{side}Count = {len(tensors)};\n"
            + arr("const char*", "Dtype", [f"\"{t['dtype']}\"" for t in tensors])
            + arr("int", "TfLiteType", [str(t["tflite_type"]) for t in tensors])
            + arr("float", "Scale", [f"{t['scale']!r}f" for t in tensors])
            + arr("int", "ZeroPoint", [str(t["zero_point"]) for t in tensors])
            + arr("int", "Rank", [str(len(t["shape"])) for t in tensors])
            + f"constexpr int {k}{side}Shape[][{width}] = {{{shapes}}};\n"
            + arr("int", "Elements", [str(int(np.prod(t["shape"], dtype=np.int64))) for t in tensors]))
