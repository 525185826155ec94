// Quantization error metrics: max |w - deq| and per-row SQNR, mergeable across chunks of a tensor.
// Dequantization here is the float32 (q - offset) * scale of dequantizeRows.
//
// SQNR convention (per row, dB): 10 * log10(sum w^2 / sum (w - deq)^2), sums in f64.
//   - noise 0 (an exactly representable row, including an all-zero row, 0/0) -> +Infinity;
//   - signal 0 with noise > 0 -> -Infinity (cannot happen for rows quantized by this package).
// Infinite SQNRs take part in minSqnrDb/worstSqnrRow but are left out of sumSqnrDb; finiteSqnrRows
// counts the rows that are in the sum, so the mean is sumSqnrDb / finiteSqnrRows (meanSqnrDb).

import { QuantError } from './errors';
import type { QuantizedRows } from './quantize';

export interface QuantErrorStats {
  /** Rows covered. */
  rows: number;
  /** max over all elements of |w - deq|. */
  maxAbsError: number;
  /** First row (absolute index: rowBase + r) reaching maxAbsError; -1 when rows = 0. */
  worstRow: number;
  /** Smallest per-row SQNR in dB (+Infinity when rows = 0 or every row is exact). */
  minSqnrDb: number;
  /** First row (absolute index) reaching minSqnrDb; -1 when rows = 0. */
  worstSqnrRow: number;
  /** Sum of the finite per-row SQNRs (dB), so stats of chunks merge by addition. */
  sumSqnrDb: number;
  /** Rows whose SQNR is finite (the ones in sumSqnrDb). Absent = rows (stats built by hand). */
  finiteSqnrRows?: number;
}

export function emptyQuantErrorStats(): QuantErrorStats {
  return { rows: 0, maxAbsError: 0, worstRow: -1, minSqnrDb: Infinity, worstSqnrRow: -1, sumSqnrDb: 0, finiteSqnrRows: 0 };
}

/** Mean of the finite per-row SQNRs in dB; undefined if there is none. */
export function meanSqnrDb(s: QuantErrorStats): number | undefined {
  const n = s.finiteSqnrRows ?? s.rows;
  return n > 0 ? s.sumSqnrDb / n : undefined;
}

/** SQNR in dB from the two sums, with the convention above. */
export function sqnrDb(signal: number, noise: number): number {
  if (noise === 0) return Infinity;
  if (signal === 0) return -Infinity;
  return 10 * Math.log10(signal / noise);
}

/**
 * Error statistics of quantized rows against the weights they came from. `rowBase` is the absolute
 * index of the first row (for worstRow / worstSqnrRow when a tensor is processed in chunks).
 */
export function quantErrorStats(w: Float32Array, qr: QuantizedRows, rows: number, cols: number, rowBase = 0): QuantErrorStats {
  checkStatsArgs(w, qr, rows, cols);
  const { q, scale, offset } = qr;
  const st = emptyQuantErrorStats();
  const sums = new Float64Array(3);
  for (let r = 0; r < rows; r++) {
    rowErrorSums(sums, w, q, scale[r], offset[r], r * cols, cols);
    accumulateRowStats(st, rowBase + r, sums[0], sums[1], sums[2]);
  }
  return st;
}

/**
 * out = [max |w - deq|, sum w^2, sum (w - deq)^2] over w[base, base + cols), deq the float32
 * (q - offset) * scale, sums in f64 in index order (what quantErrorStats reports per row).
 */
export function rowErrorSums(
  out: Float64Array,
  w: Float32Array,
  q: Int8Array,
  s: number,
  o: number,
  base: number,
  cols: number,
): void {
  let signal = 0;
  let noise = 0;
  let rowMax = 0;
  const end = base + cols;
  for (let i = base; i < end; i++) {
    const x = w[i];
    const d = x - Math.fround((q[i] - o) * s);
    signal += x * x;
    noise += d * d;
    const a = Math.abs(d);
    if (a > rowMax) rowMax = a;
  }
  out[0] = rowMax;
  out[1] = signal;
  out[2] = noise;
}

/**
 * Folds the next row (absolute index `row`) into st, as quantErrorStats does row after row: the
 * first row reaching the max error / min SQNR is kept; rows are counted; finite SQNRs are summed.
 */
export function accumulateRowStats(st: QuantErrorStats, row: number, rowMax: number, signal: number, noise: number): void {
  if (rowMax > st.maxAbsError || st.worstRow < 0) {
    st.maxAbsError = rowMax;
    st.worstRow = row;
  }
  const db = sqnrDb(signal, noise);
  if (db < st.minSqnrDb || st.worstSqnrRow < 0) {
    st.minSqnrDb = db;
    st.worstSqnrRow = row;
  }
  if (Number.isFinite(db)) {
    st.sumSqnrDb += db;
    st.finiteSqnrRows = (st.finiteSqnrRows ?? 0) + 1;
  }
  st.rows++;
}

function checkStatsArgs(w: Float32Array, qr: QuantizedRows, rows: number, cols: number): void {
  if (!Number.isSafeInteger(rows) || rows < 0 || !Number.isSafeInteger(cols) || cols < 0) {
    throw new QuantError('E_SHAPE', `quantErrorStats: expected non-negative integer rows and cols, found rows=${rows}, cols=${cols}`);
  }
  const n = rows * cols;
  if (w.length !== n || qr.q.length !== n || qr.scale.length !== rows || qr.offset.length !== rows) {
    throw new QuantError(
      'E_SIZE',
      `quantErrorStats: expected w and q of length ${n} and scale/offset of length ${rows}, ` +
        `found ${w.length}, ${qr.q.length}, ${qr.scale.length}, ${qr.offset.length}`,
    );
  }
}

/** Stats of two disjoint sets of rows. On ties the worst row is taken from `a`. */
export function mergeQuantErrorStats(a: QuantErrorStats, b: QuantErrorStats): QuantErrorStats {
  if (a.rows === 0) return { ...b, finiteSqnrRows: b.finiteSqnrRows ?? b.rows };
  if (b.rows === 0) return { ...a, finiteSqnrRows: a.finiteSqnrRows ?? a.rows };
  const errFromB = b.maxAbsError > a.maxAbsError;
  const sqnrFromB = b.minSqnrDb < a.minSqnrDb;
  return {
    rows: a.rows + b.rows,
    maxAbsError: errFromB ? b.maxAbsError : a.maxAbsError,
    worstRow: errFromB ? b.worstRow : a.worstRow,
    minSqnrDb: sqnrFromB ? b.minSqnrDb : a.minSqnrDb,
    worstSqnrRow: sqnrFromB ? b.worstSqnrRow : a.worstSqnrRow,
    sumSqnrDb: a.sumSqnrDb + b.sumSqnrDb,
    finiteSqnrRows: (a.finiteSqnrRows ?? a.rows) + (b.finiteSqnrRows ?? b.rows),
  };
}

/** Per-row SQNR (dB, convention above) of `deq` against `w`, both rows*cols row-major. */
export function sqnrPerRow(out: Float64Array, w: Float32Array, deq: Float32Array, rows: number, cols: number): void {
  if (!Number.isSafeInteger(rows) || rows < 0 || !Number.isSafeInteger(cols) || cols < 0) {
    throw new QuantError('E_SHAPE', `sqnrPerRow: expected non-negative integer rows and cols, found rows=${rows}, cols=${cols}`);
  }
  const n = rows * cols;
  if (out.length !== rows || w.length !== n || deq.length !== n) {
    throw new QuantError(
      'E_SIZE',
      `sqnrPerRow: expected out of length ${rows} and w/deq of length ${n}, found ${out.length}, ${w.length}, ${deq.length}`,
    );
  }
  for (let r = 0; r < rows; r++) {
    let signal = 0;
    let noise = 0;
    const end = (r + 1) * cols;
    for (let i = r * cols; i < end; i++) {
      const x = w[i];
      const d = x - deq[i];
      signal += x * x;
      noise += d * d;
    }
    out[r] = sqnrDb(signal, noise);
  }
}

/** max |a[i] - b[i]| (0 for empty arrays; NaN if any difference is NaN). */
export function maxAbsError(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) {
    throw new QuantError('E_SIZE', `maxAbsError: expected arrays of equal length, found ${a.length} and ${b.length}`);
  }
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (d > m) m = d;
    else if (d !== d) return NaN;
  }
  return m;
}
