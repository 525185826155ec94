// Safetensors reader: parses and validates one file's header, then reads tensor bytes by
// positional reads (no mmap, nothing loaded eagerly). Not a tensor library: it hands out raw bytes.
//
// Validation mirrors the Rust `safetensors` crate (`SafeTensors::read_metadata` + `Metadata::validate`):
// tensors sorted by data_offsets must tile [0, data length) exactly — start at 0, no overlap, no hole,
// and end exactly at the end of the file. Each violation gets its own FormatError code here.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { DTYPE_TRAITS, isDType, type DType } from '@w8a16/quant-core';
import { FormatError } from './errors';

export const SAFETENSORS_LIMITS: { readonly MAX_HEADER_BYTES: number; readonly MAX_TENSORS: number; readonly MAX_RANK: number } =
  Object.freeze({
    // The Rust crate's MAX_HEADER_SIZE (100_000_000 bytes, "100Mo"): a larger header is refused before it is read.
    MAX_HEADER_BYTES: 100_000_000,
    // Bounds the TensorInfo objects built from one header; real checkpoints hold a few thousand per file.
    MAX_TENSORS: 1 << 20,
    // Weights are rank <= 5 in practice; the cap keeps a hostile header from making shape work unbounded.
    MAX_RANK: 16,
  });

/** Largest single read/write handed to the OS: Node refuses lengths above 2^31-1 per call. */
export const MAX_IO_CHUNK_BYTES = 1 << 30;

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** Absolute path of the file holding the data. */
  file: string;
  /** Absolute byte offset of the first data byte in `file`. */
  byteOffset: number;
  byteLength: number;
}

const METADATA_KEY = '__metadata__';

/** prod(shape) * bytes, or undefined when it is not a safe integer. */
export function tensorByteLength(dtype: DType, shape: readonly number[]): number | undefined {
  let n = DTYPE_TRAITS[dtype].bytes;
  for (const d of shape) {
    n *= d;
    if (!Number.isSafeInteger(n)) return undefined;
  }
  return n;
}

/** Checks a shape value from a header or a plan; returns it as number[] or throws E_SHAPE. */
export function validateShape(shape: unknown, file: string | undefined, tensor: string): number[] {
  const where = file === undefined ? `tensor "${tensor}"` : `${file}: tensor "${tensor}"`;
  if (!Array.isArray(shape)) {
    throw new FormatError('E_SHAPE', `${where}: expected shape to be an array of non-negative integers, found ${JSON.stringify(shape)}`, { file, tensor });
  }
  if (shape.length > SAFETENSORS_LIMITS.MAX_RANK) {
    throw new FormatError('E_SHAPE', `${where}: rank ${shape.length} exceeds MAX_RANK ${SAFETENSORS_LIMITS.MAX_RANK}`, { file, tensor });
  }
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw new FormatError('E_SHAPE', `${where}: expected shape of non-negative safe integers, found ${JSON.stringify(shape)}`, { file, tensor });
    }
  }
  return shape as number[];
}

function readFully(fd: number, out: Uint8Array, position: number, file: string, tensor?: string): void {
  let done = 0;
  while (done < out.length) {
    const len = Math.min(out.length - done, MAX_IO_CHUNK_BYTES);
    const n = fs.readSync(fd, out, done, len, position + done);
    if (n === 0) {
      throw new FormatError('E_TRUNCATED', `${file}: expected ${out.length} bytes at offset ${position}${tensor ? ` (tensor "${tensor}")` : ''}, file ended after ${done}`, { file, tensor });
    }
    done += n;
  }
}

interface RawEntry {
  name: string;
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}

function parseEntry(name: string, value: unknown, file: string): RawEntry {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new FormatError('E_HEADER_JSON', `${file}: header entry for tensor "${name}" must be an object {dtype, shape, data_offsets}, found ${JSON.stringify(value)}`, { file, tensor: name });
  }
  const v = value as Record<string, unknown>;
  const dtype = v.dtype;
  if (typeof dtype !== 'string' || !isDType(dtype)) {
    throw new FormatError('E_DTYPE', `${file}: tensor "${name}": unsupported dtype ${JSON.stringify(dtype)} (expected one of ${Object.keys(DTYPE_TRAITS).join(', ')})`, { file, tensor: name });
  }
  const shape = validateShape(v.shape, file, name);
  const offs = v.data_offsets;
  if (
    !Array.isArray(offs) ||
    offs.length !== 2 ||
    !offs.every((o) => typeof o === 'number' && Number.isSafeInteger(o) && o >= 0) ||
    (offs[0] as number) > (offs[1] as number)
  ) {
    throw new FormatError('E_OFFSETS', `${file}: tensor "${name}": expected data_offsets [begin, end] with 0 <= begin <= end, found ${JSON.stringify(offs)}`, { file, tensor: name });
  }
  const [begin, end] = offs as [number, number];
  const expected = tensorByteLength(dtype, shape);
  if (expected === undefined) {
    throw new FormatError('E_SHAPE', `${file}: tensor "${name}": ${dtype} ${JSON.stringify(shape)} has a byte size beyond 2^53`, { file, tensor: name });
  }
  if (end - begin !== expected) {
    throw new FormatError('E_SIZE_MISMATCH', `${file}: tensor "${name}": ${dtype} ${JSON.stringify(shape)} needs ${expected} bytes, data_offsets [${begin}, ${end}] span ${end - begin}`, { file, tensor: name });
  }
  return { name, dtype, shape, begin, end };
}

function parseMetadata(value: unknown, file: string): Record<string, string> | undefined {
  if (value === null) return undefined; // serde reads null as None
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new FormatError('E_METADATA', `${file}: "__metadata__" must be a map of string to string, found ${JSON.stringify(value)}`, { file });
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (typeof v !== 'string') {
      throw new FormatError('E_METADATA', `${file}: "__metadata__" value for key "${k}" must be a string, found ${JSON.stringify(v)}`, { file });
    }
    Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

export class SafetensorsFile {
  readonly path: string;
  readonly headerLength: number;
  readonly dataStart: number;
  readonly fileSize: number;
  readonly metadata: Record<string, string> | undefined;
  readonly tensors: readonly TensorInfo[];
  private readonly byName: Map<string, TensorInfo>;
  private fd: number | undefined;

  private constructor(fd: number, file: string, headerLength: number, fileSize: number, metadata: Record<string, string> | undefined, tensors: TensorInfo[]) {
    this.fd = fd;
    this.path = file;
    this.headerLength = headerLength;
    this.dataStart = 8 + headerLength;
    this.fileSize = fileSize;
    this.metadata = metadata;
    this.tensors = tensors;
    this.byName = new Map(tensors.map((t) => [t.name, t]));
  }

  /** Opens and validates a file; the descriptor stays open for readInto until close(). */
  static open(filePath: string): SafetensorsFile {
    const file = path.resolve(filePath);
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch (cause) {
      const code = (cause as NodeJS.ErrnoException).code === 'ENOENT' ? 'E_FILE_MISSING' : 'E_IO';
      throw new FormatError(code, `${file}: cannot open safetensors file: ${(cause as Error).message}`, { file, cause });
    }
    try {
      return SafetensorsFile.parse(fd, file);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  private static parse(fd: number, file: string): SafetensorsFile {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) throw new FormatError('E_IO', `${file}: not a regular file`, { file });
    const fileSize = stat.size;
    if (fileSize < 8) {
      throw new FormatError('E_TRUNCATED', `${file}: expected at least 8 bytes (header length), file has ${fileSize}`, { file });
    }
    const prefix = new Uint8Array(8);
    readFully(fd, prefix, 0, file);
    const n = new DataView(prefix.buffer).getBigUint64(0, true);
    if (n === 0n) {
      // The crate fails here too (an empty string is not JSON).
      throw new FormatError('E_HEADER_JSON', `${file}: header length is 0, expected a JSON object`, { file });
    }
    if (n > BigInt(SAFETENSORS_LIMITS.MAX_HEADER_BYTES)) {
      throw new FormatError('E_HEADER_TOO_LARGE', `${file}: header length ${n} exceeds MAX_HEADER_BYTES ${SAFETENSORS_LIMITS.MAX_HEADER_BYTES}`, { file });
    }
    const headerLength = Number(n);
    if (8 + headerLength > fileSize) {
      throw new FormatError('E_TRUNCATED', `${file}: header claims ${headerLength} bytes after the 8-byte prefix, file has only ${fileSize - 8}`, { file });
    }
    const headerBytes = new Uint8Array(headerLength);
    readFully(fd, headerBytes, 8, file);
    let header: unknown;
    try {
      // fatal: invalid UTF-8 is an error (the crate: InvalidHeader); ignoreBOM keeps a BOM so JSON.parse rejects it like serde.
      const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
      header = JSON.parse(text);
    } catch (cause) {
      throw new FormatError('E_HEADER_JSON', `${file}: header is not valid UTF-8 JSON: ${(cause as Error).message}`, { file, cause });
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) {
      throw new FormatError('E_HEADER_JSON', `${file}: header must be a JSON object, found ${Array.isArray(header) ? 'an array' : JSON.stringify(header)}`, { file });
    }

    let metadata: Record<string, string> | undefined;
    const names = Object.keys(header);
    const tensorCount = names.length - (Object.prototype.hasOwnProperty.call(header, METADATA_KEY) ? 1 : 0);
    if (tensorCount > SAFETENSORS_LIMITS.MAX_TENSORS) {
      throw new FormatError('E_TOO_MANY_TENSORS', `${file}: header lists ${tensorCount} tensors, MAX_TENSORS is ${SAFETENSORS_LIMITS.MAX_TENSORS}`, { file });
    }
    const entries: RawEntry[] = [];
    for (const name of names) {
      const value = (header as Record<string, unknown>)[name];
      if (name === METADATA_KEY) metadata = parseMetadata(value, file);
      else entries.push(parseEntry(name, value, file));
    }

    // The crate sorts by data_offsets, then requires each tensor to start where the previous ended.
    entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
    const dataStart = 8 + headerLength;
    const dataLength = fileSize - dataStart;
    let prevEnd = 0;
    let prevName: string | undefined;
    for (const e of entries) {
      if (e.begin !== prevEnd) {
        const what =
          e.begin < prevEnd
            ? `overlaps tensor "${prevName}" (which ends at ${prevEnd})`
            : `leaves a hole of ${e.begin - prevEnd} bytes ${prevName === undefined ? 'at the start of the data' : `after tensor "${prevName}" (which ends at ${prevEnd})`}`;
        throw new FormatError('E_OVERLAP', `${file}: tensor "${e.name}" data_offsets [${e.begin}, ${e.end}] ${what}; tensors must tile the data section contiguously from 0`, { file, tensor: e.name });
      }
      if (e.end > dataLength) {
        throw new FormatError('E_TRUNCATED', `${file}: tensor "${e.name}" data_offsets [${e.begin}, ${e.end}] extend beyond the ${dataLength} data bytes in the file`, { file, tensor: e.name });
      }
      prevEnd = e.end;
      prevName = e.name;
    }
    if (prevEnd !== dataLength) {
      throw new FormatError('E_TRAILING_DATA', `${file}: tensors cover ${prevEnd} data bytes but the file holds ${dataLength} after the header (${dataLength - prevEnd} unaccounted bytes at the end)`, { file });
    }

    const tensors: TensorInfo[] = entries.map((e) => ({
      name: e.name,
      dtype: e.dtype,
      shape: e.shape,
      file,
      byteOffset: dataStart + e.begin,
      byteLength: e.end - e.begin,
    }));
    return new SafetensorsFile(fd, file, headerLength, fileSize, metadata, tensors);
  }

  get(name: string): TensorInfo | undefined {
    return this.byName.get(name);
  }

  /** Reads out.length bytes of the tensor starting byteStart bytes into it. */
  readInto(info: TensorInfo, out: Uint8Array, byteStart = 0): void {
    if (this.fd === undefined) throw new FormatError('E_CLOSED', `${this.path}: file is closed`, { file: this.path, tensor: info.name });
    const own = this.byName.get(info.name);
    if (info.file !== this.path || own === undefined || own.byteOffset !== info.byteOffset || own.byteLength !== info.byteLength) {
      throw new FormatError('E_TENSOR_MISSING', `${this.path}: tensor "${info.name}" (from ${info.file}) is not a tensor of this file`, { file: this.path, tensor: info.name });
    }
    if (!Number.isSafeInteger(byteStart) || byteStart < 0 || byteStart + out.length > info.byteLength) {
      throw new FormatError('E_BOUNDS', `${this.path}: tensor "${info.name}": read of ${out.length} bytes at byte ${byteStart} is outside its ${info.byteLength} bytes`, { file: this.path, tensor: info.name });
    }
    readFully(this.fd, out, info.byteOffset + byteStart, this.path, info.name);
  }

  close(): void {
    if (this.fd !== undefined) {
      const fd = this.fd;
      this.fd = undefined;
      fs.closeSync(fd);
    }
  }
}
