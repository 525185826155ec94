// Safetensors writer: plans the exact bytes of every header first (layout identical to the Rust crate
// that `safetensors.torch.save_file` uses, sharded like msModelSlim's BufferedSafetensorsWriter), then
// takes tensor bytes by positional writes in any order. Holds headers only, never tensor data.
//
// Layout (Rust crate `prepare`): tensors sorted by dtype DEScending in the crate's `Dtype` enum order,
// then by name (byte order of UTF-8), data packed from 0 in that order; header = compact serde_json with
// `__metadata__` first, then the tensors in data order; padded with spaces so 8 + header is a multiple of 8.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { isDType, type DType } from '@w8a16/quant-core';
import { FormatError } from './errors';
import { pythonJsonDumps } from './json';
import { MAX_IO_CHUNK_BYTES, SAFETENSORS_LIMITS, tensorByteLength, validateShape } from './safetensors-read';

/**
 * Position of each dtype in the Rust crate's `Dtype` enum ("MUST be in increasing alignment order",
 * safetensors/src/tensor.rs): BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64.
 * Only the relative order matters; the F8 types are not in our vocabulary.
 */
export const SAFETENSORS_DTYPE_ORDER: Readonly<Record<DType, number>> = Object.freeze({
  BOOL: 0, U8: 1, I8: 2, I16: 5, U16: 6, F16: 7, BF16: 8, I32: 9, U32: 10, F32: 11, F64: 12, I64: 13, U64: 14,
});

export interface PlannedTensor {
  name: string;
  dtype: DType;
  shape: number[];
}

export interface PlannedFile {
  fileName: string;
  /** The 8-byte little-endian length followed by the padded header JSON. */
  header: Uint8Array;
  totalBytes: number;
  /** In data order; byteOffset is absolute in the file. */
  tensors: (PlannedTensor & { byteOffset: number; byteLength: number })[];
}

export interface OutputPlan {
  files: PlannedFile[];
  indexFileName?: string;
  /** Exact text of the index file (json.dump(indent=2), no trailing newline), when sharded. */
  indexJson?: string;
  totalTensorBytes: number;
  locate(name: string): { fileName: string; byteOffset: number; byteLength: number };
}

export interface PlanOptions {
  /** e.g. 'quant_model_weight_w8a16' */
  baseName: string;
  /** Shard limit in bytes (msModelSlim: part_file_size GB * 2^30). Absent: one file, no index. */
  partFileSizeBytes?: number;
  metadata?: Record<string, string>;
}

const METADATA_KEY = '__metadata__';
const encoder = new TextEncoder();

/** serde_json's string escaping: only '"', '\\' and control characters; non-ASCII stays raw UTF-8. */
function serdeJsonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += '\\\\';
    else if (c >= 0x20) out += s[i];
    else if (c === 0x08) out += '\\b';
    else if (c === 0x09) out += '\\t';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x0c) out += '\\f';
    else if (c === 0x0d) out += '\\r';
    else out += `\\u${c.toString(16).padStart(4, '0')}`;
  }
  return `${out}"`;
}

const LONE_SURROGATE = /\p{Cs}/u;

function checkName(name: unknown, where: string): asserts name is string {
  if (typeof name !== 'string' || name === METADATA_KEY || LONE_SURROGATE.test(name)) {
    throw new FormatError('E_NAME', `${where}: tensor name ${JSON.stringify(name)} is not allowed (must be a well-formed string other than "${METADATA_KEY}")`, { tensor: typeof name === 'string' ? name : undefined });
  }
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

function shardFileName(baseName: string, i: number, n: number): string {
  // msModelSlim (and transformers) pad to 5 digits; beyond 99999 shards msModelSlim drops the padding.
  return n <= 99999
    ? `${baseName}-${String(i).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`
    : `${baseName}-${i}-of-${n}.safetensors`;
}

interface Sized extends PlannedTensor {
  byteLength: number;
  nameBytes: Uint8Array;
}

function layoutFile(fileName: string, group: Sized[], metadata: Record<string, string> | undefined): PlannedFile {
  const sorted = [...group].sort(
    (a, b) => SAFETENSORS_DTYPE_ORDER[b.dtype] - SAFETENSORS_DTYPE_ORDER[a.dtype] || compareBytes(a.nameBytes, b.nameBytes),
  );
  const parts: string[] = [];
  if (metadata !== undefined) {
    const kv = Object.entries(metadata).map(([k, v]) => `${serdeJsonString(k)}:${serdeJsonString(v)}`);
    parts.push(`"${METADATA_KEY}":{${kv.join(',')}}`);
  }
  let offset = 0;
  const placed: { t: Sized; begin: number }[] = [];
  for (const t of sorted) {
    parts.push(`${serdeJsonString(t.name)}:{"dtype":"${t.dtype}","shape":[${t.shape.join(',')}],"data_offsets":[${offset},${offset + t.byteLength}]}`);
    placed.push({ t, begin: offset });
    offset += t.byteLength;
  }
  const json = encoder.encode(`{${parts.join(',')}}`);
  const padded = json.length + ((8 - (json.length % 8)) % 8);
  if (padded > SAFETENSORS_LIMITS.MAX_HEADER_BYTES) {
    throw new FormatError('E_HEADER_TOO_LARGE', `${fileName}: planned header of ${padded} bytes exceeds MAX_HEADER_BYTES ${SAFETENSORS_LIMITS.MAX_HEADER_BYTES}`, { file: fileName });
  }
  const header = new Uint8Array(8 + padded).fill(0x20);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(json, 8);
  const totalBytes = header.length + offset;
  if (!Number.isSafeInteger(totalBytes)) {
    throw new FormatError('E_PLAN', `${fileName}: total size ${totalBytes} is beyond 2^53 bytes`, { file: fileName });
  }
  return {
    fileName,
    header,
    totalBytes,
    tensors: placed.map(({ t, begin }) => ({ name: t.name, dtype: t.dtype, shape: [...t.shape], byteOffset: header.length + begin, byteLength: t.byteLength })),
  };
}

/**
 * Plans output files for tensors given in emission order. Without partFileSizeBytes: one file
 * `<baseName>.safetensors`. With it, msModelSlim's BufferedSafetensorsWriter.write rule: before adding a
 * tensor, if (bytes already in the shard + its bytes) >= limit and the shard is not empty, close the shard.
 * So a tensor at least as large as the limit ends up alone. Shards are `<baseName>-0000i-of-0000N.safetensors`
 * and the index `<baseName>.safetensors.index.json` maps every tensor (emission order) to its shard.
 */
export function planSafetensors(tensors: PlannedTensor[], opts: PlanOptions): OutputPlan {
  const { baseName, partFileSizeBytes, metadata } = opts;
  if (typeof baseName !== 'string' || baseName === '' || /[\\/]/.test(baseName)) {
    throw new FormatError('E_PLAN', `planSafetensors: baseName must be a plain file name stem, found ${JSON.stringify(baseName)}`);
  }
  if (partFileSizeBytes !== undefined && !(Number.isSafeInteger(partFileSizeBytes) && partFileSizeBytes > 0)) {
    throw new FormatError('E_PLAN', `planSafetensors: partFileSizeBytes must be a positive integer, found ${partFileSizeBytes}`);
  }
  if (metadata !== undefined) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string' || LONE_SURROGATE.test(k) || LONE_SURROGATE.test(v)) {
        throw new FormatError('E_METADATA', `planSafetensors: metadata["${k}"] must be a well-formed string, found ${JSON.stringify(v)}`);
      }
    }
  }
  const seen = new Set<string>();
  const sized: Sized[] = tensors.map((t) => {
    checkName(t.name, 'planSafetensors');
    if (seen.has(t.name)) throw new FormatError('E_DUPLICATE_TENSOR', `planSafetensors: tensor "${t.name}" is listed twice`, { tensor: t.name });
    seen.add(t.name);
    if (typeof t.dtype !== 'string' || !isDType(t.dtype)) {
      throw new FormatError('E_DTYPE', `planSafetensors: tensor "${t.name}": unsupported dtype ${JSON.stringify(t.dtype)}`, { tensor: t.name });
    }
    const shape = validateShape(t.shape, undefined, t.name);
    const byteLength = tensorByteLength(t.dtype, shape);
    if (byteLength === undefined) {
      throw new FormatError('E_SHAPE', `planSafetensors: tensor "${t.name}": ${t.dtype} ${JSON.stringify(shape)} is larger than 2^53 bytes`, { tensor: t.name });
    }
    return { name: t.name, dtype: t.dtype, shape: [...shape], byteLength, nameBytes: encoder.encode(t.name) };
  });
  if (sized.length > SAFETENSORS_LIMITS.MAX_TENSORS) {
    throw new FormatError('E_TOO_MANY_TENSORS', `planSafetensors: ${sized.length} tensors exceed MAX_TENSORS ${SAFETENSORS_LIMITS.MAX_TENSORS}`);
  }
  const totalTensorBytes = sized.reduce((s, t) => s + t.byteLength, 0);

  let files: PlannedFile[];
  let indexFileName: string | undefined;
  let indexJson: string | undefined;
  if (partFileSizeBytes === undefined) {
    files = [layoutFile(`${baseName}.safetensors`, sized, metadata)];
  } else {
    const groups: Sized[][] = [];
    let current: Sized[] = [];
    let currentBytes = 0;
    for (const t of sized) {
      if (currentBytes + t.byteLength >= partFileSizeBytes && current.length > 0) {
        groups.push(current);
        current = [];
        currentBytes = 0;
      }
      current.push(t);
      currentBytes += t.byteLength;
    }
    if (current.length > 0) groups.push(current);
    files = groups.map((g, i) => layoutFile(shardFileName(baseName, i + 1, groups.length), g, metadata));
    indexFileName = `${baseName}.safetensors.index.json`;
    const weightMap = new Map<string, string>();
    groups.forEach((g, i) => g.forEach((t) => weightMap.set(t.name, files[i].fileName)));
    indexJson = pythonJsonDumps(new Map<string, unknown>([['metadata', { total_size: totalTensorBytes }], ['weight_map', weightMap]]), 2);
  }

  const where = new Map<string, { fileName: string; byteOffset: number; byteLength: number }>();
  for (const f of files) for (const t of f.tensors) where.set(t.name, { fileName: f.fileName, byteOffset: t.byteOffset, byteLength: t.byteLength });
  return {
    files,
    ...(indexFileName !== undefined ? { indexFileName, indexJson } : {}),
    totalTensorBytes,
    locate(name: string) {
      const w = where.get(name);
      if (w === undefined) throw new FormatError('E_TENSOR_MISSING', `tensor "${name}" is not in this output plan`, { tensor: name });
      return { ...w };
    },
  };
}

interface Slot {
  name: string;
  fileIndex: number;
  path: string;
  byteOffset: number;
  byteLength: number;
  /** Disjoint, sorted, non-adjacent [start, end) ranges already written, flattened. */
  covered: number[];
}

/** Adds [start, end) to a sorted flat list of disjoint ranges, merging neighbours. */
function addRange(covered: number[], start: number, end: number): void {
  if (start >= end) return;
  let i = 0;
  while (i < covered.length && covered[i + 1] < start) i += 2;
  let j = i;
  let s = start;
  let e = end;
  while (j < covered.length && covered[j] <= end) {
    s = Math.min(s, covered[j]);
    e = Math.max(e, covered[j + 1]);
    j += 2;
  }
  covered.splice(i, j - i, s, e);
}

export interface WriterOptions {
  /** chmod applied to each finished file (msModelSlim leaves 0o400 weights, 0o600 json); default: leave as created (0o644 & ~umask). */
  finalMode?: number;
}

export class SafetensorsWriter {
  readonly dir: string;
  readonly plan: OutputPlan;
  private readonly paths: string[];
  private readonly fds: (number | undefined)[];
  private readonly slots: Map<string, Slot>;
  private readonly finalMode: number | undefined;
  private state: 'open' | 'finished' | 'aborted' = 'open';

  private constructor(dir: string, plan: OutputPlan, paths: string[], fds: number[], options: WriterOptions) {
    this.dir = dir;
    this.plan = plan;
    this.paths = paths;
    this.fds = fds;
    this.finalMode = options.finalMode;
    this.slots = new Map();
    plan.files.forEach((f, fileIndex) => {
      for (const t of f.tensors) {
        this.slots.set(t.name, { name: t.name, fileIndex, path: paths[fileIndex], byteOffset: t.byteOffset, byteLength: t.byteLength, covered: [] });
      }
    });
  }

  /** Creates every planned file (refusing to overwrite), writes its header and sets its final length. */
  static create(dir: string, plan: OutputPlan, options: WriterOptions = {}): SafetensorsWriter {
    const abs = path.resolve(dir);
    fs.mkdirSync(abs, { recursive: true });
    const targets = [...plan.files.map((f) => f.fileName), ...(plan.indexFileName ? [plan.indexFileName] : [])];
    for (const name of targets) {
      const p = path.join(abs, name);
      if (fs.existsSync(p)) throw new FormatError('E_EXISTS', `${p}: output file already exists`, { file: p });
    }
    const paths: string[] = [];
    const fds: number[] = [];
    try {
      for (const f of plan.files) {
        const p = path.join(abs, f.fileName);
        let fd: number;
        try {
          fd = fs.openSync(p, 'wx', 0o644);
        } catch (cause) {
          const code = (cause as NodeJS.ErrnoException).code === 'EEXIST' ? 'E_EXISTS' : 'E_IO';
          throw new FormatError(code, `${p}: cannot create output file: ${(cause as Error).message}`, { file: p, cause });
        }
        paths.push(p);
        fds.push(fd);
        writeFully(fd, f.header, 0, p);
        fs.ftruncateSync(fd, f.totalBytes);
      }
    } catch (e) {
      // Nothing of this writer escapes to the caller: close and remove what this call created.
      fds.forEach((fd) => fs.closeSync(fd));
      paths.forEach((p) => fs.rmSync(p, { force: true }));
      throw e;
    }
    return new SafetensorsWriter(abs, plan, paths, fds, options);
  }

  private slot(name: string, op: string): Slot {
    if (this.state !== 'open') throw new FormatError('E_CLOSED', `${op}("${name}"): writer for ${this.dir} is already ${this.state}`, { file: this.dir, tensor: name });
    const s = this.slots.get(name);
    if (s === undefined) throw new FormatError('E_TENSOR_MISSING', `${op}: tensor "${name}" is not in the output plan for ${this.dir}`, { file: this.dir, tensor: name });
    return s;
  }

  private checkRange(s: Slot, start: number, length: number, op: string): void {
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(length) || start < 0 || length < 0 || start + length > s.byteLength) {
      throw new FormatError('E_BOUNDS', `${s.path}: ${op} of ${length} bytes at byte ${start} of tensor "${s.name}" is outside its ${s.byteLength} bytes`, { file: s.path, tensor: s.name });
    }
  }

  /** Writes bytes at byteOffsetInTensor within the tensor (any order, any chunking). */
  write(name: string, bytes: Uint8Array, byteOffsetInTensor = 0): void {
    const s = this.slot(name, 'write');
    this.checkRange(s, byteOffsetInTensor, bytes.length, 'write');
    writeFully(this.fds[s.fileIndex]!, bytes, s.byteOffset + byteOffsetInTensor, s.path, name);
    addRange(s.covered, byteOffsetInTensor, byteOffsetInTensor + bytes.length);
  }

  /** Where a tensor's bytes go, so another thread can open `path` ('r+') and write at byteOffset itself. */
  locate(name: string): { path: string; byteOffset: number; byteLength: number } {
    const s = this.slot(name, 'locate');
    return { path: s.path, byteOffset: s.byteOffset, byteLength: s.byteLength };
  }

  /** Records bytes that someone else wrote at locate(name).byteOffset + byteOffsetInTensor. */
  markWritten(name: string, byteOffsetInTensor: number, byteLength: number): void {
    const s = this.slot(name, 'markWritten');
    this.checkRange(s, byteOffsetInTensor, byteLength, 'markWritten');
    addRange(s.covered, byteOffsetInTensor, byteOffsetInTensor + byteLength);
  }

  /** Bytes of `name` not yet written, as [start, end) ranges within the tensor. */
  missing(name: string): [number, number][] {
    const s = this.slot(name, 'missing');
    const out: [number, number][] = [];
    let at = 0;
    for (let i = 0; i < s.covered.length; i += 2) {
      if (s.covered[i] > at) out.push([at, s.covered[i]]);
      at = s.covered[i + 1];
    }
    if (at < s.byteLength) out.push([at, s.byteLength]);
    return out;
  }

  /**
   * Checks that every byte of every tensor was written (E_INCOMPLETE otherwise, writer stays open),
   * writes the index if sharded, fsyncs and closes. totalBytes counts the safetensors files.
   */
  finish(): { files: string[]; totalBytes: number } {
    if (this.state !== 'open') throw new FormatError('E_CLOSED', `finish: writer for ${this.dir} is already ${this.state}`, { file: this.dir });
    for (const s of this.slots.values()) {
      const gaps = this.missing(s.name);
      if (gaps.length > 0) {
        const [a, b] = gaps[0];
        throw new FormatError(
          'E_INCOMPLETE',
          `${s.path}: tensor "${s.name}" is incomplete: bytes [${a}, ${b}) of ${s.byteLength} were never written${gaps.length > 1 ? ` (and ${gaps.length - 1} more gaps)` : ''}`,
          { file: s.path, tensor: s.name },
        );
      }
    }
    const files = [...this.paths];
    if (this.plan.indexFileName !== undefined) {
      const p = path.join(this.dir, this.plan.indexFileName);
      const text = this.plan.indexJson ?? '';
      const fd = fs.openSync(p, 'wx', 0o644);
      try {
        writeFully(fd, new TextEncoder().encode(text), 0, p);
        fs.fsyncSync(fd);
        if (this.finalMode !== undefined) fs.fchmodSync(fd, this.finalMode);
      } finally {
        fs.closeSync(fd);
      }
      files.push(p);
    }
    for (let i = 0; i < this.fds.length; i++) {
      const fd = this.fds[i]!;
      fs.fsyncSync(fd);
      if (this.finalMode !== undefined) fs.fchmodSync(fd, this.finalMode);
      fs.closeSync(fd);
      this.fds[i] = undefined;
    }
    syncDir(this.dir);
    this.state = 'finished';
    return { files, totalBytes: this.plan.files.reduce((s, f) => s + f.totalBytes, 0) };
  }

  /** Closes every descriptor; the files stay where they are (the caller cleans the directory). */
  abort(): void {
    if (this.state !== 'open') return;
    for (let i = 0; i < this.fds.length; i++) {
      const fd = this.fds[i];
      if (fd !== undefined) fs.closeSync(fd);
      this.fds[i] = undefined;
    }
    this.state = 'aborted';
  }
}

function writeFully(fd: number, bytes: Uint8Array, position: number, file: string, tensor?: string): void {
  let done = 0;
  while (done < bytes.length) {
    const len = Math.min(bytes.length - done, MAX_IO_CHUNK_BYTES);
    const n = fs.writeSync(fd, bytes, done, len, position + done);
    if (n <= 0) throw new FormatError('E_IO', `${file}: write of ${len} bytes at ${position + done}${tensor ? ` (tensor "${tensor}")` : ''} made no progress`, { file, tensor });
    done += n;
  }
}

function syncDir(dir: string): void {
  // Makes the new directory entries durable; not every platform can fsync a directory, which is fine.
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // best effort
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
