// Tensor-parallel sharding plan for one rank, as ATB-Models splits LLaMA: q/k/v and gate/up by output rows
// (column-parallel), o_proj and down_proj by input columns (row-parallel, summed by an all-reduce). Pure arithmetic and
// a column reader; the loader (model/load.ts) applies it, the runtime (parallel/runtime.ts) runs the ranks.

import type { Checkpoint, LlamaConfig } from '@w8a16/format';
import { CliError } from '../cli/errors';

/** Most ranks a host run accepts: ranks are threads of one process; more is a typo, not a machine. */
export const MAX_WORLD_SIZE = 64;
/** Row-parallel weights are read in row chunks of at most this many bytes, so a 1 GB down_proj never sits twice in memory. */
export const COLUMN_READ_CHUNK_BYTES = 64 << 20;

/** A contiguous range `[start, start + count)` of rows or columns. */
export interface SliceRange {
  start: number;
  count: number;
}

/** What one rank holds: its head and MLP counts and which rows / columns of each weight. */
export interface TensorParallelShard {
  rank: number;
  worldSize: number;
  /** Query heads on this rank (`num_attention_heads / worldSize`). */
  nHeads: number;
  /** KV heads on this rank: `num_key_value_heads / worldSize`, or 1 when KV heads are replicated. */
  nKvHeads: number;
  /** MLP width on this rank (`intermediate_size / worldSize`). */
  intermediateSize: number;
  /** Rows of q_proj (and columns of o_proj) this rank holds. */
  qRows: SliceRange;
  /** Rows of k_proj / v_proj (and entries of the C8 kv_cache_scale / kv_cache_offset). */
  kvRows: SliceRange;
  /** Rows of gate_proj / up_proj (and columns of down_proj). */
  mlpRows: SliceRange;
  /** How many ranks hold each KV head: 1 when KV heads are split, `worldSize / num_key_value_heads` when replicated. */
  kvReplicas: number;
}

/** The linears of a decoder layer, by the role the split gives them. */
export type LinearRole = 'q' | 'k' | 'v' | 'o' | 'gate' | 'up' | 'down';

/**
 * How a rank loads one linear `[n, k]`: `rows` keeps output rows (with their scale / offset / bias rows), `cols`
 * keeps input columns (int8 codes sliced; the per-row scale / offset stay whole, since dequant is per row; the bias
 * is added by rank 0 only, so the all-reduce sums it once).
 */
export type LinearSplit = { kind: 'rows'; start: number; count: number } | { kind: 'cols'; start: number; count: number; withBias: boolean };

const usage = (message: string): CliError => new CliError('E_WORLD_SIZE', message);

/**
 * The shard of `rank` out of `worldSize`. KV heads follow ATB-Models (MindIE-LLM
 * `examples/atb_models/atb_llm/utils/weights.py`, `Weights.get_partial_sharded` with `gqa_size = head_dim`, and
 * `atb_llm/models/base/modeling.py`, `num_key_value_heads_per_rank`): split when `num_key_value_heads` is a multiple
 * of the world size, else, when the world size is a multiple of it, each rank holds ONE KV head,
 * `rank // (worldSize / num_key_value_heads)`, replicated on that many ranks. ATB pads heads with zeros in the
 * remaining cases; those are rejected here, as are head and MLP widths the world size does not divide.
 */
export function planShard(config: LlamaConfig, rank: number, worldSize: number): TensorParallelShard {
  const { nHeads, nKvHeads, headDim, intermediateSize } = config;
  if (!Number.isSafeInteger(worldSize) || worldSize < 1 || worldSize > MAX_WORLD_SIZE) {
    throw usage(`--world_size must be an integer in 1..${MAX_WORLD_SIZE}, got ${worldSize}`);
  }
  if (!Number.isSafeInteger(rank) || rank < 0 || rank >= worldSize) throw usage(`rank ${rank} is outside 0..${worldSize - 1}`);
  if (nHeads % worldSize !== 0) {
    throw usage(`--world_size ${worldSize} does not divide num_attention_heads ${nHeads}: query heads are split evenly across ranks`);
  }
  if (intermediateSize % worldSize !== 0) {
    throw usage(`--world_size ${worldSize} does not divide intermediate_size ${intermediateSize}: gate/up rows and down columns are split evenly across ranks`);
  }
  let kvLocal: number;
  let kvHead0: number;
  let kvReplicas: number;
  if (nKvHeads % worldSize === 0) {
    kvLocal = nKvHeads / worldSize;
    kvHead0 = rank * kvLocal;
    kvReplicas = 1;
  } else if (worldSize % nKvHeads === 0) {
    kvReplicas = worldSize / nKvHeads;
    kvLocal = 1;
    kvHead0 = Math.floor(rank / kvReplicas);
  } else {
    throw usage(
      `--world_size ${worldSize} and num_key_value_heads ${nKvHeads}: KV heads are split when the world size divides them, ` +
        `replicated when they divide the world size (as ATB-Models does); neither holds here`,
    );
  }
  const qLocal = nHeads / worldSize;
  const mlpLocal = intermediateSize / worldSize;
  return {
    rank,
    worldSize,
    nHeads: qLocal,
    nKvHeads: kvLocal,
    intermediateSize: mlpLocal,
    qRows: { start: rank * qLocal * headDim, count: qLocal * headDim },
    kvRows: { start: kvHead0 * headDim, count: kvLocal * headDim },
    mlpRows: { start: rank * mlpLocal, count: mlpLocal },
    kvReplicas,
  };
}

/** How `shard` loads the linear of `role`. */
export function linearSplit(shard: TensorParallelShard, role: LinearRole): LinearSplit {
  switch (role) {
    case 'q':
      return { kind: 'rows', ...shard.qRows };
    case 'k':
    case 'v':
      return { kind: 'rows', ...shard.kvRows };
    case 'gate':
    case 'up':
      return { kind: 'rows', ...shard.mlpRows };
    case 'o':
      return { kind: 'cols', ...shard.qRows, withBias: shard.rank === 0 };
    case 'down':
      return { kind: 'cols', ...shard.mlpRows, withBias: shard.rank === 0 };
  }
}

/**
 * Columns `[start, start + count)` of every row of a 2-D tensor, as raw bytes `[rows, count]` (int8 codes or float
 * elements). Reads the tensor in row chunks of at most COLUMN_READ_CHUNK_BYTES.
 */
export function readColumnSlice(ckpt: Checkpoint, name: string, start: number, count: number): Uint8Array {
  const info = ckpt.get(name);
  const [rows, cols] = info.shape;
  if (info.shape.length !== 2 || start < 0 || count < 1 || start + count > cols) {
    throw new CliError('E_SHAPE_MISMATCH', `${info.file}: tensor "${name}" [${info.shape.join(', ')}]: columns ${start}..${start + count - 1} are not inside a 2-D tensor`);
  }
  const elem = ckpt.rowBytes(name) / cols;
  const out = new Uint8Array(rows * count * elem);
  const rowOut = count * elem;
  for (const { rowStart, rowCount } of ckpt.rowChunks(name, COLUMN_READ_CHUNK_BYTES)) {
    const raw = ckpt.readRows(name, rowStart, rowCount);
    const rowIn = cols * elem;
    for (let r = 0; r < rowCount; r++) {
      const from = r * rowIn + start * elem;
      out.set(raw.subarray(from, from + rowOut), (rowStart + r) * rowOut);
    }
  }
  return out;
}

/** Rows `[start, start + count)` of a `[rows, cols]` row-major array (a view, no copy). */
export function sliceRows<T extends Int8Array | Float32Array | Uint16Array | Uint8Array>(a: T, cols: number, start: number, count: number): T {
  return a.subarray(start * cols, (start + count) * cols) as T;
}

/** Columns `[start, start + count)` of a `[rows, cols]` row-major array (a copy). */
export function sliceColumns<T extends Int8Array | Float32Array | Uint16Array | Uint8Array>(a: T, rows: number, cols: number, start: number, count: number): T {
  const out = new (a.constructor as new (n: number) => T)(rows * count);
  for (let r = 0; r < rows; r++) out.set(a.subarray(r * cols + start, r * cols + start + count), r * count);
  return out;
}
