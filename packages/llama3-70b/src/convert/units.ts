// One unit of conversion work: a run of rows of one tensor, read from the source file, turned into
// output bytes and written at their place in the output file (smoothed first when m3 asks for it), or the m3 grid
// losses of those rows (calibration). Runs the same in a worker thread or inline.

import { closeSync, constants as fsConstants, openSync, read, readSync, write, writeSync } from 'node:fs';
import { AntiOutlierError, M3_N_GRID, searchM3Scales } from '@w8a16/anti-outlier';
import { loadHostAddon } from '@w8a16/ascend-runtime';
import {
  decodeFloats,
  emptyQuantErrorStats,
  quantizeRowsFromBytes,
  encodeFloats,
  QuantError,
  roundTo,
  type ComputeDType,
  type FloatDType,
  type QuantErrorStats,
  type QuantScheme,
} from '@w8a16/quant-core';
import { CliError } from '../cli/errors';
import { addonM3GridSearch, type M3GridInput } from '../calibrate/m3-kernel';

/** Bytes of source data per unit: bounds each worker's memory (source + f32 + int8 buffers, ~6x this). */
export const UNIT_SOURCE_BYTES = 8 * 1024 * 1024;

/**
 * Output pages written around the page cache (O_DIRECT): a page-cache write must first get a fresh page, which in a
 * VM whose free memory went back to the host costs a fault per page (measured here: 0.36 GB/s for a 2 GB `dd` into
 * the page cache, 4.7 GB/s when the pages were just freed, 1.9-2.2 GB/s with O_DIRECT whatever the state), and
 * every dirty page must be flushed again by the final fsync. The page size, not the device's 512-byte block: a page
 * shared with a neighbouring unit's bytes is written through the page cache by both, never directly, so a direct
 * write can never race with a cached copy of the same page.
 */
const DIRECT_PAGE = 4096;
/** Below this many whole pages a unit's bytes go through the page cache: not worth a second descriptor. */
const DIRECT_MIN_BYTES = 64 * 1024;
/** O_DIRECT exists on Linux only (undefined elsewhere: every write then goes through the page cache). */
const O_DIRECT: number | undefined = (fsConstants as Record<string, number | undefined>).O_DIRECT;

/**
 * A byte buffer whose first byte is page-aligned, as O_DIRECT needs: a WebAssembly memory's buffer is a fresh
 * page-aligned mapping (V8 reserves it with mmap), which plain ArrayBuffers (malloc) are not. Were it ever not, the
 * first direct write fails with EINVAL and the runner falls back to the page cache.
 */
function pageAlignedBytes(n: number): Uint8Array {
  // The one piece of the WebAssembly API used here (the app's TypeScript lib has no DOM / WebAssembly types).
  const wasm = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number }) => { buffer: ArrayBuffer } } }).WebAssembly;
  return new Uint8Array(new wasm.Memory({ initial: Math.max(1, Math.ceil(n / 65536)) }).buffer);
}

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
  /** `[M3_N_GRID, cols]` the grid's scale vectors for `x` (m3ScaleGrid), shared by the group's chunks; float32 compute. */
  readonly grid?: Float32Array;
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

/** A prepared unit's output: its bytes (a view of `buf`, an output buffer) and where they go. */
interface PendingOutput {
  readonly u: QuantizeUnit | CopyUnit;
  readonly bytes: Uint8Array;
  readonly buf: Uint8Array;
}

/** Reusable buffers and open file descriptors of one thread. */
export class UnitRunner {
  private readonly fds = new Map<string, number>();
  private src = new Uint8Array(0);
  private f32 = new Float32Array(0);
  /**
   * Output buffers, page-aligned (a unit's bytes start at its file offset modulo DIRECT_PAGE, see outBytes): the
   * one the unit being prepared writes into, and the free ones. runAsync keeps a buffer until its write is done,
   * so a worker prepares the next unit while the previous one is being written.
   */
  private outCurrent: Uint8Array | undefined;
  private readonly outFree: Uint8Array[] = [];
  /** Source buffers of runAsync's units (each unit in flight reads into its own). */
  private readonly srcFree: Uint8Array[] = [];
  /** The output of the unit just prepared (prepare sets it; run / runAsync write it). */
  private pending: PendingOutput | undefined;
  /** Cleared when O_DIRECT fails once (file system without it, unaligned memory): page cache from then on. */
  private direct = O_DIRECT !== undefined;
  private directBytes = 0;

  /** Bytes this runner wrote with O_DIRECT so far (the rest went through the page cache). */
  get directBytesWritten(): number {
    return this.directBytes;
  }
  /** The m3 chunk search on the host addon when it loads, else (null) anti-outlier's JS search. */
  private m3native: ((input: M3GridInput) => Float64Array | null) | null | undefined;

  private fd(path: string, flags: 'r' | 'r+' | 'direct'): number {
    const key = `${flags}:${path}`;
    let fd = this.fds.get(key);
    if (fd === undefined) {
      fd = openSync(path, flags === 'direct' ? fsConstants.O_RDWR | (O_DIRECT as number) : flags);
      this.fds.set(key, fd);
    }
    return fd;
  }

  /** Reads a unit's source bytes, into `into` when given (its length is the unit's source size), else a scratch buffer. */
  private readSource(u: SourceRows, into?: Uint8Array): Uint8Array {
    const n = u.rowCount * u.cols * BYTES[u.srcDType];
    let buf = into;
    if (!buf) {
      if (this.src.length < n) this.src = new Uint8Array(n);
      buf = this.src.subarray(0, n);
    }
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

  /** `n` bytes of the output buffer placed so that their address is congruent to the unit's file offset (mod a page). */
  private outBytes(u: UnitBase, n: number): Uint8Array {
    const lead = u.dstOffset % DIRECT_PAGE;
    let buf = this.outCurrent ?? this.outFree.pop();
    if (!buf || buf.length < lead + n) buf = pageAlignedBytes(lead + n);
    this.outCurrent = buf;
    return buf.subarray(lead, lead + n);
  }

  private decode(u: SourceRows, bytes: Uint8Array): Float32Array {
    const n = u.rowCount * u.cols;
    if (this.f32.length < n) this.f32 = new Float32Array(n);
    const w = this.f32.subarray(0, n);
    decodeFloats(w, bytes, u.srcDType);
    return w;
  }

  /** Records a unit's output for run / runAsync to write (the bytes must come from outBytes). */
  private writeOut(u: QuantizeUnit | CopyUnit, bytes: Uint8Array): void {
    if (!this.outCurrent || bytes.buffer !== this.outCurrent.buffer) throw new CliError('E_INTERNAL', `unit output of ${u.tensor} is not in an output buffer`);
    this.pending = { u, bytes, buf: this.outCurrent };
  }

  /**
   * The file ranges of a unit's bytes: whole pages go directly when possible, the partial pages at both ends (shared
   * with the neighbouring units) through the page cache.
   */
  private writePlan(u: UnitBase, bytes: Uint8Array): { fd: number; bytes: Uint8Array; position: number; direct: boolean }[] {
    const start = u.dstOffset;
    const end = start + bytes.length;
    const a = Math.ceil(start / DIRECT_PAGE) * DIRECT_PAGE;
    const b = Math.floor(end / DIRECT_PAGE) * DIRECT_PAGE;
    if (this.direct && b - a >= DIRECT_MIN_BYTES && bytes.byteOffset === start % DIRECT_PAGE) {
      return [
        { fd: this.fd(u.dstPath, 'direct'), bytes: bytes.subarray(a - start, b - start), position: a, direct: true },
        { fd: this.fd(u.dstPath, 'r+'), bytes: bytes.subarray(0, a - start), position: start, direct: false },
        { fd: this.fd(u.dstPath, 'r+'), bytes: bytes.subarray(b - start), position: b, direct: false },
      ];
    }
    return [{ fd: this.fd(u.dstPath, 'r+'), bytes, position: start, direct: false }];
  }

  private writeSyncAll(u: UnitBase, bytes: Uint8Array): void {
    for (const r of this.writePlan(u, bytes)) {
      try {
        this.pwriteAll(r.fd, r.bytes, r.position);
        if (r.direct) this.directBytes += r.bytes.length;
      } catch (err) {
        if (!r.direct || (err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
        this.direct = false; // no O_DIRECT here: this range and all later ones go through the page cache
        this.pwriteAll(this.fd(u.dstPath, 'r+'), r.bytes, r.position);
      }
    }
  }

  private async writeAsyncAll(u: UnitBase, bytes: Uint8Array): Promise<void> {
    for (const r of this.writePlan(u, bytes)) {
      try {
        await pwriteAllAsync(r.fd, r.bytes, r.position);
        if (r.direct) this.directBytes += r.bytes.length;
      } catch (err) {
        if (!r.direct || (err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
        this.direct = false;
        await pwriteAllAsync(this.fd(u.dstPath, 'r+'), r.bytes, r.position);
      }
    }
  }

  private pwriteAll(fd: number, bytes: Uint8Array, position: number): void {
    let done = 0;
    while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, position + done);
  }

  /** Runs a unit and writes its output before returning. */
  run(u: Unit): UnitResult {
    const { result, out } = this.prepareOwned(u);
    if (out) {
      try {
        this.writeSyncAll(out.u, out.bytes);
      } finally {
        this.outFree.push(out.buf);
      }
    }
    return result;
  }

  /**
   * Runs a unit's reading and computing now and its output write in the background (libuv's thread pool): the
   * promise settles when the bytes are in the file. The caller may start the next unit meanwhile.
   */
  runAsync(u: Unit): Promise<UnitResult> {
    return this.runAsyncInner(u);
  }

  private async runAsyncInner(u: Unit): Promise<UnitResult> {
    // The read goes to libuv's pool too, into buffers of this unit's own, so a worker holding two units reads one
    // while it computes the other (a cold checkpoint is read from disk at its own pace meanwhile).
    const n = u.rowCount * u.cols * BYTES[u.srcDType];
    let outBuf: Uint8Array | undefined;
    let srcBuf: Uint8Array | undefined;
    let raw: Uint8Array;
    if (isPlainCopy(u)) {
      const lead = u.dstOffset % DIRECT_PAGE;
      outBuf = this.takeBuffer(this.outFree, lead + n, pageAlignedBytes);
      raw = outBuf.subarray(lead, lead + n);
    } else {
      srcBuf = this.takeBuffer(this.srcFree, n, (k) => new Uint8Array(k));
      raw = srcBuf.subarray(0, n);
    }
    let prepared: { result: UnitResult; out?: PendingOutput };
    try {
      await this.readSourceAsync(u, raw);
      const owned = outBuf;
      outBuf = undefined; // prepareOwned owns it from here: in `prepared.out`, or back on the free list if it fails
      prepared = this.prepareOwned(u, raw, owned);
    } finally {
      if (srcBuf) this.srcFree.push(srcBuf);
      if (outBuf) this.outFree.push(outBuf);
    }
    const { result, out } = prepared;
    if (!out) return result;
    try {
      await this.writeAsyncAll(out.u, out.bytes);
    } finally {
      this.outFree.push(out.buf);
    }
    return result;
  }

  /** A free buffer of at least `n` bytes from `free`, or a new one from `make`. */
  private takeBuffer(free: Uint8Array[], n: number, make: (n: number) => Uint8Array): Uint8Array {
    const i = free.findIndex((b) => b.length >= n);
    if (i >= 0) return free.splice(i, 1)[0];
    free.pop(); // a smaller free buffer is dropped rather than kept beside the new one
    return make(n);
  }

  private async readSourceAsync(u: SourceRows, into: Uint8Array): Promise<void> {
    const fd = this.fd(u.srcPath, 'r');
    let done = 0;
    while (done < into.length) {
      const got = await preadAsync(fd, into, done, into.length - done, u.srcOffset + done);
      if (got === 0) {
        throw new CliError('E_TRUNCATED', `${u.srcPath}: tensor '${u.tensor}' ends early (wanted ${into.length} bytes at ${u.srcOffset})`);
      }
      done += got;
    }
  }

  /**
   * prepare(u), handing the unit's output buffer to the caller (or back to the free list when it wrote nothing).
   * `raw` / `outBuf`: the unit's source bytes already read (into `outBuf`, for a plain copy).
   */
  private prepareOwned(u: Unit, raw?: Uint8Array, outBuf?: Uint8Array): { result: UnitResult; out?: PendingOutput } {
    this.pending = undefined;
    this.outCurrent = outBuf;
    let out: PendingOutput | undefined;
    try {
      const result = this.prepare(u, raw);
      out = this.takePending();
      return out ? { result, out } : { result };
    } finally {
      // A unit that failed, or wrote nothing, gives its buffer back at once.
      if (this.outCurrent && out?.buf !== this.outCurrent) this.outFree.push(this.outCurrent);
      this.outCurrent = undefined;
      this.pending = undefined;
    }
  }

  private takePending(): PendingOutput | undefined {
    const p = this.pending;
    this.pending = undefined;
    return p;
  }

  /**
   * Computes a unit from its source bytes (`raw`, else read now); its output (if any) is left in `pending` for run /
   * runAsync to write. A plain copy is written as read: its bytes are read straight into the output buffer.
   */
  private prepare(u: Unit, raw0?: Uint8Array): UnitResult {
    const srcN = u.rowCount * u.cols * BYTES[u.srcDType];
    const into = isPlainCopy(u) ? this.outBytes(u, srcN) : undefined;
    const raw = raw0 ? (into ?? raw0) : this.readSource(u, into);
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
    const codes = this.outBytes(u, n);
    const out = { q: new Int8Array(codes.buffer, codes.byteOffset, n), scale: new Float32Array(u.rowCount), offset: new Float32Array(u.rowCount) };
    const stats = emptyQuantErrorStats();
    try {
      // The rows are float32 values now: the fused kernel quantizes them (and measures the error) straight from
      // their F32 bytes, in one pass, with the same codes as quantizeRows.
      const bytes = new Uint8Array(w.buffer, w.byteOffset, w.byteLength);
      quantizeRowsFromBytes(out, bytes, 'F32', u.rowCount, u.cols, { scheme: u.scheme, compute: u.compute }, stats, u.rowStart);
    } catch (err) {
      throw this.located(u, err);
    }
    this.writeOut(u, codes);
    return { bytesIn: raw.length, bytesOut: n, scale: out.scale, offset: out.offset, stats };
  }

  /** Unsmoothed rows: decode, quantize and error statistics in one pass (quant-core's WebAssembly kernel). */
  private quantizeFused(u: QuantizeUnit, raw: Uint8Array): UnitResult {
    const n = u.rowCount * u.cols;
    const codes = this.outBytes(u, n);
    const out = { q: new Int8Array(codes.buffer, codes.byteOffset, n), scale: new Float32Array(u.rowCount), offset: new Float32Array(u.rowCount) };
    const stats = emptyQuantErrorStats();
    try {
      quantizeRowsFromBytes(out, raw, u.srcDType, u.rowCount, u.cols, { scheme: u.scheme, compute: u.compute }, stats, u.rowStart);
    } catch (err) {
      throw this.located(u, err);
    }
    this.writeOut(u, codes);
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
    if (!u.smooth && u.dstDType === u.srcDType) {
      // A plain copy needs no decode: a value is NaN or Inf exactly when its exponent bits are all ones.
      const bad = firstNonFinite(raw, u.srcDType);
      if (bad >= 0) throw nonFiniteAt(u, bad);
      this.writeOut(u, raw);
      return { bytesIn: raw.length, bytesOut: raw.length };
    }
    const w = this.decode(u, raw);
    for (let i = 0; i < w.length; i++) if (!Number.isFinite(w[i])) throw nonFiniteAt(u, i);
    if (u.smooth) applySmoothing(w, u.rowStart, u.rowCount, u.cols, u.smooth);
    const n = w.length * BYTES[u.dstDType];
    const bytes = this.outBytes(u, n);
    encodeFloats(bytes, w, u.dstDType);
    this.writeOut(u, bytes);
    return { bytesIn: raw.length, bytesOut: n };
  }

  private m3search(u: M3SearchUnit, w: Float32Array, bytesIn: number): UnitResult {
    if (this.m3native === undefined) this.m3native = loadM3Native();
    const name = `${u.tensor} rows ${u.rowStart}..${u.rowStart + u.rowCount - 1}`;
    try {
      // The native kernel does float32 compute only; null from it (a non-finite W⊙s or loss) reruns the JS search,
      // which reports the problem with its own error.
      const native =
        this.m3native && u.compute === 'f32'
          ? this.m3native({ x: u.x, tokens: u.tokens, channels: u.cols, w, rows: u.rowCount, scheme: u.scheme, nGrid: M3_N_GRID, grid: u.grid })
          : null;
      if (native) return { bytesIn, bytesOut: 0, losses: native };
      const r = searchM3Scales(
        { x: u.x, tokens: u.tokens, channels: u.cols, linears: [{ name, weight: w, n: u.rowCount }] },
        { scheme: u.scheme, compute: u.compute, nGrid: M3_N_GRID },
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

/** The addon's fused m3 grid search, or null (anti-outlier's JS search) when the addon is absent or predates it. */
function loadM3Native(): ((input: M3GridInput) => Float64Array | null) | null {
  try {
    const addon = loadHostAddon();
    return typeof addon.m3GridLosses === 'function' ? addonM3GridSearch(addon) : null;
  } catch {
    return null;
  }
}

/** A copy whose bytes are written exactly as read (no smoothing, same dtype). */
function isPlainCopy(u: Unit): u is CopyUnit {
  return u.kind === 'copy' && !u.smooth && u.dstDType === u.srcDType;
}

/** One pread on libuv's thread pool. */
function preadAsync(fd: number, buf: Uint8Array, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => read(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

/** pwrite of all of `bytes` at `position`, on libuv's thread pool. */
function pwriteAllAsync(fd: number, bytes: Uint8Array, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number): void => {
      if (done >= bytes.length) return resolve();
      write(fd, bytes, done, bytes.length - done, position + done, (err, n) => (err ? reject(err) : step(done + n)));
    };
    step(0);
  });
}

/** Applies a unit's m3 smoothing in place to rows rowStart.. of a tensor with `cols` columns (see UnitSmoothing). */
export function applySmoothing(w: Float32Array, rowStart: number, rowCount: number, cols: number, sm: UnitSmoothing): void {
  const s = sm.s;
  const first = rowStart * cols;
  if (sm.op === 'mul-cols' && s.length !== cols) throw new CliError('E_INTERNAL', `smoothing: ${s.length} scales for rows of ${cols} columns`);
  if (sm.op !== 'mul-cols' && first + rowCount * cols > s.length) {
    throw new CliError('E_INTERNAL', `smoothing: ${s.length} scales for elements up to ${first + rowCount * cols}`);
  }
  if (sm.compute === 'f32') {
    // The float32 store rounds once, which is exactly float32 arithmetic: a product of two float32 values is exact
    // in float64, and a float64 quotient rounded again to float32 equals the float32 quotient (53 >= 2·24 + 2).
    if (sm.op === 'mul-cols') {
      for (let base = 0; base < rowCount * cols; base += cols) for (let j = 0; j < cols; j++) w[base + j] *= s[j];
    } else {
      for (let i = 0; i < rowCount * cols; i++) w[i] /= s[first + i];
    }
    return;
  }
  const R = (x: number) => roundTo(x, sm.compute);
  if (sm.op === 'mul-cols') {
    for (let base = 0; base < rowCount * cols; base += cols) for (let j = 0; j < cols; j++) w[base + j] = R(w[base + j] * s[j]);
  } else {
    for (let i = 0; i < rowCount * cols; i++) w[i] = R(w[i] / s[first + i]);
  }
}

/** Splits every job's rows into units of at most UNIT_SOURCE_BYTES of source data (at least one row). */
export function rowsPerUnit(cols: number, dtype: FloatDType, unitBytes = UNIT_SOURCE_BYTES): number {
  return Math.max(1, Math.floor(unitBytes / (cols * BYTES[dtype])));
}

/** Words checked per block before looking for the exact index (only done when a block has a bad value). */
const NONFINITE_BLOCK = 1024;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Exponent masks: all exponent bits set means Inf or NaN, in each float format. */
const EXPONENT_MASK = { F16: 0x7c00, BF16: 0x7f80, F32: 0x7f800000 } as const;

/** Index of the first NaN/Inf element of little-endian float bytes, or -1. */
export function firstNonFinite(raw: Uint8Array, dtype: FloatDType): number {
  const mask = EXPONENT_MASK[dtype];
  const size = dtype === 'F32' ? 4 : 2;
  // Typed-array views when aligned (the usual case: units read into a fresh buffer), DataView otherwise.
  if (raw.byteOffset % 4 === 0 && raw.length % 4 === 0 && LITTLE_ENDIAN) {
    const v = new Uint32Array(raw.buffer, raw.byteOffset, raw.length >>> 2);
    if (size === 2) {
      // Two 16-bit values per word, no branch per value: adding one to an all-ones exponent carries into the
      // (masked-off) sign bit, so a block is clean exactly when no sign bit ends up set.
      const m = mask * 0x10001;
      const carry = ((mask & -mask) * 0x10001) >>> 0;
      const sign = 0x80008000;
      for (let b = 0; b < v.length; b += NONFINITE_BLOCK) {
        const end = Math.min(v.length, b + NONFINITE_BLOCK);
        let acc = 0;
        for (let i = b; i < end; i++) acc |= (v[i] & m) + carry;
        if ((acc & sign) !== 0) {
          for (let i = b * 2; i < end * 2; i++) if (((raw[2 * i] | (raw[2 * i + 1] << 8)) & mask) === mask) return i;
        }
      }
      return -1;
    }
    for (let i = 0; i < v.length; i++) if ((v[i] & mask) === mask) return i;
    return -1;
  }
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  if (dtype === 'F32') {
    for (let i = 0, n = raw.length >>> 2; i < n; i++) if ((dv.getUint32(i * 4, true) & mask) === mask) return i;
    return -1;
  }
  for (let i = 0, n = raw.length >>> 1; i < n; i++) if ((dv.getUint16(i * 2, true) & mask) === mask) return i;
  return -1;
}

function nonFiniteAt(u: CopyUnit, i: number): CliError {
  const row = u.rowStart + Math.floor(i / u.cols);
  return new CliError('E_NONFINITE_WEIGHT', `${u.srcPath}: tensor '${u.tensor}' has a non-finite value at row ${row}, column ${i % u.cols}`);
}
