"""The converter worker: ``python -m edgekit.export.tf_worker LOGFILE``, one per build, started on demand.

Every TensorFlow-side conversion runs here, in its own process: onnx2tf, the TFLite converter
(fp32/fp16/int8/int16x8 from a SavedModel), ai-edge-quantizer (int4) and tf2onnx. So the
library never changes the calling process: onnx2tf's working folder, its patched sample-image
download, TF's log level and everything these tools print stay in this process. Requests are JSON
lines on stdin; each answer is one JSON line on the original stdout; fds 1 and 2 go to LOGFILE.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import traceback
from pathlib import Path


class Refused(Exception):
    """The input cannot be converted (exit 2 for the user), as opposed to a converter failure."""


def op_onnx2tf(onnx: str, out_dir: str, samples: str | None = None, batch_size: int | None = None) -> dict:
    """onnx2tf: a SavedModel and the fp32 .tflite in ``out_dir``. Its sample-image download (for 4-D,
    3-channel inputs with a static batch <= 20) is replaced by the build's calibration samples."""
    import shutil

    import numpy as np
    import onnx2tf
    import onnx2tf.onnx2tf as o2t
    from onnx2tf.utils import common_functions as cf

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = out / Path(onnx).name  # onnx2tf rewrites its input in place (op names)
    shutil.copyfile(onnx, source)

    def local_samples():
        if samples:
            with np.load(samples) as npz:
                x = npz["x"].astype(np.float32)
        else:
            x = np.zeros((20, 8, 8, 3), np.float32)
        return np.resize(x, (max(20, len(x)),) + x.shape[1:])

    o2t.download_test_image_data = cf.download_test_image_data = local_samples  # this process only
    # An empty parameter-replacement file: without one, onnx2tf answers a conversion error by testing
    # fix combinations for a replacement JSON (three rounds, each reconverting the graph), which it then
    # does not use. The build reports the failing op and goes on to its own fallbacks (batch 1, litert-torch).
    no_replacements = out / "edgekit_no_replacements.json"
    no_replacements.write_text(json.dumps({"format_version": 1, "operations": []}))
    os.chdir(out)
    try:
        onnx2tf.convert(input_onnx_file_path=str(source), output_folder_path=str(out), not_use_onnxsim=True,
                        non_verbose=False, verbosity="info", batch_size=batch_size,
                        param_replacement_file=str(no_replacements))
    except SystemExit as exc:
        raise RuntimeError(f"onnx2tf stopped (exit {exc.code})") from None
    fp32 = out / (source.stem + "_float32.tflite")
    if not fp32.is_file():
        raise RuntimeError(f"onnx2tf wrote no {fp32.name}")
    return {"saved_model": str(out), "fp32": str(fp32), "version": onnx2tf.__version__}


def op_keras_saved_model(keras_path: str, out_dir: str) -> dict:
    """A SavedModel from a .keras file, loaded with safe_mode=True (no pickled Lambda code runs)."""
    import keras

    model = keras.saving.load_model(keras_path, safe_mode=True, compile=False)
    with contextlib.suppress(TypeError):
        model.export(out_dir, format="tf_saved_model", verbose=False)
        return {"saved_model": out_dir}
    model.export(out_dir)
    return {"saved_model": out_dir}


def op_convert(saved_model: str, precision: str, out: str, calibration: str | None = None,
               int8_io: bool = False, users_graph: bool = False) -> dict:
    """The TFLite converter on a SavedModel. Integer files calibrate on ``calibration`` (an .npz keyed
    by the file's input names, in the file's layout). ``users_graph``: the SavedModel is the user's
    own (a Keras source), so TF ops TFLite lacks are the user's to replace (exit 2); in a graph
    onnx2tf made they are edgekit's failure (exit 3)."""
    import numpy as np
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    if precision != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif precision in ("int8", "int16x8"):
        names = list(tf.saved_model.load(saved_model).signatures["serving_default"].structured_input_signature[1])
        with np.load(calibration) as npz:
            arrays = {k: npz[k] for k in npz.files}
        order = list(arrays)

        def clean(name: str) -> str:
            return name.split(":")[0].removeprefix("serving_default_")

        by_clean = {clean(k): k for k in arrays}

        def gen():
            n = len(next(iter(arrays.values())))
            for i in range(n):
                yield {s: np.ascontiguousarray(arrays[by_clean.get(s, order[j])][i:i + 1])  # in the file's dtype
                       for j, s in enumerate(names)}

        converter.representative_dataset = gen
        if precision == "int16x8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        else:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if int8_io:
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
    try:
        blob = converter.convert()
    except Exception as exc:
        ops = sorted(set(re.findall(r'"?\btf\.([A-Z][A-Za-z0-9]*)"?\(', str(exc))))  # TF ops left unconverted
        if ops and users_graph:
            raise Refused(f"the model uses op(s) TFLite does not support: {', '.join(ops)}; "
                          "replace them with supported layers") from None
        text = str(exc)
        first = next((line.strip() for line in text.splitlines() if "error" in line.lower()),
                     text.splitlines()[0] if text else type(exc).__name__)
        if ops:
            first = f"op(s) TFLite does not support: {', '.join(ops)}"
        raise RuntimeError(f"TFLite converter ({precision}): {first[:300]}") from None
    Path(out).write_bytes(blob)
    return {"version": tf.__version__}


def op_int4(src: str, out: str, int8_scopes: list | None = None, float_scopes: list | None = None,
            only: str | None = None) -> dict:
    """ai-edge-quantizer: int4 weight-only; ``int8_scopes`` get int8 weights, ``float_scopes`` stay float,
    ``only`` quantizes just that op scope (sensitivity probes). Scopes are ops' output tensor names."""
    from ai_edge_quantizer import algorithm_manager, quantizer, recipe_manager
    from ai_edge_quantizer.recipe import TFLOperationName

    def exactly(scope: str) -> str:  # ai-edge-quantizer names an op by its output tensors, each followed by ';'
        return "^" + re.escape(scope) + ";"

    rm = recipe_manager.RecipeManager()
    rm.add_weight_only_config(regex=exactly(only) if only else ".*", operation_name=TFLOperationName.ALL_SUPPORTED,
                              num_bits=4)
    for scope in int8_scopes or ():
        rm.add_weight_only_config(regex=exactly(scope), operation_name=TFLOperationName.ALL_SUPPORTED, num_bits=8)
    for scope in float_scopes or ():
        rm.add_quantization_config(regex=exactly(scope), operation_name=TFLOperationName.ALL_SUPPORTED,
                                   algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    model = quantizer.Quantizer(src, rm.get_quantization_recipe()).quantize().quantized_model
    Path(out).write_bytes(bytes(model))
    import ai_edge_quantizer
    return {"version": getattr(ai_edge_quantizer, "__version__", "")}


def op_tf2onnx(loader: str, path: str, inputs: list, out: str, opset: int = 17) -> dict:
    """tf2onnx from a .keras file (safe_mode) or a SavedModel signature."""
    import tensorflow as tf
    import tf2onnx

    spec = tuple(tf.TensorSpec(shape, dtype, name=name) for name, shape, dtype in inputs)
    if loader == "keras":
        import keras
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset, output_path=out)
    else:
        fn = tf.saved_model.load(path).signatures["serving_default"]
        tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset, output_path=out)
    return {"version": tf2onnx.__version__}


def op_litert_torch(program: str, args: str, out: str) -> dict:
    """litert-torch: a torch.export program (``program``, a .pt2) to a .tflite, traced with the arrays in
    ``args`` (an .npz, arg_0, arg_1, ... in the forward's order)."""
    import numpy as np
    import torch

    import litert_torch

    with np.load(args) as npz:
        example = tuple(torch.from_numpy(npz[f"arg_{i}"]) for i in range(len(npz.files)))
    edge = litert_torch.convert(torch.export.load(program).module(), example)
    edge.export(out)
    return {"version": getattr(litert_torch, "__version__", "")}


def op_aeq(src: str, out: str, recipe: str, calibration: str | None = None) -> dict:
    """ai-edge-quantizer with one of its named recipes (dynamic_wi8_afp32, static_wi8_ai8, static_wi8_ai16);
    static recipes calibrate on ``calibration`` (an .npz keyed by the file's signature input names)."""
    import numpy as np
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer import recipe as recipes

    qt = quantizer.Quantizer(src, getattr(recipes, recipe)())
    result = None
    if calibration:
        with np.load(calibration) as npz:
            arrays = {k: npz[k] for k in npz.files}
        n = len(next(iter(arrays.values())))
        samples = [{k: v[i:i + 1] for k, v in arrays.items()} for i in range(n)]
        result = qt.calibrate({"serving_default": samples})
    model = qt.quantize(result).quantized_model
    Path(out).write_bytes(bytes(model))
    import ai_edge_quantizer
    return {"version": getattr(ai_edge_quantizer, "__version__", "")}


def op_warm() -> dict:
    """Import the converters ahead of the first real call: a build starts its worker early so that these
    imports overlap its torch-side work."""
    import onnx2tf  # noqa: F401  (imports tensorflow and tf_keras)

    return {}


OPS = {"warm": op_warm, "onnx2tf": op_onnx2tf, "litert_torch": op_litert_torch, "aeq": op_aeq, "keras_saved_model": op_keras_saved_model, "convert": op_convert, "int4": op_int4,
       "tf2onnx": op_tf2onnx}


def main(argv: list[str]) -> int:
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    log = os.open(argv[0], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    home = os.getcwd()
    for line in sys.stdin:
        request = json.loads(line)
        os.chdir(home)
        try:
            answer = {"ok": True, **OPS[request["op"]](**request["args"])}
        except ImportError as exc:
            answer = {"ok": False, "kind": "missing", "module": exc.name or str(exc), "message": str(exc)}
        except Refused as exc:
            answer = {"ok": False, "kind": "usage", "message": str(exc)}
        except Exception as exc:
            traceback.print_exc()
            answer = {"ok": False, "kind": "stage", "message": f"{type(exc).__name__}: {str(exc)[:400]}"}
        sys.stdout.flush()
        sys.stderr.flush()
        answers.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
