// The bundle contract (apps/README.md): manifest checks, file choice, preprocessing, layout and quantization.
// Plain functions over plain data, no runtime here: runtimes.js runs the files.

export const SCHEMA_VERSION = 4;

// The subset of JSON Schema that manifest.schema.json uses (its description lists the keywords).
export function schemaErrors(value, schema, root, path = 'manifest') {
  if (schema.$ref) schema = root.$defs[schema.$ref.split('/').pop()];
  const show = (v) => JSON.stringify(v)?.slice(0, 60);
  if (schema.anyOf) {
    return schema.anyOf.every((s) => schemaErrors(value, s, root, path).length)
      ? [`${path}: ${show(value)} matches none of the allowed forms`] : [];
  }
  const isNum = typeof value === 'number';
  const kinds = {
    object: value !== null && typeof value === 'object' && !Array.isArray(value), array: Array.isArray(value),
    string: typeof value === 'string', boolean: typeof value === 'boolean', null: value === null,
    number: isNum, integer: isNum && Number.isInteger(value),
  };
  if (schema.type !== undefined && !kinds[schema.type]) return [`${path}: expected ${schema.type}, got ${show(value)}`];
  if ('const' in schema && value !== schema.const) return [`${path}: must be ${show(schema.const)}, got ${show(value)}`];
  if (schema.enum && !schema.enum.includes(value)) return [`${path}: ${show(value)} is not one of ${show(schema.enum)}`];
  if (isNum && schema.minimum !== undefined && value < schema.minimum) return [`${path}: ${value} is below ${schema.minimum}`];
  if (isNum && schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) {
    return [`${path}: ${value} must be above ${schema.exclusiveMinimum}`];
  }
  if (typeof value === 'string' && value.length < (schema.minLength ?? 0)) {
    return [`${path}: ${show(value)} is shorter than ${schema.minLength}`];
  }
  const errors = [];
  if (Array.isArray(value)) {
    if (value.length < (schema.minItems ?? 0)) errors.push(`${path}: needs at least ${schema.minItems} item(s)`);
    value.forEach((item, i) => errors.push(...schemaErrors(item, schema.items ?? {}, root, `${path}[${i}]`)));
  } else if (kinds.object) {
    for (const key of schema.required ?? []) if (!(key in value)) errors.push(`${path}: '${key}' is missing`);
    const props = schema.properties ?? {};
    const extra = schema.additionalProperties ?? true;
    for (const [key, v] of Object.entries(value)) {
      if (key in props) errors.push(...schemaErrors(v, props[key], root, `${path}.${key}`));
      else if (extra === false) errors.push(`${path}: unknown key '${key}'`);
      else if (typeof extra === 'object') errors.push(...schemaErrors(v, extra, root, `${path}.${key}`));
    }
  }
  return errors;
}

// One line that says what is wrong and what to do, or null when the manifest is one this app reads.
export function manifestProblem(manifest, schema, where) {
  const version = manifest?.schema_version;
  if (version !== SCHEMA_VERSION) {
    return `${where} has manifest schema_version ${version}; this app reads version ${SCHEMA_VERSION}: rebuild the ` +
      'bundle with this edgekit, or use the app that shipped with the bundle\'s edgekit';
  }
  const errors = schemaErrors(manifest, schema, schema);
  if (!errors.length) return null;
  return `${where} fails manifest.schema.json: ${errors[0]}` +
    (errors.length > 1 ? ` (and ${errors.length - 1} more)` : '') + '; rebuild the bundle';
}

// The file the manifest recommends for the runtime, else that runtime's first file.
export function chooseFile(manifest, runtime, fileName) {
  if (fileName) {
    const named = manifest.files.find((f) => f.file === fileName && f.runtime === runtime);
    if (!named) throw new Error(`${fileName} is not a ${runtime} file of this bundle`);
    return named;
  }
  const pick = manifest.recommended[runtime]?.file;
  const entry = manifest.files.find((f) => f.file === pick) ?? manifest.files.find((f) => f.runtime === runtime);
  if (!entry) throw new Error(`the bundle has no file for ${runtime}`);
  return entry;
}

// (C, H, W) planes -> (C, height, width), as torch's bilinear interpolate with align_corners=False does.
function resizeWeights(nIn, nOut, antialias) {
  const scale = nIn / nOut;
  const w = Array.from({ length: nOut }, () => new Float64Array(nIn));
  for (let i = 0; i < nOut; i++) {
    if (antialias && scale > 1) {  // a triangle filter over the source pixels each output covers
      const center = scale * (i + 0.5);
      const lo = Math.max(Math.trunc(center - scale + 0.5), 0);
      const hi = Math.min(Math.trunc(center + scale + 0.5), nIn);
      let sum = 0;
      for (let j = lo; j < hi; j++) { w[i][j] = Math.max(0, 1 - Math.abs((j - center + 0.5) / scale)); sum += w[i][j]; }
      for (let j = lo; j < hi; j++) w[i][j] /= sum;
    } else {
      const src = Math.max((i + 0.5) * scale - 0.5, 0);
      const i0 = Math.min(Math.trunc(src), nIn - 1);
      const i1 = Math.min(i0 + 1, nIn - 1);
      w[i][i0] += 1 - (src - i0);
      w[i][i1] += src - i0;
    }
  }
  return w;
}

export function resizeBilinear(planes, height, width, antialias) {
  const rows = resizeWeights(planes[0].length, height, antialias);
  const cols = resizeWeights(planes[0][0].length, width, antialias);
  return planes.map((plane) => rows.map((rw) => cols.map((cw) => {
    let acc = 0;
    rw.forEach((a, h) => { if (a) cw.forEach((b, x) => { if (b) acc += a * b * plane[h][x]; }); });
    return acc;
  })));
}

// A raw sample (H x W nested arrays, or H x W x C) -> {data: Float32Array, shape} of the source input, batch 1.
export function preprocess(raw, recipe) {
  let planes = Array.isArray(raw[0][0])
    ? raw[0][0].map((_, c) => raw.map((row) => row.map((px) => px[c]))) : [raw];
  for (const step of recipe.steps) {
    if (step.op === 'scale') planes = planes.map((p) => p.map((row) => row.map((v) => v * step.factor)));
    else if (step.op === 'resize') planes = resizeBilinear(planes, step.height, step.width, step.antialias);
    else if (step.op === 'normalize') {
      for (const key of ['mean', 'std']) {
        if (step[key].length !== 1 && step[key].length !== planes.length) {
          throw new Error(`the recipe normalizes ${step[key].length} ${key}(s) over ${planes.length} channel(s)`);
        }
      }
      const at = (list, c) => list[list.length === 1 ? 0 : c];
      planes = planes.map((p, c) => p.map((row) => row.map((v) => (v - at(step.mean, c)) / at(step.std, c))));
    }
  }
  const [C, H, W] = [planes.length, planes[0].length, planes[0][0].length];
  const data = new Float32Array(C * H * W);
  planes.forEach((p, c) => p.forEach((row, h) => row.forEach((v, x) => {
    data[recipe.layout === 'NCHW' ? (c * H + h) * W + x : (h * W + x) * C + c] = v;
  })));
  return { data, shape: recipe.layout === 'NCHW' ? [1, C, H, W] : [1, H, W, C] };
}

// RGBA pixels (ImageData) -> the raw sample the recipe starts from: its size, channels, range and ink.
export function imageToRaw(image, raw) {
  const { width, height, data } = image;
  const gray = raw.channels === 1;
  let planes = Array.from({ length: gray ? 1 : 3 }, (_, c) => Array.from({ length: height }, (_, y) =>
    Array.from({ length: width }, (_, x) => {
      const i = (y * width + x) * 4;
      return gray ? (0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2]) / 255 : data[i + c] / 255;
    })));
  if (raw.ink === 'high') {
    const mean = planes.flatMap((p) => p.flat()).reduce((a, b) => a + b, 0) / (planes.length * width * height);
    if (mean > 0.5) planes = planes.map((p) => p.map((row) => row.map((v) => 1 - v)));  // dark ink on light paper
    const all = planes.flatMap((p) => p.flat()).sort((a, b) => a - b);  // stretched: paper (median) 0, top stroke 1
    const n = all.length;
    const paper = n % 2 ? all[(n - 1) / 2] : (all[n / 2 - 1] + all[n / 2]) / 2;
    const top = all[n - 1];
    if (top > paper) planes = planes.map((p) => p.map((row) => row.map((v) => Math.min(Math.max((v - paper) / (top - paper), 0), 1))));
  }
  if (raw.fit === 'ink-box') planes = fitInkBox(planes, (raw.ink ?? 'high') === 'high');
  planes = resizeBilinear(planes, raw.height, raw.width, true);
  const [lo, hi] = raw.range;
  const scaled = planes.map((p) => p.map((row) => row.map((v) => lo + Math.min(Math.max(v, 0), 1) * (hi - lo))));
  return gray ? scaled[0] : scaled[0].map((row, y) => row.map((_, x) => scaled.map((p) => p[y][x])));
}

// The recipe's "fit": "ink-box": crop to the ink's bounding box and pad it to a centred square, as the raw
// samples were made (the digit fills the box whatever its size or place in the image).
export function fitInkBox(planes, high) {
  const H = planes[0].length; const W = planes[0][0].length;
  let top = H; let bottom = -1; let left = W; let right = -1;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const values = planes.map((p) => p[y][x]);
      const ink = high ? Math.max(...values) : 1 - Math.min(...values);
      if (ink > 0.25) { top = Math.min(top, y); bottom = Math.max(bottom, y); left = Math.min(left, x); right = Math.max(right, x); }
    }
  }
  if (bottom < 0) return planes;
  const h = bottom - top + 1; const w = right - left + 1; const side = Math.max(h, w);
  const dy = Math.floor((side - h) / 2); const dx = Math.floor((side - w) / 2);
  return planes.map((p) => Array.from({ length: side }, (_, y) => Array.from({ length: side }, (_, x) => {
    const sy = y - dy; const sx = x - dx;
    return sy >= 0 && sy < h && sx >= 0 && sx < w ? p[top + sy][left + sx] : (high ? 0 : 1);
  })));
}

const TYPED = { float32: Float32Array, int8: Int8Array, uint8: Uint8Array, int16: Int16Array, int32: Int32Array };
const RANGE = { int8: [-128, 127], uint8: [0, 255], int16: [-32768, 32767] };

// A source-layout tensor -> the file's tensor: transposed by source_perm, quantized where the file wants integers.
export function toFile(tensor, source) {
  let { data, shape } = source;
  if (tensor.source_perm) {
    const perm = tensor.source_perm;
    const outShape = perm.map((p) => shape[p]);
    const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
    const out = new Float32Array(data.length);
    const idx = new Array(outShape.length).fill(0);
    for (let n = 0; n < data.length; n++) {
      let src = 0;
      idx.forEach((v, k) => { src += v * strides[perm[k]]; });
      out[n] = data[src];
      for (let k = idx.length - 1; k >= 0; k--) { if (++idx[k] < outShape[k]) break; idx[k] = 0; }
    }
    data = out;
    shape = outShape;
  }
  const Typed = TYPED[tensor.dtype];
  if (!Typed) throw new Error(`input '${tensor.name}' is ${tensor.dtype}; this app feeds float or int8/uint8/int16 images`);
  const q = tensor.quantization;
  if (q) {  // as numpy does it: float32 arithmetic, round half to even, then clip
    const [lo, hi] = RANGE[tensor.dtype];
    const f = Math.fround;
    const q8 = (v) => Math.min(Math.max(roundHalfEven(f(f(f(v) / f(q.scale)) + q.zero_point)), lo), hi);
    return { data: Typed.from(data, q8), shape };
  }
  return { data: Typed.from(data), shape };
}

export function roundHalfEven(v) {
  const floor = Math.floor(v);
  const rest = v - floor;
  if (rest !== 0.5) return Math.round(v);
  return floor % 2 === 0 ? floor : floor + 1;
}

// A file output -> float values in source terms (dequantized where the tensor is quantized).
export function fromFile(tensor, values) {
  const q = tensor.quantization;
  return q ? Float32Array.from(values, (v) => (v - q.zero_point) * q.scale) : Float32Array.from(values);
}

export function probabilities(scores) {
  const s = Array.from(scores);
  const sum = s.reduce((a, b) => a + b, 0);
  if (Math.min(...s) >= 0 && Math.abs(sum - 1) < 1e-3) return s;
  const top = Math.max(...s);
  const e = s.map((v) => Math.exp(v - top));
  const total = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / total);
}

// The same fields as `edgekit bench` prints: percentiles by linear interpolation, as numpy's default.
export function latencyStats(ms, warmup) {
  const s = [...ms].sort((a, b) => a - b);
  const pct = (p) => {
    const k = (s.length - 1) * p / 100;
    const f = Math.floor(k);
    return s[f] + (s[Math.min(f + 1, s.length - 1)] - s[f]) * (k - f);
  };
  const mean = s.reduce((a, b) => a + b, 0) / s.length;
  const std = Math.sqrt(s.reduce((a, b) => a + (b - mean) ** 2, 0) / s.length);
  return { p50_ms: pct(50), p90_ms: pct(90), p99_ms: pct(99), mean_ms: mean, std_ms: std, runs: s.length, warmup };
}
