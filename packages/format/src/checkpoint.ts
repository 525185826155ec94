// A checkpoint directory (one safetensors file or an index + shards) seen as one set of named tensors,
// read by rows or in row chunks. Not a loader: it never holds more than the caller asks for.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { DTYPE_TRAITS, decodeFloats, type FloatDType } from '@w8a16/quant-core';
import { FormatError, type FormatLogger } from './errors';
import { parseJson } from './json';
import { SafetensorsFile, type TensorInfo } from './safetensors-read';

export const SINGLE_FILE_NAME = 'model.safetensors';
export const INDEX_FILE_NAME = 'model.safetensors.index.json';
const INDEX_SUFFIX = '.safetensors.index.json';
const SAFETENSORS_SUFFIX = '.safetensors';

/** readFloat32 decodes whole tensors: above this many elements (1 GiB of float32) stream with readRows. */
export const READ_FLOAT32_MAX_ELEMENTS = 1 << 28;
/** readFloat32 reads and decodes in pieces of this size so the raw copy stays small. */
const DECODE_CHUNK_BYTES = 16 << 20;

export interface CheckpointOptions {
  logger?: FormatLogger;
}

function isFile(p: string): boolean {
  try {
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

export class Checkpoint {
  readonly dir: string;
  /** The index file when the checkpoint is sharded. */
  readonly indexPath: string | undefined;
  readonly files: readonly SafetensorsFile[];
  readonly tensors: readonly TensorInfo[];
  private readonly byName: Map<string, { info: TensorInfo; file: SafetensorsFile }>;

  private constructor(dir: string, indexPath: string | undefined, files: SafetensorsFile[], tensors: { info: TensorInfo; file: SafetensorsFile }[]) {
    this.dir = dir;
    this.indexPath = indexPath;
    this.files = files;
    this.tensors = tensors.map((t) => t.info);
    this.byName = new Map(tensors.map((t) => [t.info.name, t]));
  }

  /**
   * Resolution order: model.safetensors; model.safetensors.index.json; the only *.safetensors.index.json;
   * the only *.safetensors. Anything else (none, or several candidates) is an error naming what was found.
   */
  static open(dir: string, options: CheckpointOptions = {}): Checkpoint {
    const abs = path.resolve(dir);
    let names: string[];
    try {
      names = fs.readdirSync(abs).sort();
    } catch (cause) {
      throw new FormatError('E_DIR_MISSING', `${abs}: cannot read checkpoint directory: ${(cause as Error).message}`, { file: abs, cause });
    }
    const files = names.filter((n) => isFile(path.join(abs, n)));
    if (files.includes(SINGLE_FILE_NAME)) return Checkpoint.openSingle(abs, path.join(abs, SINGLE_FILE_NAME));
    if (files.includes(INDEX_FILE_NAME)) return Checkpoint.openIndex(abs, path.join(abs, INDEX_FILE_NAME), options);
    const indexes = files.filter((n) => n.endsWith(INDEX_SUFFIX));
    if (indexes.length === 1) return Checkpoint.openIndex(abs, path.join(abs, indexes[0]), options);
    if (indexes.length > 1) {
      throw new FormatError('E_AMBIGUOUS', `${abs}: expected one *${INDEX_SUFFIX}, found ${indexes.length}: ${indexes.join(', ')}`, { file: abs });
    }
    const singles = files.filter((n) => n.endsWith(SAFETENSORS_SUFFIX));
    if (singles.length === 1) return Checkpoint.openSingle(abs, path.join(abs, singles[0]));
    if (singles.length > 1) {
      throw new FormatError('E_AMBIGUOUS', `${abs}: expected one *.safetensors (or an index), found ${singles.length}: ${singles.join(', ')}`, { file: abs });
    }
    throw new FormatError('E_NO_WEIGHTS', `${abs}: expected ${SINGLE_FILE_NAME}, ${INDEX_FILE_NAME}, a *${INDEX_SUFFIX} or one *.safetensors; found none`, { file: abs });
  }

  private static openSingle(dir: string, file: string): Checkpoint {
    const f = SafetensorsFile.open(file);
    return new Checkpoint(dir, undefined, [f], f.tensors.map((info) => ({ info, file: f })));
  }

  private static openIndex(dir: string, indexPath: string, options: CheckpointOptions): Checkpoint {
    const text = fs.readFileSync(indexPath, 'utf8');
    const index = parseJson(text, indexPath, { code: 'E_INDEX_JSON', duplicateKeys: 'error' });
    const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
    if (typeof index !== 'object' || index === null || Array.isArray(index) || typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
      throw new FormatError('E_INDEX', `${indexPath}: expected an object with "weight_map": {tensor: shard file}`, { file: indexPath });
    }
    // Shards in order of first appearance in weight_map; each must be a file inside dir.
    const shardOf = new Map<string, string>();
    const shardNames: string[] = [];
    for (const [tensor, shard] of Object.entries(weightMap as Record<string, unknown>)) {
      if (typeof shard !== 'string' || shard === '' || path.isAbsolute(shard) || path.normalize(shard).split(/[\\/]/).includes('..')) {
        throw new FormatError('E_INDEX', `${indexPath}: weight_map["${tensor}"] must be a shard file name inside ${dir}, found ${JSON.stringify(shard)}`, { file: indexPath, tensor });
      }
      if (!shardNames.includes(shard)) shardNames.push(shard);
      shardOf.set(tensor, shard);
    }
    const opened = new Map<string, SafetensorsFile>();
    try {
      for (const shard of shardNames) {
        const shardPath = path.join(dir, shard);
        if (!isFile(shardPath)) {
          const first = [...shardOf].find(([, s]) => s === shard)?.[0];
          throw new FormatError('E_SHARD_MISSING', `${indexPath}: shard "${shard}" (holding tensor "${first}" among others) does not exist in ${dir}`, { file: shardPath, tensor: first });
        }
        opened.set(shard, SafetensorsFile.open(shardPath));
      }
      const entries: { info: TensorInfo; file: SafetensorsFile }[] = [];
      for (const [tensor, shard] of shardOf) {
        const f = opened.get(shard)!;
        if (f.get(tensor) === undefined) {
          throw new FormatError('E_TENSOR_MISSING', `${indexPath}: weight_map puts tensor "${tensor}" in shard "${shard}", but ${f.path} has no such tensor`, { file: f.path, tensor });
        }
      }
      for (const shard of shardNames) {
        const f = opened.get(shard)!;
        for (const info of f.tensors) {
          if (shardOf.get(info.name) === shard) entries.push({ info, file: f });
          else options.logger?.warn(`${f.path}: tensor "${info.name}" is not mapped to this shard by ${indexPath}; ignored`);
        }
      }
      return new Checkpoint(dir, indexPath, [...opened.values()], entries);
    } catch (e) {
      for (const f of opened.values()) f.close();
      throw e;
    }
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  get(name: string): TensorInfo {
    return this.entry(name).info;
  }

  private entry(name: string): { info: TensorInfo; file: SafetensorsFile } {
    const e = this.byName.get(name);
    if (e === undefined) throw new FormatError('E_TENSOR_MISSING', `tensor "${name}" not found in checkpoint ${this.dir}`, { file: this.dir, tensor: name });
    return e;
  }

  /** Rows are along dim 0; a 0-D or 1-D tensor has rows of one element. */
  rowCount(name: string): number {
    const { shape } = this.entry(name).info;
    return shape.length === 0 ? 1 : shape[0];
  }

  rowBytes(name: string): number {
    const { shape, dtype } = this.entry(name).info;
    let n = DTYPE_TRAITS[dtype].bytes;
    for (let i = 1; i < shape.length; i++) n *= shape[i];
    return n;
  }

  /** Raw bytes of rows [rowStart, rowStart+rowCount); `out` (if given) must hold at least that many bytes. */
  readRows(name: string, rowStart: number, rowCount: number, out?: Uint8Array): Uint8Array {
    const { info, file } = this.entry(name);
    const rows = this.rowCount(name);
    if (!Number.isSafeInteger(rowStart) || !Number.isSafeInteger(rowCount) || rowStart < 0 || rowCount < 0 || rowStart + rowCount > rows) {
      throw new FormatError('E_BOUNDS', `${info.file}: tensor "${name}": rows [${rowStart}, ${rowStart + rowCount}) are outside its ${rows} rows`, { file: info.file, tensor: name });
    }
    const rowBytes = this.rowBytes(name);
    const n = rowCount * rowBytes;
    let target: Uint8Array;
    if (out === undefined) target = new Uint8Array(n);
    else if (out.length < n) {
      throw new FormatError('E_BOUNDS', `${info.file}: tensor "${name}": output buffer holds ${out.length} bytes, ${rowCount} rows need ${n}`, { file: info.file, tensor: name });
    } else target = out.length === n ? out : out.subarray(0, n);
    file.readInto(info, target, rowStart * rowBytes);
    return target;
  }

  /** Decodes a whole F32/F16/BF16 tensor to float32 (meant for norms, scales and other small tensors). */
  readFloat32(name: string): Float32Array {
    const { info, file } = this.entry(name);
    if (info.dtype !== 'F32' && info.dtype !== 'F16' && info.dtype !== 'BF16') {
      throw new FormatError('E_DTYPE', `${info.file}: tensor "${name}": readFloat32 expects F32, F16 or BF16, found ${info.dtype}`, { file: info.file, tensor: name });
    }
    const dtype: FloatDType = info.dtype;
    const bytes = DTYPE_TRAITS[dtype].bytes;
    const count = info.byteLength / bytes;
    if (count > READ_FLOAT32_MAX_ELEMENTS) {
      throw new FormatError('E_TOO_LARGE', `${info.file}: tensor "${name}" has ${count} elements; readFloat32 decodes at most ${READ_FLOAT32_MAX_ELEMENTS} (use readRows/rowChunks)`, { file: info.file, tensor: name });
    }
    const out = new Float32Array(count);
    const perChunk = Math.max(1, Math.floor(DECODE_CHUNK_BYTES / bytes));
    const raw = new Uint8Array(Math.min(count, perChunk) * bytes);
    for (let i = 0; i < count; i += perChunk) {
      const m = Math.min(perChunk, count - i);
      const src = m * bytes === raw.length ? raw : raw.subarray(0, m * bytes);
      file.readInto(info, src, i * bytes);
      decodeFloats(out.subarray(i, i + m), src, dtype);
    }
    return out;
  }

  /** Splits the rows into chunks of at most maxChunkBytes (but always at least one row). */
  *rowChunks(name: string, maxChunkBytes: number): Generator<{ rowStart: number; rowCount: number }> {
    const rows = this.rowCount(name);
    const rowBytes = this.rowBytes(name);
    if (!(maxChunkBytes > 0)) {
      throw new FormatError('E_BOUNDS', `rowChunks("${name}"): maxChunkBytes must be positive, found ${maxChunkBytes}`, { tensor: name });
    }
    const perChunk = rowBytes === 0 ? Math.max(rows, 1) : Math.max(1, Math.floor(maxChunkBytes / rowBytes));
    for (let rowStart = 0; rowStart < rows; rowStart += perChunk) {
      yield { rowStart, rowCount: Math.min(perChunk, rows - rowStart) };
    }
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}
