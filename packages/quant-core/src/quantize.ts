// Per-output-channel int8 weight quantization exactly as msModelSlim's legacy W8A16 quantizer
// computes it (spec §1): a literal op-by-op oracle (quantizeRowsRef) and a fast path held to it.
// Not here: file layout, AWQ scale search (anti-outlier), KV-cache quantization (kvcache-int8).

import { RNE_MAGIC, roundBf16Fast, roundF16Fast, roundTo, type ComputeDType, type QuantScheme } from './dtype';
import { QuantError } from './errors';

/**
 * Quantized rows: q is rows*cols row-major int8; scale/offset hold one value per row, as values of
 * the compute dtype stored exactly in f32. offset is integer-valued, in -128..127 for f32 compute;
 * fp16/bf16 rounding can push it slightly outside (e.g. 128 for a row whose fp16 scale is subnormal).
 */
export interface QuantizedRows {
  q: Int8Array;
  scale: Float32Array;
  offset: Float32Array;
}

export interface QuantOptions {
  scheme: QuantScheme;
  compute: ComputeDType;
}

/** Lower bound on a scale: torch.finfo(torch.float32).eps, what msModelSlim clamps to (all-zero rows). */
export const QUANT_EPS = 1.1920928955078125e-7; // 2^-23
/** asym: 256 int8 levels -> the range (mx - mn) is divided by 255; codes -128..127, offset = round(-mn/scale) - 128. */
export const ASYM_LEVELS = 255;
export const ASYM_Q_MIN = -128;
export const ASYM_Q_MAX = 127;
/** sym: msModelSlim's saver passes max_bound = 2^(8-1) - 1 = 127, so codes are clamped to -127..127. */
export const SYM_Q_MAX = 127;

/** The largest |x| roundHalfEven's magic-number form handles (beyond, the plain form is used). */
const RNE_FAST_LIMIT = 2 ** 51;

/** torch.round: round half to even. Exact for every finite double. */
export function roundHalfEven(x: number): number {
  return Math.abs(x) < RNE_FAST_LIMIT ? x + RNE_MAGIC - RNE_MAGIC : roundHalfEvenRef(x);
}

/** Plain round-half-even (the oracle for the magic-number form): floor, then compare the fraction with 1/2. */
export function roundHalfEvenRef(x: number): number {
  if (!Number.isFinite(x)) return x;
  const f = Math.floor(x);
  // Exact (Sterbenz) except for -0.5 < x < 0, where rounding keeps d >= 0.5 and the answer (0) right.
  const d = x - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

// ---------------------------------------------------------------------------------------------
// Argument checks shared by every entry point.

export function checkShape(fn: string, rows: number, cols: number): void {
  if (!Number.isSafeInteger(rows) || rows < 0 || !Number.isSafeInteger(cols) || cols < 0) {
    throw new QuantError('E_SHAPE', `${fn}: expected non-negative integer rows and cols, found rows=${rows}, cols=${cols}`);
  }
}

export function checkLength(fn: string, name: string, found: number, expected: number): void {
  if (found !== expected) {
    throw new QuantError('E_SIZE', `${fn}: expected ${name}.length = ${expected}, found ${found}`);
  }
}

export function checkOptions(fn: string, opts: QuantOptions): void {
  if (opts.scheme !== 'asym' && opts.scheme !== 'sym') {
    throw new QuantError('E_OPTIONS', `${fn}: expected scheme 'asym' or 'sym', found '${String(opts.scheme)}'`);
  }
  if (opts.compute !== 'f32' && opts.compute !== 'f16' && opts.compute !== 'bf16') {
    throw new QuantError('E_OPTIONS', `${fn}: expected compute 'f32', 'f16' or 'bf16', found '${String(opts.compute)}'`);
  }
}

function checkQuantizeArgs(fn: string, out: QuantizedRows, w: Float32Array, rows: number, cols: number, opts: QuantOptions): void {
  checkShape(fn, rows, cols);
  checkOptions(fn, opts);
  checkLength(fn, 'w', w.length, rows * cols);
  checkLength(fn, 'out.q', out.q.length, rows * cols);
  checkLength(fn, 'out.scale', out.scale.length, rows);
  checkLength(fn, 'out.offset', out.offset.length, rows);
}

/**
 * Finds the first weight of row r of w that is not finite in the compute dtype and builds the error.
 * `reportRow` is the row named in it (the caller's index when w holds only part of its rows).
 */
export function nonFiniteError(fn: string, w: Float32Array, r: number, cols: number, c: ComputeDType, reportRow = r): QuantError {
  for (let j = 0; j < cols; j++) {
    const raw = w[r * cols + j];
    const x = roundTo(raw, c);
    if (!Number.isFinite(x)) {
      const why = Number.isFinite(raw) ? ` (${raw} overflows ${c})` : '';
      return new QuantError(
        'E_NONFINITE_WEIGHT',
        `${fn}: expected finite weights, found ${x}${why} at row ${reportRow}, col ${j} (relative to the array passed in)`,
        { row: reportRow, col: j },
      );
    }
  }
  // Unreachable when called after a failed finiteness check; kept total for the type checker.
  return new QuantError('E_NONFINITE_WEIGHT', `${fn}: expected finite weights, found a non-finite value in row ${reportRow}`, {
    row: reportRow,
  });
}

// ---------------------------------------------------------------------------------------------
// The oracle: spec §1.4 op by op. Every intermediate goes through roundTo(·, compute).

/**
 * Quantizes `rows` rows of `w` (row-major, rows*cols) into `out`, literally as spec §1.4.
 * Weights are first cast to the compute dtype (a no-op for values already representable in it,
 * which is what callers pass: f16/bf16 checkpoint values for f16/bf16 compute).
 * Throws QuantError 'E_NONFINITE_WEIGHT' (row, col set) at the first weight that is not finite in
 * the compute dtype; rows before it have been written.
 */
export function quantizeRowsRef(out: QuantizedRows, w: Float32Array, rows: number, cols: number, opts: QuantOptions): void {
  checkQuantizeArgs('quantizeRowsRef', out, w, rows, cols, opts);
  const c = opts.compute;
  const R = (x: number): number => roundTo(x, c);
  const eps = R(QUANT_EPS);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    // mn = min(row, 0), mx = max(row, 0): the range always includes 0.
    let mn = 0;
    let mx = 0;
    for (let j = 0; j < cols; j++) {
      const x = R(w[base + j]);
      if (!Number.isFinite(x)) throw nonFiniteError('quantizeRowsRef', w, r, cols, c);
      mn = Math.min(mn, x);
      mx = Math.max(mx, x);
    }
    let scale: number;
    let offset: number;
    if (opts.scheme === 'asym') {
      scale = Math.max(R(R(mx - mn) / ASYM_LEVELS), eps);
      offset = R(roundHalfEvenRef(R((-1 * mn) / scale)) + ASYM_Q_MIN);
      for (let j = 0; j < cols; j++) {
        const v = roundHalfEvenRef(R(R(R(w[base + j]) / scale) + offset));
        out.q[base + j] = Math.min(Math.max(v, ASYM_Q_MIN), ASYM_Q_MAX);
      }
    } else {
      const amax = Math.max(Math.abs(mn), mx);
      scale = Math.max(R(amax / SYM_Q_MAX), eps);
      offset = 0;
      for (let j = 0; j < cols; j++) {
        const v = roundHalfEvenRef(R(R(w[base + j]) / scale));
        out.q[base + j] = Math.min(Math.max(v, -SYM_Q_MAX), SYM_Q_MAX);
      }
    }
    out.scale[r] = scale;
    out.offset[r] = offset;
  }
}

// ---------------------------------------------------------------------------------------------
// The fast path. Same ops in the same order, specialised per compute dtype so V8 inlines them:
// - f32: Math.fround after every op is required (a double division followed by a double add
//   differs from the float32 pair at .5 boundaries, e.g. t = 0.5 + 2^-24, o = 100), and it is
//   cheap. The division stays: an f32 reciprocal is not bit-exact, and an f64 reciprocal (which
//   would be, for f32 operands) measured only ~10% faster in the loop.
// - f16/bf16: rounding in f64 arithmetic (roundF16Fast/roundBf16Fast: Veltkamp splitting, tested
//   equal to roundTo) instead of the bit-level conversion round trip.
// - round-half-even via the 1.5*2^52 magic add: every rounded value is < 2^51 in magnitude
//   (|w/scale| <= ~256 since scale comes from the same row's range, plus |offset| <= 128).
// - one min/max pass with comparisons (NaN compares false and is skipped), plus `bad += x - x`,
//   which stays 0 for finite x and turns NaN for NaN or +-Inf: non-finite detection for one add.
// The per-element helpers use literals, not the named constants: V8 re-reads a module-level
// binding (with a TDZ check) on every access in a loop, which halved throughput when they did.
// Literals: 6755399441055744 = RNE_MAGIC; -128/127 = ASYM_Q_MIN/ASYM_Q_MAX; 127 = SYM_Q_MAX.

function codeAsymF32(x: number, s: number, o: number): number {
  const v = Math.fround(Math.fround(x / s) + o) + 6755399441055744 - 6755399441055744;
  return v < -128 ? -128 : v > 127 ? 127 : v;
}
function codeSymF32(x: number, s: number): number {
  const v = Math.fround(x / s) + 6755399441055744 - 6755399441055744;
  return v < -127 ? -127 : v > 127 ? 127 : v;
}
/** x is already an fp16 value (rounded in the caller). */
function codeAsymF16(x: number, s: number, o: number): number {
  const v = roundF16Fast(roundF16Fast(x / s) + o) + 6755399441055744 - 6755399441055744;
  return v < -128 ? -128 : v > 127 ? 127 : v;
}
function codeSymF16(x: number, s: number): number {
  const v = roundF16Fast(x / s) + 6755399441055744 - 6755399441055744;
  return v < -127 ? -127 : v > 127 ? 127 : v;
}
function codeAsymBf16(x: number, s: number, o: number): number {
  const v = roundBf16Fast(roundBf16Fast(x / s) + o) + 6755399441055744 - 6755399441055744;
  return v < -128 ? -128 : v > 127 ? 127 : v;
}
function codeSymBf16(x: number, s: number): number {
  const v = roundBf16Fast(x / s) + 6755399441055744 - 6755399441055744;
  return v < -127 ? -127 : v > 127 ? 127 : v;
}

// Each compute dtype has its own min/max and row-loop functions: one function holding all three
// variants ran out of V8's inlining budget for the last one, whose rounding calls then boxed every
// double (bf16 became several times slower and GC-bound).

/**
 * [mn, mx, cast] from a min/max pass, then [scale, offset] of the row (module scratch: no
 * allocation). cast != 0: some weight of the row is not a value of the compute dtype.
 */
const ROW_PARAMS = new Float64Array(3);

/** One pass over w[base, end): p = [min(row, 0), max(row, 0)]; false if a weight is not finite. */
function minMaxF32(w: Float32Array, base: number, end: number, p: Float64Array): boolean {
  let mn = 0;
  let mx = 0;
  let bad = 0;
  for (let i = base; i < end; i++) {
    const x = w[i];
    mn = x < mn ? x : mn;
    mx = x > mx ? x : mx;
    bad += x - x;
  }
  p[0] = mn;
  p[1] = mx;
  return bad === 0;
}

/**
 * minMaxF32 of the weights rounded to fp16 (an fp16 overflow counts as non-finite); p[2] = 0 when
 * every weight already is an fp16 value (the usual case), so the code pass can skip the cast.
 */
function minMaxF16(w: Float32Array, base: number, end: number, p: Float64Array): boolean {
  let mn = 0;
  let mx = 0;
  let bad = 0;
  let cast = 0;
  for (let i = base; i < end; i++) {
    const v = w[i];
    const x = roundF16Fast(v);
    mn = x < mn ? x : mn;
    mx = x > mx ? x : mx;
    bad += x - x;
    cast += Math.abs(x - v);
  }
  p[0] = mn;
  p[1] = mx;
  p[2] = cast;
  return bad === 0;
}

function minMaxBf16(w: Float32Array, base: number, end: number, p: Float64Array): boolean {
  let mn = 0;
  let mx = 0;
  let bad = 0;
  let cast = 0;
  for (let i = base; i < end; i++) {
    const v = w[i];
    const x = roundBf16Fast(v);
    mn = x < mn ? x : mn;
    mx = x > mx ? x : mx;
    bad += x - x;
    cast += Math.abs(x - v);
  }
  p[0] = mn;
  p[1] = mx;
  p[2] = cast;
  return bad === 0;
}

/** p = [mn, mx] -> p = [scale, offset], every op rounded by R (spec §1.1 / §1.2). */
function rowScaleOffset(p: Float64Array, asym: boolean, R: (x: number) => number): void {
  const mn = p[0];
  const mx = p[1];
  const eps = R(QUANT_EPS);
  if (asym) {
    const s = R(R(mx - mn) / ASYM_LEVELS);
    const scale = s > eps ? s : eps;
    p[0] = scale;
    p[1] = R(roundHalfEven(R(-mn / scale)) + ASYM_Q_MIN);
  } else {
    const s = R((-mn > mx ? -mn : mx) / SYM_Q_MAX);
    p[0] = s > eps ? s : eps;
    p[1] = 0;
  }
}

/** Row kernels return -1, or the first row holding a non-finite weight (rows before it are done). */
function quantizeRowsF32(out: QuantizedRows, w: Float32Array, rows: number, cols: number, asym: boolean): number {
  const { q, scale, offset } = out;
  const p = ROW_PARAMS;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    const end = base + cols;
    if (!minMaxF32(w, base, end, p)) return r;
    rowScaleOffset(p, asym, Math.fround);
    const s = p[0];
    const o = p[1];
    if (asym) for (let i = base; i < end; i++) q[i] = codeAsymF32(w[i], s, o);
    else for (let i = base; i < end; i++) q[i] = codeSymF32(w[i], s);
    scale[r] = s;
    offset[r] = o;
  }
  return -1;
}

function quantizeRowsF16(out: QuantizedRows, w: Float32Array, rows: number, cols: number, asym: boolean): number {
  const { q, scale, offset } = out;
  const p = ROW_PARAMS;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    const end = base + cols;
    if (!minMaxF16(w, base, end, p)) return r;
    rowScaleOffset(p, asym, roundF16Fast);
    const s = p[0];
    const o = p[1];
    if (p[2] === 0) {
      if (asym) for (let i = base; i < end; i++) q[i] = codeAsymF16(w[i], s, o);
      else for (let i = base; i < end; i++) q[i] = codeSymF16(w[i], s);
    } else {
      if (asym) for (let i = base; i < end; i++) q[i] = codeAsymF16(roundF16Fast(w[i]), s, o);
      else for (let i = base; i < end; i++) q[i] = codeSymF16(roundF16Fast(w[i]), s);
    }
    scale[r] = s;
    offset[r] = o;
  }
  return -1;
}

function quantizeRowsBf16(out: QuantizedRows, w: Float32Array, rows: number, cols: number, asym: boolean): number {
  const { q, scale, offset } = out;
  const p = ROW_PARAMS;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    const end = base + cols;
    if (!minMaxBf16(w, base, end, p)) return r;
    rowScaleOffset(p, asym, roundBf16Fast);
    const s = p[0];
    const o = p[1];
    if (p[2] === 0) {
      if (asym) for (let i = base; i < end; i++) q[i] = codeAsymBf16(w[i], s, o);
      else for (let i = base; i < end; i++) q[i] = codeSymBf16(w[i], s);
    } else {
      if (asym) for (let i = base; i < end; i++) q[i] = codeAsymBf16(roundBf16Fast(w[i]), s, o);
      else for (let i = base; i < end; i++) q[i] = codeSymBf16(roundBf16Fast(w[i]), s);
    }
    scale[r] = s;
    offset[r] = o;
  }
  return -1;
}

/** Fast twin of quantizeRowsRef: identical outputs (tested on the golden data and random matrices). */
export function quantizeRows(out: QuantizedRows, w: Float32Array, rows: number, cols: number, opts: QuantOptions): void {
  checkQuantizeArgs('quantizeRows', out, w, rows, cols, opts);
  const asym = opts.scheme === 'asym';
  const c = opts.compute;
  const bad =
    c === 'f32'
      ? quantizeRowsF32(out, w, rows, cols, asym)
      : c === 'f16'
        ? quantizeRowsF16(out, w, rows, cols, asym)
        : quantizeRowsBf16(out, w, rows, cols, asym);
  if (bad >= 0) throw nonFiniteError('quantizeRows', w, bad, cols, c);
}

/** Allocating wrapper of quantizeRows. */
export function quantizePerChannel(w: Float32Array, rows: number, cols: number, opts: QuantOptions): QuantizedRows {
  checkShape('quantizePerChannel', rows, cols);
  const out: QuantizedRows = {
    q: new Int8Array(rows * cols),
    scale: new Float32Array(rows),
    offset: new Float32Array(rows),
  };
  quantizeRows(out, w, rows, cols, opts);
  return out;
}

/** (q - offset) * scale in float32, as the fixtures' forward check and ATB's antiquant define it. */
export function dequantizeRows(
  out: Float32Array,
  q: Int8Array,
  scale: Float32Array,
  offset: Float32Array,
  rows: number,
  cols: number,
): void {
  checkShape('dequantizeRows', rows, cols);
  checkLength('dequantizeRows', 'out', out.length, rows * cols);
  checkLength('dequantizeRows', 'q', q.length, rows * cols);
  checkLength('dequantizeRows', 'scale', scale.length, rows);
  checkLength('dequantizeRows', 'offset', offset.length, rows);
  for (let r = 0; r < rows; r++) {
    const s = scale[r];
    const o = offset[r];
    const end = (r + 1) * cols;
    // q - o is an exact small integer, so one rounding of the product is the float32 result.
    for (let i = r * cols; i < end; i++) out[i] = (q[i] - o) * s;
  }
}

function checkFakeArgs(fn: string, out: Float32Array, w: Float32Array, rows: number, cols: number, opts: QuantOptions): void {
  checkShape(fn, rows, cols);
  checkOptions(fn, opts);
  checkLength(fn, 'w', w.length, rows * cols);
  checkLength(fn, 'out', out.length, rows * cols);
}

/**
 * Quantize then dequantize in the compute dtype, as msModelSlim's fake quantizer (used by the m3
 * scale search) does: out = R((q - offset) * scale), R = rounding to the compute dtype
 * (q - offset is an integer of magnitude <= 255, exact in f16 and bf16). `out` may be `w` itself.
 */
export function fakeQuantizeRows(out: Float32Array, w: Float32Array, rows: number, cols: number, opts: QuantOptions): void {
  checkFakeArgs('fakeQuantizeRows', out, w, rows, cols, opts);
  const asym = opts.scheme === 'asym';
  const c = opts.compute;
  const bad =
    c === 'f32'
      ? fakeRowsF32(out, w, rows, cols, asym)
      : c === 'f16'
        ? fakeRowsF16(out, w, rows, cols, asym)
        : fakeRowsBf16(out, w, rows, cols, asym);
  if (bad >= 0) throw nonFiniteError('fakeQuantizeRows', w, bad, cols, c);
}

// Fake-quant row kernels: each element is read before its own slot is written, so out may alias w.

function fakeRowsF32(out: Float32Array, w: Float32Array, rows: number, cols: number, asym: boolean): number {
  const p = ROW_PARAMS;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    const end = base + cols;
    if (!minMaxF32(w, base, end, p)) return r;
    rowScaleOffset(p, asym, Math.fround);
    const s = p[0];
    const o = p[1];
    // The Float32Array store is the float32 rounding of the product.
    if (asym) for (let i = base; i < end; i++) out[i] = (codeAsymF32(w[i], s, o) - o) * s;
    else for (let i = base; i < end; i++) out[i] = codeSymF32(w[i], s) * s;
  }
  return -1;
}

function fakeRowsF16(out: Float32Array, w: Float32Array, rows: number, cols: number, asym: boolean): number {
  const p = ROW_PARAMS;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    const end = base + cols;
    if (!minMaxF16(w, base, end, p)) return r;
    rowScaleOffset(p, asym, roundF16Fast);
    const s = p[0];
    const o = p[1];
    for (let i = base; i < end; i++) {
      const x = roundF16Fast(w[i]);
      const code = asym ? codeAsymF16(x, s, o) - o : codeSymF16(x, s);
      out[i] = roundF16Fast(code * s);
    }
  }
  return -1;
}

function fakeRowsBf16(out: Float32Array, w: Float32Array, rows: number, cols: number, asym: boolean): number {
  const p = ROW_PARAMS;
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    const end = base + cols;
    if (!minMaxBf16(w, base, end, p)) return r;
    rowScaleOffset(p, asym, roundBf16Fast);
    const s = p[0];
    const o = p[1];
    for (let i = base; i < end; i++) {
      const x = roundBf16Fast(w[i]);
      const code = asym ? codeAsymBf16(x, s, o) - o : codeSymBf16(x, s);
      out[i] = roundBf16Fast(code * s);
    }
  }
  return -1;
}

/** Plain twin of fakeQuantizeRows: quantizeRowsRef, then R((q - offset) * scale) with roundTo. */
export function fakeQuantizeRowsRef(out: Float32Array, w: Float32Array, rows: number, cols: number, opts: QuantOptions): void {
  checkFakeArgs('fakeQuantizeRowsRef', out, w, rows, cols, opts);
  const qr: QuantizedRows = { q: new Int8Array(rows * cols), scale: new Float32Array(rows), offset: new Float32Array(rows) };
  quantizeRowsRef(qr, w, rows, cols, opts);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) {
      const i = r * cols + j;
      out[i] = roundTo(roundTo(qr.q[i] - qr.offset[r], opts.compute) * qr.scale[r], opts.compute);
    }
  }
}
