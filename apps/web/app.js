// The page: open a bundle (a URL or a folder), draw or pick a digit/image, see the label; benchmark the file.
// window.edgekit exposes the same steps to scripts (the Playwright tests drive the page through it).
import { chooseFile, imageToRaw, latencyStats, manifestProblem, preprocess, probabilities } from './manifest.js';
import { openFile } from './runtimes.js';

const $ = (id) => document.getElementById(id);
const state = { manifest: null, entry: null, session: null, lastFeed: null };
const params = new URLSearchParams(location.search);

function status(text) { $('status').textContent = text; }
function fail(text) {
  $('error').textContent = text;
  $('error').hidden = false;
  state.session = null;
  status('stopped');
  throw new Error(text);
}

async function fetchBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

// source: a URL of a bundle folder, or a FileList from the folder picker.
async function open(source, runtime, { threads = 1, file = null } = {}) {
  $('error').hidden = true;
  state.session = null;
  status('loading…');
  const schema = await (await fetch(new URL('manifest.schema.json', location.href))).json();
  let readText; let readBytes; let where;
  if (typeof source === 'string') {
    const root = new URL(source.endsWith('/') ? source : `${source}/`, location.href);
    where = new URL('manifest.json', root).href;
    readText = async (name) => new TextDecoder().decode(await fetchBytes(new URL(name, root)));
    readBytes = (name) => fetchBytes(new URL(name, root));
  } else {
    const byName = Object.fromEntries([...source].map((f) => [f.name, f]));
    where = 'the chosen folder\'s manifest.json';
    if (!byName['manifest.json']) fail('the chosen folder has no manifest.json; choose an edgekit bundle folder');
    readText = (name) => byName[name].text();
    readBytes = async (name) => {
      if (!byName[name]) throw new Error(`${name} is listed in the manifest but missing from the folder`);
      return new Uint8Array(await byName[name].arrayBuffer());
    };
  }
  let manifest;
  try { manifest = JSON.parse(await readText('manifest.json')); } catch (e) { fail(`${where}: ${e.message}`); }
  const problem = manifestProblem(manifest, schema, where);
  if (problem) fail(problem);
  let entry;
  try { entry = chooseFile(manifest, runtime, file); } catch (e) { fail(e.message); }
  try {
    state.session = await openFile(await readBytes(entry.file), entry, threads);
  } catch (e) { fail(`${entry.file} did not load in ${runtime}: ${e.message ?? e}`); }
  Object.assign(state, { manifest, entry });
  $('runtime').value = runtime;
  status(`${manifest.model}: ${entry.file} (${entry.precision}) in ${state.session.runtime}, ` +
    `${threads} thread${threads > 1 ? 's' : ''}${crossOriginIsolated ? '' : ' — not cross-origin isolated'}` +
    (state.session.note ? `; ${state.session.note}` : ''));
  renderBars(null);
  return { file: entry.file, runtime: state.session.runtime, precision: entry.precision };
}

function inputName() {
  const recipe = state.manifest.preprocessing;
  return recipe ? recipe.input : (state.entry.iospec.inputs[0].source_name ?? state.entry.iospec.inputs[0].name);
}

function firstOutput() { const t = state.entry.iospec.outputs[0]; return t.source_name ?? t.name; }

async function runFeed(source) {
  if (!state.session) throw new Error('open a bundle first');
  state.lastFeed = source;
  return state.session.run({ [inputName()]: source });
}

// Raw samples (the recipe's "raw" form, nested arrays) -> each sample's outputs as plain arrays.
async function runRaw(raws) {
  const out = [];
  for (const raw of raws) {
    const result = await runFeed(preprocess(raw, state.manifest.preprocessing));
    out.push(Object.fromEntries(Object.entries(result).map(([k, v]) => [k, Array.from(v)])));
  }
  return out;
}

function show(scores) {
  const p = probabilities(scores);
  const labels = state.manifest.labels ?? p.map((_, i) => String(i));
  const best = p.indexOf(Math.max(...p));
  $('label').textContent = labels[best];
  $('confidence').textContent = `${(100 * p[best]).toFixed(1)} %`;
  renderBars(p, labels);
  return { label: labels[best], index: best, probability: p[best], probabilities: p };
}

function renderBars(p, labels) {
  const box = $('bars');
  box.replaceChildren();
  if (!p) { $('label').textContent = '–'; $('confidence').textContent = ''; return; }
  p.forEach((v, i) => {
    const row = document.createElement('div');
    row.className = 'bar';
    row.innerHTML = `<span class="name"></span><span class="track"><span class="fill"></span></span><span class="pct"></span>`;
    row.querySelector('.name').textContent = labels[i];
    row.querySelector('.fill').style.width = `${(100 * v).toFixed(1)}%`;
    row.querySelector('.pct').textContent = `${(100 * v).toFixed(1)}%`;
    box.append(row);
  });
}

async function classifyImage(imageData) {
  const recipe = state.manifest?.preprocessing;
  if (!recipe?.raw) fail('this bundle\'s manifest has no "raw" recipe, so the page cannot turn an image into input');
  const result = await runFeed(preprocess(imageToRaw(imageData, recipe.raw), recipe));
  return show(result[firstOutput()]);
}

async function classifyCanvas() {
  const canvas = $('pad');
  return classifyImage(canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height));
}

// Paints a raw sample (the recipe's range) on the pad as ink, so a known digit can be shown and classified.
function drawRaw(raw) {
  const canvas = $('pad');
  const ctx = canvas.getContext('2d');
  const [lo, hi] = state.manifest.preprocessing.raw.range;
  const h = raw.length; const w = raw[0].length;
  const cell = canvas.width / w;
  raw.forEach((row, y) => row.forEach((v, x) => {
    const level = Math.round(255 * (v - lo) / (hi - lo));
    ctx.fillStyle = `rgb(${level},${level},${level})`;
    ctx.fillRect(x * cell, y * cell, cell, canvas.height / h);
  }));
}

async function bench({ runs = 200, warmup = 20 } = {}) {
  if (!state.session) throw new Error('open a bundle first');
  const feed = state.lastFeed ?? preprocess(imageToRaw($('pad').getContext('2d')
    .getImageData(0, 0, $('pad').width, $('pad').height), state.manifest.preprocessing.raw), state.manifest.preprocessing);
  for (let i = 0; i < warmup; i++) await state.session.run({ [inputName()]: feed });
  const ms = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await state.session.run({ [inputName()]: feed });
    ms.push(performance.now() - t0);
  }
  const stats = { file: state.entry.file, runtime: state.session.runtime, threads: state.session.threads,
    ...latencyStats(ms, warmup), timer_resolution_ms: timerResolution() };
  $('bench-out').textContent = ['p50_ms', 'p90_ms', 'p99_ms', 'mean_ms', 'std_ms']
    .map((k) => `${k} ${stats[k].toFixed(3)}`).join('   ') + `   runs ${runs} (${stats.runtime}, ${stats.threads} thread)`;
  return stats;
}

function timerResolution() {  // cross-origin isolated pages get 5 µs timers, others 100 µs: the smallest step seen
  let best = Infinity;
  for (let i = 0; i < 50; i++) {
    const a = performance.now(); let b = a;
    while (b === a) b = performance.now();
    best = Math.min(best, b - a);
  }
  return best;
}

function clearPad() {
  const ctx = $('pad').getContext('2d');
  ctx.fillStyle = 'black';
  ctx.fillRect(0, 0, $('pad').width, $('pad').height);
}

function wirePad() {
  const canvas = $('pad');
  const ctx = canvas.getContext('2d');
  let drawing = false;
  const at = (e) => { const r = canvas.getBoundingClientRect(); return [(e.clientX - r.left) * canvas.width / r.width,
    (e.clientY - r.top) * canvas.height / r.height]; };
  canvas.addEventListener('pointerdown', (e) => { drawing = true; ctx.beginPath(); ctx.moveTo(...at(e)); });
  canvas.addEventListener('pointermove', (e) => {
    if (!drawing) return;
    Object.assign(ctx, { strokeStyle: 'white', lineWidth: canvas.width / 8, lineCap: 'round', lineJoin: 'round' });
    ctx.lineTo(...at(e));
    ctx.stroke();
  });
  const end = () => { if (drawing) { drawing = false; if (state.session) classifyCanvas(); } };
  canvas.addEventListener('pointerup', end);
  canvas.addEventListener('pointerleave', end);
}

function wireControls() {
  const runtime = () => $('runtime').value;
  const threads = () => Number($('threads').value);
  $('load').addEventListener('click', () => open($('bundle').value, runtime(), { threads: threads() }).catch(() => {}));
  $('folder').addEventListener('change', (e) => open(e.target.files, runtime(), { threads: threads() }).catch(() => {}));
  $('clear').addEventListener('click', () => { clearPad(); renderBars(null); });
  $('classify').addEventListener('click', () => classifyCanvas().catch(() => {}));
  $('bench').addEventListener('click', () => bench({ runs: Number($('runs').value) }).catch((e) => fail(e.message)));
  $('image').addEventListener('change', async (e) => {
    const bitmap = await createImageBitmap(e.target.files[0]);
    const c = new OffscreenCanvas(bitmap.width, bitmap.height);
    c.getContext('2d').drawImage(bitmap, 0, 0);
    classifyImage(c.getContext('2d').getImageData(0, 0, bitmap.width, bitmap.height)).catch(() => {});
  });
}

clearPad();
wirePad();
wireControls();
$('bundle').value = params.get('bundle') ?? 'bundle/';
$('runtime').value = params.get('runtime') ?? 'onnxruntime';
window.edgekit = { open, runRaw, classifyCanvas, drawRaw, bench, clearPad, ready: true };
if (params.get('autoload') !== '0') {
  open($('bundle').value, $('runtime').value, { file: params.get('file') }).catch(() => {});
}
