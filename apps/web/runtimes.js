// The two browser runtimes behind one shape: open(bytes, entry, threads) -> {run(sourceFeed) -> {output: Float32Array}}.
// The ONNX file runs in onnxruntime-web (wasm), the TFLite file in LiteRT.js (@litertjs/core, wasm); both from npm.
import * as ort from 'onnxruntime-web';
import { loadLiteRt, loadAndCompile, Tensor } from '@litertjs/core';
import { toFile, fromFile } from './manifest.js';

const base = new URL('./node_modules/', import.meta.url).href;

// A file tensor's value in a runtime's result: by its name, then by its source name, then the only one.
// Never by position: TFLite orders signature tensors by name, not as the source does.
function pick(results, tensor) {
  const names = Object.keys(results);
  const key = [tensor.name, tensor.source_name].find((n) => n && names.includes(n)) ??
    (names.length === 1 ? names[0] : null);
  if (key === null) throw new Error(`no tensor '${tensor.name}' in the file's results (${names.join(', ')})`);
  return results[key];
}

let ortThreads = null;  // onnxruntime-web reads numThreads at its first session only: one page, one count

async function openOrt(bytes, entry, threads) {
  ort.env.wasm.wasmPaths = `${base}onnxruntime-web/dist/`;
  ortThreads ??= threads;
  ort.env.wasm.numThreads = ortThreads;
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
  return {
    runtime: 'onnxruntime-web',
    threads: ortThreads,
    note: ortThreads !== threads ? `onnxruntime-web keeps the page's first thread count (${ortThreads}); reload to change it` : '',
    async run(feed) {
      const feeds = {};
      for (const t of entry.iospec.inputs) {
        const { data, shape } = toFile(t, feed[t.source_name ?? t.name]);
        feeds[t.name] = new ort.Tensor(t.dtype, data, shape);
      }
      const results = await session.run(feeds);
      const out = {};
      entry.iospec.outputs.forEach((t) => { out[t.source_name ?? t.name] = fromFile(t, pick(results, t).data); });
      return out;
    },
  };
}

let litertLoaded = null;

// LiteRT.js compiles static shapes only: a copy of the .tflite whose dynamic axes (-1 in each tensor's
// shape_signature, e.g. edgekit's dynamic batch) are pinned to the size in its shape (1). Read with the
// flatbuffer layout of TFLite's schema: Model.subgraphs (field 2) -> SubGraph.tensors (field 0) ->
// Tensor.shape (field 0) and Tensor.shape_signature (field 7). The bundle's file is not changed.
export function pinDynamicAxes(bytes) {
  const out = new Uint8Array(bytes);
  const v = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const field = (table, i) => {
    const vt = table - v.getInt32(table, true);
    if (v.getUint16(vt, true) <= 4 + 2 * i) return null;
    const off = v.getUint16(vt + 4 + 2 * i, true);
    return off ? table + off : null;
  };
  const vector = (at) => { const vec = at + v.getUint32(at, true); return [vec + 4, v.getUint32(vec, true)]; };
  const tables = (at) => { const [start, n] = vector(at); return Array.from({ length: n }, (_, k) => start + 4 * k + v.getUint32(start + 4 * k, true)); };
  let pinned = 0;
  const root = v.getUint32(0, true);
  for (const graph of tables(field(root, 2))) {
    const tensorsAt = field(graph, 0);
    if (tensorsAt === null) continue;
    for (const tensor of tables(tensorsAt)) {
      const shapeAt = field(tensor, 0); const sigAt = field(tensor, 7);
      if (shapeAt === null || sigAt === null) continue;
      const [shape, n] = vector(shapeAt); const [sig, m] = vector(sigAt);
      for (let k = 0; k < Math.min(n, m); k++) {
        if (v.getInt32(sig + 4 * k, true) === -1) { v.setInt32(sig + 4 * k, v.getInt32(shape + 4 * k, true), true); pinned++; }
      }
    }
  }
  return { bytes: out, pinned };
}

const LITERT_JS_DTYPES = ['float32', 'int32', 'uint8'];  // the tensor types @litertjs/core 2.5 takes and gives

async function openLiteRt(bytes, entry, threads) {
  const odd = [...entry.iospec.inputs, ...entry.iospec.outputs].find((t) => !LITERT_JS_DTYPES.includes(t.dtype));
  if (odd) {
    throw new Error(`LiteRT.js takes ${LITERT_JS_DTYPES.join(', ')} tensors, and '${odd.name}' is ${odd.dtype} ` +
      '(a build with --int8-io): open this bundle\'s float-I/O TFLite file or its ONNX file instead');
  }
  litertLoaded ??= loadLiteRt(`${base}@litertjs/core/wasm/`, { threads: threads > 1 });
  await litertLoaded;
  const { bytes: fixed, pinned } = pinDynamicAxes(bytes);
  const model = await loadAndCompile(fixed, { accelerator: 'wasm', cpuOptions: { numThreads: threads } });
  const details = model.getInputDetails();
  return {
    runtime: 'LiteRT.js',
    threads,
    note: pinned ? 'dynamic axes pinned to the file\'s own sizes (LiteRT.js compiles static shapes)' : '',
    async run(feed) {
      const named = {};
      entry.iospec.inputs.forEach((t) => {
        const { data, shape } = toFile(t, feed[t.source_name ?? t.name]);
        const d = details.find((x) => x.name === t.name || x.name === t.source_name) ??
          (details.length === 1 ? details[0] : null);
        if (!d) throw new Error(`${entry.file} has no input '${t.name}' (it has ${details.map((x) => x.name).join(', ')})`);
        named[d.name] = new Tensor(data, shape);
      });
      const results = await model.run(named);
      const out = {};
      entry.iospec.outputs.forEach((t) => { out[t.source_name ?? t.name] = fromFile(t, pick(results, t).toTypedArray()); });
      Object.values(named).forEach((x) => x.delete());
      Object.values(results).forEach((x) => x.delete());
      return out;
    },
  };
}

export async function openFile(bytes, entry, threads = 1) {
  if (entry.runtime === 'onnxruntime') return openOrt(bytes, entry, threads);
  if (entry.runtime === 'litert') return openLiteRt(bytes, entry, threads);
  throw new Error(`${entry.file} runs in ${entry.runtime}, which has no browser build here`);
}
