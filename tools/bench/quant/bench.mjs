// Benchmark of @w8a16/quant-core's hot loops (decode fp16 bytes -> f32, quantize rows, error stats) on a
// seeded 4096x4096 matrix, and of the fused WebAssembly kernel (quantizeRowsFromBytes) against the JS
// decode + quantize + stats pipeline it replaces (the named baseline), from F16 and BF16 bytes.
// Uses the BUILT package: run `npx tsup` in packages/quant-core first.
// Usage: node tools/bench/quant/bench.mjs [rows] [cols] [repeats]
import os from 'node:os';
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../../../packages/quant-core/dist/index.js', import.meta.url));
const Q = await import(dist);

const rows = Number(process.argv[2] ?? 4096);
const cols = Number(process.argv[3] ?? 4096);
const repeats = Number(process.argv[4] ?? 5);
const n = rows * cols;

/** mulberry32: small seeded PRNG, uniform in [0, 1). */
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Weight-like data: approximately normal (sum of 4 uniforms), std ~0.02, cast to fp16 bytes.
const rnd = mulberry32(42);
const w0 = new Float32Array(n);
for (let i = 0; i < n; i++) w0[i] = (rnd() + rnd() + rnd() + rnd() - 2) * 0.035;
const f16Bytes = new Uint8Array(2 * n);
Q.encodeFloats(f16Bytes, w0, 'F16');
const f16Unaligned = new Uint8Array(new ArrayBuffer(2 * n + 1), 1, 2 * n);
f16Unaligned.set(f16Bytes);

const w = new Float32Array(n);
const out = { q: new Int8Array(n), scale: new Float32Array(rows), offset: new Float32Array(rows) };

/** Best-of-`repeats` wall time in seconds (first call is a warm-up). */
function time(fn) {
  fn();
  let best = Infinity;
  for (let k = 0; k < repeats; k++) {
    const t0 = performance.now();
    fn();
    best = Math.min(best, (performance.now() - t0) / 1e3);
  }
  return best;
}

const results = [];
function row(name, seconds, baseline) {
  results.push({
    kernel: name,
    'ms': (seconds * 1e3).toFixed(1),
    'M elem/s': (n / seconds / 1e6).toFixed(1),
    'GB/s (f16 in)': ((2 * n) / seconds / 1e9).toFixed(3),
    'vs baseline': baseline === undefined ? '' : `${(baseline / seconds).toFixed(2)}x`,
  });
}

const tDecRef = time(() => Q.decodeFloatsRef(w, f16Bytes, 'F16'));
const tDec = time(() => Q.decodeFloats(w, f16Bytes, 'F16'));
const tDecU = time(() => Q.decodeFloats(w, f16Unaligned, 'F16'));
row('decodeFloatsRef F16 (baseline)', tDecRef);
row('decodeFloats F16 aligned', tDec, tDecRef);
row('decodeFloats F16 unaligned', tDecU, tDecRef);

Q.decodeFloats(w, f16Bytes, 'F16');
const f32a = { scheme: 'asym', compute: 'f32' };
const f16a = { scheme: 'asym', compute: 'f16' };
const tRef32 = time(() => Q.quantizeRowsRef(out, w, rows, cols, f32a));
const t32 = time(() => Q.quantizeRows(out, w, rows, cols, f32a));
const t32s = time(() => Q.quantizeRows(out, w, rows, cols, { scheme: 'sym', compute: 'f32' }));
const tRef16 = time(() => Q.quantizeRowsRef(out, w, rows, cols, f16a));
const t16 = time(() => Q.quantizeRows(out, w, rows, cols, f16a));
const tbf = time(() => Q.quantizeRows(out, w, rows, cols, { scheme: 'asym', compute: 'bf16' }));
row('quantizeRowsRef f32 asym (baseline)', tRef32);
row('quantizeRows f32 asym', t32, tRef32);
row('quantizeRows f32 sym', t32s, tRef32);
row('quantizeRowsRef f16 asym (baseline)', tRef16);
row('quantizeRows f16 asym', t16, tRef16);
row('quantizeRows bf16 asym', tbf, tRef16);
const tPipe = time(() => {
  Q.decodeFloats(w, f16Bytes, 'F16');
  Q.quantizeRows(out, w, rows, cols, f32a);
});
row('decode F16 + quantizeRows f32 asym', tPipe, tDecRef + tRef32);
Q.quantizeRows(out, w, rows, cols, f32a);
const tStats = time(() => Q.quantErrorStats(w, out, rows, cols));
row('quantErrorStats', tStats);
const tAll = time(() => {
  Q.decodeFloats(w, f16Bytes, 'F16');
  Q.quantizeRows(out, w, rows, cols, f32a);
  Q.quantErrorStats(w, out, rows, cols);
});
row('decode + quantize f32 asym + stats', tAll);

console.log(`@w8a16/quant-core bench: ${rows}x${cols} fp16 matrix (seed 42), best of ${repeats}`);
console.log(`node ${process.version}, ${os.cpus()[0]?.model ?? 'unknown cpu'}, ${os.cpus().length} cores`);
console.table(results);

// ---------------------------------------------------------------------------------------------
// Fused kernel: bytes -> q, scale, offset (+ stats), f32 arithmetic, asym, vs the JS pipeline.
const bf16Bytes = new Uint8Array(2 * n);
Q.encodeFloats(bf16Bytes, w0, 'BF16');
const fused = [];
function fusedRow(name, seconds, baseline) {
  fused.push({
    kernel: name,
    ms: (seconds * 1e3).toFixed(1),
    'M elem/s': (n / seconds / 1e6).toFixed(0),
    'GB/s in': ((2 * n) / seconds / 1e9).toFixed(2),
    'vs baseline': baseline === undefined ? '(baseline)' : `${(baseline / seconds).toFixed(1)}x`,
  });
}
for (const [dtype, bytes] of [['F16', f16Bytes], ['BF16', bf16Bytes]]) {
  const tJs = time(() => {
    Q.decodeFloats(w, bytes, dtype);
    Q.quantizeRows(out, w, rows, cols, f32a);
    Q.quantErrorStats(w, out, rows, cols);
  });
  const tFusedStats = time(() => Q.quantizeRowsFromBytes(out, bytes, dtype, rows, cols, f32a, Q.emptyQuantErrorStats()));
  const tFused = time(() => Q.quantizeRowsFromBytes(out, bytes, dtype, rows, cols, f32a));
  fusedRow(`JS decodeFloats + quantizeRows + quantErrorStats, ${dtype}`, tJs);
  fusedRow(`quantizeRowsFromBytes + stats, ${dtype}`, tFusedStats, tJs);
  fusedRow(`quantizeRowsFromBytes, no stats, ${dtype}`, tFused, tJs);
}
console.log(`\nfused kernel (f32 arithmetic, asym), backend: ${Q.fusedQuantBackend()}; GB/s of ${2 * n / 1e6} MB input`);
console.table(fused);
