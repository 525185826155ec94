// One unit of conversion work: a run of rows of one tensor, read from the source file, turned into
// output bytes and written at their place in the output file (smoothed first when m3 asks for it), or the m3 grid
// losses of those rows (calibration). Runs the same in a worker thread or inline.

import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { AntiOutlierError, M3_N_GRID, searchM3Scales, type M3ErrorKernelF32 } from '@w8a16/anti-outlier';
import { loadHostAddon } from '@w8a16/ascend-runtime';
import {
  decodeFloats,
  emptyQuantErrorStats,
  quantizeRowsFromBytes,
  encodeFloats,
  QuantError,
  quantErrorStats,
  quantizeRows,
  roundTo,
  type ComputeDType,
  type FloatDType,
  type QuantErrorStats,
  type QuantScheme,
} from '@w8a16/quant-core';
import { CliError } from '../cli/errors';
import { addonM3Kernel } from '../calibrate/m3-kernel';

/** Bytes of source data per unit: bounds each worker's memory (source + f32 + int8 buffers, ~6x this). */
export const UNIT_SOURCE_BYTES = 8 * 1024 * 1024;

interface SourceRows {
  readonly tensor: string;
  readonly srcPath: string;
  /** Absolute file offset of the first byte of rowStart. */
  readonly srcOffset: number;
  readonly srcDType: FloatDType;
  readonly rowStart: number;
  readonly rowCount: number;
  readonly cols: number;
}

interface UnitBase extends SourceRows {
  readonly dstPath: string;
  /** Absolute file offset where this unit's output bytes go. */
  readonly dstOffset: number;
}

/**
 * m3 smoothing folded in while streaming (spec §2.3): `mul-cols` multiplies column j of every row by s[j]
 * (a linear of a smoothed group), `div` divides element i of the tensor by s[i] (the group's norm γ). Each
 * result is rounded once to `compute` (float32 on msModelSlim's CPU path, as torch's `mul_` / `div_`).
 */
export interface UnitSmoothing {
  readonly op: 'mul-cols' | 'div';
  readonly s: Float32Array;
  readonly compute: ComputeDType;
}

export interface QuantizeUnit extends UnitBase {
  readonly kind: 'quantize';
  readonly compute: ComputeDType;
  readonly scheme: QuantScheme;
  readonly smooth?: UnitSmoothing;
}

export interface CopyUnit extends UnitBase {
  readonly kind: 'copy';
  readonly dstDType: FloatDType;
  readonly smooth?: UnitSmoothing;
}

/** The m3 grid losses of a run of rows of one linear of a group, for activation `x [tokens, cols]`. */
export interface M3SearchUnit extends SourceRows {
  readonly kind: 'm3search';
  readonly x: Float32Array;
  readonly tokens: number;
  readonly compute: ComputeDType;
  readonly scheme: QuantScheme;
}

export type Unit = QuantizeUnit | CopyUnit | M3SearchUnit;

export interface UnitResult {
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly scale?: Float32Array;
  readonly offset?: Float32Array;
  readonly stats?: QuantErrorStats;
  /** m3search: the loss at every grid point of these rows alone (mean over tokens × rowCount). */
  readonly losses?: Float64Array;
}

const BYTES: Record<FloatDType, number> = { F32: 4, F16: 2, BF16: 2 };
const NATIVE_COMPUTE: Record<FloatDType, ComputeDType> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

/** Reusable buffers and open file descriptors of one thread. */
export class UnitRunner {
  private readonly fds = new Map<string, number>();
  private src = new Uint8Array(0);
  private f32 = new Float32Array(0);
  private q = new Int8Array(0);
  private enc = new Uint8Array(0);
  /** The m3 search's inner kernel: the host addon's when it loads, else (null) the search's own JS kernel. */
  private kernel: M3ErrorKernelF32 | null | undefined;

  private fd(path: string, flags: 'r' | 'r+'): number {
    const key = `${flags}:${path}`;
    let fd = this.fds.get(key);
    if (fd === undefined) {
      fd = openSync(path, flags);
      this.fds.set(key, fd);
    }
    return fd;
  }

  private readSource(u: SourceRows): Uint8Array {
    const n = u.rowCount * u.cols * BYTES[u.srcDType];
    if (this.src.length < n) this.src = new Uint8Array(n);
    const buf = this.src.subarray(0, n);
    const fd = this.fd(u.srcPath, 'r');
    let done = 0;
    while (done < n) {
      const got = readSync(fd, buf, done, n - done, u.srcOffset + done);
      if (got === 0) {
        throw new CliError('E_TRUNCATED', `${u.srcPath}: tensor '${u.tensor}' ends early (wanted ${n} bytes at ${u.srcOffset})`);
      }
      done += got;
    }
    return buf;
  }

  private decode(u: SourceRows, bytes: Uint8Array): Float32Array {
    const n = u.rowCount * u.cols;
    if (this.f32.length < n) this.f32 = new Float32Array(n);
    const w = this.f32.subarray(0, n);
    decodeFloats(w, bytes, u.srcDType);
    return w;
  }

  private writeOut(u: QuantizeUnit | CopyUnit, bytes: Uint8Array): void {
    const fd = this.fd(u.dstPath, 'r+');
    let done = 0;
    while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, u.dstOffset + done);
  }

  run(u: Unit): UnitResult {
    const raw = this.readSource(u);
    if (u.kind === 'copy') return this.copy(u, raw);
    if (u.kind === 'quantize' && !u.smooth) return this.quantizeFused(u, raw);
    const w = this.decode(u, raw);
    // msModelSlim's NPU path casts the weight to config.torch_dtype first; only needed when it differs.
    if (u.compute !== NATIVE_COMPUTE[u.srcDType] && u.compute !== 'f32') {
      for (let i = 0; i < w.length; i++) w[i] = roundTo(w[i], u.compute);
    }
    if (u.kind === 'm3search') return this.m3search(u, w, raw.length);
    if (u.smooth) applySmoothing(w, u.rowStart, u.rowCount, u.cols, u.smooth);
    const n = u.rowCount * u.cols;
    if (this.q.length < n) this.q = new Int8Array(n);
    const out = { q: this.q.subarray(0, n), scale: new Float32Array(u.rowCount), offset: new Float32Array(u.rowCount) };
    try {
      quantizeRows(out, w, u.rowCount, u.cols, { scheme: u.scheme, compute: u.compute });
    } catch (err) {
      throw this.located(u, err);
    }
    const stats = quantErrorStats(w, out, u.rowCount, u.cols, u.rowStart);
    this.writeOut(u, new Uint8Array(out.q.buffer, out.q.byteOffset, n));
    return { bytesIn: raw.length, bytesOut: n, scale: out.scale, offset: out.offset, stats };
  }

  /** Unsmoothed rows: decode, quantize and error statistics in one pass (quant-core's WebAssembly kernel). */
  private quantizeFused(u: QuantizeUnit, raw: Uint8Array): UnitResult {
    const n = u.rowCount * u.cols;
    if (this.q.length < n) this.q = new Int8Array(n);
    const out = { q: this.q.subarray(0, n), scale: new Float32Array(u.rowCount), offset: new Float32Array(u.rowCount) };
    const stats = emptyQuantErrorStats();
    try {
      quantizeRowsFromBytes(out, raw, u.srcDType, u.rowCount, u.cols, { scheme: u.scheme, compute: u.compute }, stats, u.rowStart);
    } catch (err) {
      throw this.located(u, err);
    }
    this.writeOut(u, new Uint8Array(out.q.buffer, out.q.byteOffset, n));
    return { bytesIn: raw.length, bytesOut: n, scale: out.scale, offset: out.offset, stats };
  }

  /** A quantizer's non-finite error, renamed with the file, tensor and absolute row. */
  private located(u: QuantizeUnit, err: unknown): unknown {
    if (err instanceof QuantError && err.code === 'E_NONFINITE_WEIGHT') {
      const row = u.rowStart + (err.row ?? 0);
      return new CliError('E_NONFINITE_WEIGHT', `${u.srcPath}: tensor '${u.tensor}' has a non-finite value at row ${row}, column ${err.col}`);
    }
    return err;
  }

  private copy(u: CopyUnit, raw: Uint8Array): UnitResult {
    // Float tensors are copied as they are, but still checked: a NaN or Inf in a checkpoint is a broken input.
    const w = this.decode(u, raw);
    for (let i = 0; i < w.length; i++) {
      if (!Number.isFinite(w[i])) {
        const row = u.rowStart + Math.floor(i / u.cols);
        throw new CliError('E_NONFINITE_WEIGHT', `${u.srcPath}: tensor '${u.tensor}' has a non-finite value at row ${row}, column ${i % u.cols}`);
      }
    }
    if (u.smooth) applySmoothing(w, u.rowStart, u.rowCount, u.cols, u.smooth);
    else if (u.dstDType === u.srcDType) {
      this.writeOut(u, raw);
      return { bytesIn: raw.length, bytesOut: raw.length };
    }
    const n = w.length * BYTES[u.dstDType];
    if (this.enc.length < n) this.enc = new Uint8Array(n);
    const bytes = this.enc.subarray(0, n);
    encodeFloats(bytes, w, u.dstDType);
    this.writeOut(u, bytes);
    return { bytesIn: raw.length, bytesOut: n };
  }

  private m3search(u: M3SearchUnit, w: Float32Array, bytesIn: number): UnitResult {
    if (this.kernel === undefined) this.kernel = loadM3Kernel();
    const name = `${u.tensor} rows ${u.rowStart}..${u.rowStart + u.rowCount - 1}`;
    try {
      const r = searchM3Scales(
        { x: u.x, tokens: u.tokens, channels: u.cols, linears: [{ name, weight: w, n: u.rowCount }] },
        { scheme: u.scheme, compute: u.compute, nGrid: M3_N_GRID, ...(this.kernel ? { kernelF32: this.kernel } : {}) },
      );
      return { bytesIn, bytesOut: 0, losses: r.losses };
    } catch (err) {
      if (err instanceof AntiOutlierError) throw new CliError(`E_M3_${err.code.slice(2)}`, `${u.srcPath}: m3 search: ${err.message}`);
      throw err;
    }
  }

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}

/** The host addon's float32 linear as the m3 kernel, or null (the search's JS kernel) when the addon is absent. */
function loadM3Kernel(): M3ErrorKernelF32 | null {
  try {
    return addonM3Kernel(loadHostAddon());
  } catch {
    return null;
  }
}

/** Applies a unit's m3 smoothing in place to rows rowStart.. of a tensor with `cols` columns (see UnitSmoothing). */
export function applySmoothing(w: Float32Array, rowStart: number, rowCount: number, cols: number, sm: UnitSmoothing): void {
  const R = sm.compute === 'f32' ? Math.fround : (x: number) => roundTo(x, sm.compute);
  const s = sm.s;
  if (sm.op === 'mul-cols') {
    if (s.length !== cols) throw new CliError('E_INTERNAL', `smoothing: ${s.length} scales for rows of ${cols} columns`);
    for (let base = 0; base < rowCount * cols; base += cols) for (let j = 0; j < cols; j++) w[base + j] = R(w[base + j] * s[j]);
  } else {
    const first = rowStart * cols;
    if (first + rowCount * cols > s.length) throw new CliError('E_INTERNAL', `smoothing: ${s.length} scales for elements up to ${first + rowCount * cols}`);
    for (let i = 0; i < rowCount * cols; i++) w[i] = R(w[i] / s[first + i]);
  }
}

/** Splits every job's rows into units of at most UNIT_SOURCE_BYTES of source data (at least one row). */
export function rowsPerUnit(cols: number, dtype: FloatDType, unitBytes = UNIT_SOURCE_BYTES): number {
  return Math.max(1, Math.floor(unitBytes / (cols * BYTES[dtype])));
}
