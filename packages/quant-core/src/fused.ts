// Fused quantizer straight from checkpoint bytes: decode + quantize (+ error statistics) row by row,
// on WebAssembly SIMD for f32 arithmetic, else on the JS kernels. Not here: the math (quantize.ts,
// stats.ts) and the WebAssembly source (wasm/quantize.wat).

import { DTYPE_TRAITS, LITTLE_ENDIAN_HOST, decodeFloats, decodeFloatsRef, type FloatDType } from './dtype';
import { QuantError } from './errors';
import {
  checkLength,
  checkOptions,
  checkShape,
  nonFiniteError,
  quantizeRows,
  quantizeRowsRef,
  type QuantOptions,
  type QuantizedRows,
} from './quantize';
import { accumulateRowStats, emptyQuantErrorStats, mergeQuantErrorStats, quantErrorStats, rowErrorSums, type QuantErrorStats } from './stats';
import { QUANTIZE_WASM_BASE64 } from './wasm/quantize-wasm';

/**
 * How far the WebAssembly path's per-row sums (sum w^2, sum (w - deq)^2) may differ from the JS ones,
 * relative, for F16/BF16 sources: per lane, the kernel adds 4 terms in f32 (w^2 is exact in f32 for
 * a value with at most 11 significant bits, (w - deq)^2 is rounded once, then two levels of pairwise
 * adds: within 3·2^-24 of the exact partial sum) and adds those partial sums in f64. Rows where f32
 * could under- or overflow are recomputed in JS (F32_SUM_MIN/MAX), which keeps that part below
 * 2^-48. 2^-21 > 3·2^-24 + 2^-48 with room. F32 sources use f64 terms, as JS: only the order differs.
 */
export const FUSED_SUM_REL_TOL = 2 ** -21;

/**
 * Per element of a row, the relative difference that the summation order alone can make: JS adds the
 * same exact f64 terms sequentially, the kernel by lanes and pairs; any order of n non-negative terms
 * is within (n - 1)·2^-53 of the exact sum, so two orders differ by less than n·2^-52.
 */
export const FUSED_SUM_REL_TOL_PER_ELEMENT = 2 ** -52;

/**
 * Bound on |SQNR_wasm - SQNR_js| in dB for one row of `cols` elements: 10·log10(signal/noise) moves
 * by at most 10·log10(e)·(|dS/S| + |dN/N|) to first order; the factor 2 covers the rest.
 * max |w - deq|, q, scale and offset are exact: no tolerance.
 */
export function fusedSqnrDbTolerance(cols: number): number {
  const rel = FUSED_SUM_REL_TOL + Math.max(cols, 1) * FUSED_SUM_REL_TOL_PER_ELEMENT;
  return 10 * Math.LOG10E * 2 * rel * 2;
}

/**
 * The kernel's f32 partial sums are trusted when the row's sums lie in [F32_SUM_MIN, F32_SUM_MAX):
 * below, terms may have underflowed f32 (each loses at most 2^-150, i.e. n·2^-70 <= 2^-48 of a sum
 * >= 2^-80 for rows of up to 2^22 elements); at or above, a term or partial sum may have overflowed
 * (f32 max is 2^128, a partial sum adds 4 terms). Other rows are recomputed exactly in JS; all-zero
 * rows (both sums and the max error 0) need not be.
 */
const F32_SUM_MIN = 2 ** -80;
const F32_SUM_MAX = 2 ** 120;

/**
 * Source bytes per WebAssembly call (rows are processed in chunks of about this size): the chunk,
 * its codes and the decoded row stay in a core's L2 cache (512 KiB-2 MiB on current x86 and Arm)
 * between the copy in and the kernel. Measured on the bench: 64 KiB-1 MiB are within 5%.
 */
const WASM_CHUNK_SRC_BYTES = 128 * 1024;
/** Elements decoded per chunk on the JS path (4 MiB of f32 scratch at most, one row if longer). */
const JS_CHUNK_ELEMENTS = 1 << 20;
/** The kernel reads up to 64 bytes past a row of source (four v128 loads) and writes up to 16 past a
 * row of codes; regions get this much slack. */
const WASM_SLACK = 64;
const WASM_PAGE = 65536;
/** Largest wasm memory used: the kernel's signed i32 loop bounds and offsets stay below 2^31. */
const WASM_MAX_BYTES = 2 ** 31 - WASM_PAGE;

// ---------------------------------------------------------------------------------------------
// The WebAssembly module: the only surface of the WebAssembly API used, declared here (the
// workspace's TypeScript lib has no DOM/WebAssembly types).

interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmExports {
  memory: WasmMemory;
  /** See wasm/quantize.wat: returns -1, or the first row holding a non-finite weight. */
  quantize_rows(
    src: number,
    q: number,
    scale: number,
    offset: number,
    sums: number,
    scratch: number,
    rows: number,
    cols: number,
    dtype: number,
    sym: number,
    stats: number,
  ): number;
}
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: WasmExports };
};

/** undefined: not tried yet; null: WebAssembly (SIMD) unavailable here, the JS path is used. */
let wasmExports: WasmExports | null | undefined;

/** Instantiates the module on first use (synchronously; importing this package does nothing). */
function wasm(): WasmExports | null {
  if (wasmExports === undefined) {
    wasmExports = null;
    // Typed-array views of wasm memory are host-endian; the kernel's layout is little-endian.
    if (LITTLE_ENDIAN_HOST && typeof WebAssembly === 'object') {
      try {
        const module = new WebAssembly.Module(base64Bytes(QUANTIZE_WASM_BASE64));
        wasmExports = new WebAssembly.Instance(module, {}).exports;
      } catch {
        // No SIMD support (or no WebAssembly): stay on the JS path, as documented.
        wasmExports = null;
      }
    }
  }
  return wasmExports;
}

function base64Bytes(b64: string): Uint8Array {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** 'wasm-simd' when quantizeRowsFromBytes runs f32 arithmetic on WebAssembly SIMD here, else 'js'. */
export function fusedQuantBackend(): 'wasm-simd' | 'js' {
  return wasm() === null ? 'js' : 'wasm-simd';
}

const WASM_DTYPE: Record<FloatDType, number> = { F32: 0, F16: 1, BF16: 2 };

const align16 = (n: number): number => (n + 15) & ~15;

// ---------------------------------------------------------------------------------------------

function checkFusedArgs(
  fn: string,
  out: QuantizedRows,
  src: Uint8Array,
  srcDType: FloatDType,
  rows: number,
  cols: number,
  opts: QuantOptions,
  rowBase: number,
): void {
  checkShape(fn, rows, cols);
  checkOptions(fn, opts);
  if (srcDType !== 'F32' && srcDType !== 'F16' && srcDType !== 'BF16') {
    throw new QuantError('E_DTYPE', `${fn}: expected srcDType F32, F16 or BF16, found '${String(srcDType)}'`);
  }
  if (!Number.isSafeInteger(rowBase) || rowBase < 0) {
    throw new QuantError('E_SHAPE', `${fn}: expected a non-negative integer rowBase, found ${rowBase}`);
  }
  checkLength(fn, 'src (bytes)', src.byteLength, rows * cols * DTYPE_TRAITS[srcDType].bytes);
  checkLength(fn, 'out.q', out.q.length, rows * cols);
  checkLength(fn, 'out.scale', out.scale.length, rows);
  checkLength(fn, 'out.offset', out.offset.length, rows);
}

/**
 * Quantizes a [rows, cols] row-major tensor given as little-endian bytes of srcDType (any
 * byteOffset) into `out`: the same q, scale and offset as decodeFloats + quantizeRows. When `stats`
 * is given, the error statistics of these rows (quantErrorStats of the decoded weights, rows
 * numbered from rowBase) are merged into it in place, as mergeQuantErrorStats(stats, ·) would.
 *
 * f32 arithmetic runs on WebAssembly SIMD when available (fusedQuantBackend()): two passes over each
 * row, no f32 copy of the tensor. q, scale, offset, maxAbsError and worstRow are bit-identical to the
 * JS path; each row's signal and noise sums agree within FUSED_SUM_REL_TOL + cols ·
 * FUSED_SUM_REL_TOL_PER_ELEMENT (relative), so its SQNR within fusedSqnrDbTolerance(cols) dB
 * (minSqnrDb within that, sumSqnrDb within that per row; worstSqnrRow can differ only between rows
 * whose SQNRs are that close). f16/bf16 arithmetic, or no WebAssembly SIMD, runs decodeFloats +
 * quantizeRows + the stats in JS, chunked (a reused scratch of at most max(cols, 2^20) floats).
 *
 * Throws QuantError 'E_NONFINITE_WEIGHT' with the row (relative to src) and column of the first
 * non-finite weight; rows before it are written and `stats` is left untouched. E_SIZE, E_SHAPE,
 * E_OPTIONS, E_DTYPE on bad arguments.
 */
export function quantizeRowsFromBytes(
  out: QuantizedRows,
  src: Uint8Array,
  srcDType: FloatDType,
  rows: number,
  cols: number,
  opts: QuantOptions,
  stats?: QuantErrorStats,
  rowBase = 0,
): void {
  checkFusedArgs('quantizeRowsFromBytes', out, src, srcDType, rows, cols, opts, rowBase);
  const kernel = opts.compute === 'f32' ? wasm() : null;
  const local = stats === undefined ? undefined : emptyQuantErrorStats();
  if (kernel === null || !fusedWasm(kernel, out, src, srcDType, rows, cols, opts, local, rowBase)) {
    fusedJs(out, src, srcDType, rows, cols, opts, local, rowBase);
  }
  if (stats !== undefined && local !== undefined) Object.assign(stats, mergeQuantErrorStats(stats, local));
}

/**
 * The JS path of quantizeRowsFromBytes, whatever the compute dtype (tests hold the WebAssembly path
 * to it; not exported from the package). Same contract.
 */
export function quantizeRowsFromBytesJs(
  out: QuantizedRows,
  src: Uint8Array,
  srcDType: FloatDType,
  rows: number,
  cols: number,
  opts: QuantOptions,
  stats?: QuantErrorStats,
  rowBase = 0,
): void {
  checkFusedArgs('quantizeRowsFromBytes', out, src, srcDType, rows, cols, opts, rowBase);
  const local = stats === undefined ? undefined : emptyQuantErrorStats();
  fusedJs(out, src, srcDType, rows, cols, opts, local, rowBase);
  if (stats !== undefined && local !== undefined) Object.assign(stats, mergeQuantErrorStats(stats, local));
}

/**
 * Plain twin of quantizeRowsFromBytes, composed of the oracles: decodeFloatsRef, quantizeRowsRef,
 * quantErrorStats, mergeQuantErrorStats. Allocates the f32 tensor.
 */
export function quantizeRowsFromBytesRef(
  out: QuantizedRows,
  src: Uint8Array,
  srcDType: FloatDType,
  rows: number,
  cols: number,
  opts: QuantOptions,
  stats?: QuantErrorStats,
  rowBase = 0,
): void {
  checkFusedArgs('quantizeRowsFromBytesRef', out, src, srcDType, rows, cols, opts, rowBase);
  const w = new Float32Array(rows * cols);
  decodeFloatsRef(w, src, srcDType);
  quantizeRowsRef(out, w, rows, cols, opts);
  if (stats !== undefined) Object.assign(stats, mergeQuantErrorStats(stats, quantErrorStats(w, out, rows, cols, rowBase)));
}

// ---------------------------------------------------------------------------------------------

let jsScratch: Float32Array | undefined;
let jsSums: Float64Array | undefined;

function fusedJs(
  out: QuantizedRows,
  src: Uint8Array,
  srcDType: FloatDType,
  rows: number,
  cols: number,
  opts: QuantOptions,
  local: QuantErrorStats | undefined,
  rowBase: number,
): void {
  const rowBytes = cols * DTYPE_TRAITS[srcDType].bytes;
  const chunkRows = Math.max(1, Math.min(rows, Math.floor(JS_CHUNK_ELEMENTS / Math.max(cols, 1))));
  const need = chunkRows * cols;
  if (jsScratch === undefined || jsScratch.length < need) jsScratch = new Float32Array(need);
  const sums = jsSumsGet();
  for (let r0 = 0; r0 < rows; r0 += chunkRows) {
    const nr = Math.min(chunkRows, rows - r0);
    const w = jsScratch.subarray(0, nr * cols);
    decodeFloats(w, src.subarray(r0 * rowBytes, (r0 + nr) * rowBytes), srcDType);
    const part: QuantizedRows = {
      q: out.q.subarray(r0 * cols, (r0 + nr) * cols),
      scale: out.scale.subarray(r0, r0 + nr),
      offset: out.offset.subarray(r0, r0 + nr),
    };
    try {
      quantizeRows(part, w, nr, cols, opts);
    } catch (e) {
      if (e instanceof QuantError && e.code === 'E_NONFINITE_WEIGHT' && e.row !== undefined) {
        throw nonFiniteError('quantizeRowsFromBytes', w, e.row, cols, opts.compute, r0 + e.row);
      }
      throw e;
    }
    if (local !== undefined) {
      for (let r = 0; r < nr; r++) {
        rowErrorSums(sums, w, part.q, part.scale[r], part.offset[r], r * cols, cols);
        accumulateRowStats(local, rowBase + r0 + r, sums[0], sums[1], sums[2]);
      }
    }
  }
}

/** The WebAssembly path; false (nothing done) if its memory cannot grow to what one row needs. */
function fusedWasm(
  k: WasmExports,
  out: QuantizedRows,
  src: Uint8Array,
  srcDType: FloatDType,
  rows: number,
  cols: number,
  opts: QuantOptions,
  local: QuantErrorStats | undefined,
  rowBase: number,
): boolean {
  const rowBytes = cols * DTYPE_TRAITS[srcDType].bytes;
  const chunkRows = Math.max(1, Math.min(rows, Math.floor(WASM_CHUNK_SRC_BYTES / Math.max(rowBytes, 1))));
  // Layout (byte offsets, 16-aligned): src | q | scale | offset | sums | scratch row.
  const srcPtr = 0;
  const qPtr = align16(srcPtr + chunkRows * rowBytes + WASM_SLACK);
  const scalePtr = align16(qPtr + chunkRows * cols + WASM_SLACK);
  const offsetPtr = align16(scalePtr + 4 * chunkRows);
  const sumsPtr = align16(offsetPtr + 4 * chunkRows);
  const scratchPtr = align16(sumsPtr + 24 * chunkRows);
  const end = scratchPtr + 4 * align16(cols) + WASM_SLACK;
  const have = k.memory.buffer.byteLength;
  if (have < end) {
    // wasm32 addresses end at 4 GiB (and i32 row arithmetic at 2 GiB): a row that long stays in JS.
    if (end > WASM_MAX_BYTES) return false;
    try {
      k.memory.grow(Math.ceil((end - have) / WASM_PAGE));
    } catch {
      return false;
    }
  }
  const buf = k.memory.buffer;
  const u8 = new Uint8Array(buf);
  const f32 = new Float32Array(buf);
  const f64 = new Float64Array(buf);
  const dtype = WASM_DTYPE[srcDType];
  const sym = opts.scheme === 'sym' ? 1 : 0;
  const withStats = local === undefined ? 0 : 1;
  for (let r0 = 0; r0 < rows; r0 += chunkRows) {
    const nr = Math.min(chunkRows, rows - r0);
    u8.set(src.subarray(r0 * rowBytes, (r0 + nr) * rowBytes), srcPtr);
    const bad = k.quantize_rows(srcPtr, qPtr, scalePtr, offsetPtr, sumsPtr, scratchPtr, nr, cols, dtype, sym, withStats);
    const done = bad < 0 ? nr : bad;
    out.q.set(u8.subarray(qPtr, qPtr + done * cols), r0 * cols);
    out.scale.set(f32.subarray(scalePtr >> 2, (scalePtr >> 2) + done), r0);
    out.offset.set(f32.subarray(offsetPtr >> 2, (offsetPtr >> 2) + done), r0);
    if (bad >= 0) {
      // Locate the element in JS: decode the one row and scan it as quantizeRows does.
      const row = new Float32Array(cols);
      decodeFloats(row, src.subarray((r0 + bad) * rowBytes, (r0 + bad + 1) * rowBytes), srcDType);
      throw nonFiniteError('quantizeRowsFromBytes', row, 0, cols, opts.compute, r0 + bad);
    }
    if (local !== undefined) {
      const f32Sums = srcDType !== 'F32';
      for (let r = 0, p = sumsPtr >> 3; r < nr; r++, p += 3) {
        let rowMax = f64[p];
        let signal = f64[p + 1];
        let noise = f64[p + 2];
        if (f32Sums && !f32SumsTrusted(rowMax, signal, noise)) {
          const row = r0 + r;
          const w = rowScratch(cols);
          decodeFloats(w, src.subarray(row * rowBytes, (row + 1) * rowBytes), srcDType);
          const sums = jsSumsGet();
          rowErrorSums(sums, w, out.q.subarray(row * cols, (row + 1) * cols), out.scale[row], out.offset[row], 0, cols);
          rowMax = sums[0];
          signal = sums[1];
          noise = sums[2];
        }
        accumulateRowStats(local, rowBase + r0 + r, rowMax, signal, noise);
      }
    }
  }
  return true;
}

/** See F32_SUM_MIN: false when the kernel's f32 partial sums of a row may have under- or overflowed. */
function f32SumsTrusted(rowMax: number, signal: number, noise: number): boolean {
  // All-zero row: every term is exactly 0 (a non-zero weight has w^2 >= 2^-50 or a non-zero error).
  if (signal === 0 && rowMax === 0) return true;
  // NaN fails every comparison, so it is recomputed too. rowMax = 0: every error is exactly 0.
  return signal >= F32_SUM_MIN && signal < F32_SUM_MAX && noise < F32_SUM_MAX && (rowMax === 0 || noise >= F32_SUM_MIN);
}

let rowBuf: Float32Array | undefined;

function rowScratch(cols: number): Float32Array {
  if (rowBuf === undefined || rowBuf.length < cols) rowBuf = new Float32Array(cols);
  return rowBuf.subarray(0, cols);
}

function jsSumsGet(): Float64Array {
  if (jsSums === undefined) jsSums = new Float64Array(3);
  return jsSums;
}
