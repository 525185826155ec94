// The host (CPU) backend: activations are f32 typed arrays in this process; linears and paged attention run on
// the native addon (AVX-512 / AVX2 / scalar, all threads) or in plain JS; the small elementwise ops are JS on both.

import { availableParallelism } from 'node:os';
import type {
  ActDType,
  AttentionBatch,
  Backend,
  BackendInfo,
  EmbeddingDesc,
  EmbeddingTable,
  FloatLinearDesc,
  FloatWeightDType,
  KvCacheDesc,
  KvCacheDType,
  KvCacheLayer,
  KvQuantParams,
  LinearWeight,
  Logger,
  NormWeight,
  Rng,
  RopeTable,
  SamplingParams,
  Tensor,
  W8A16LinearDesc,
} from '../backend';
import { BackendError } from '../errors';
import { RopeAngleTable } from '../rope';
import { addRef, embeddingRef, rmsNormRef, siluMulRef } from '../ref';
import { argmaxRef, sampleRef } from '../sampling';
import {
  attentionHeads,
  checkAllocShape,
  checkAttentionBatch,
  checkDownload,
  checkEmbeddingDesc,
  checkFloatLinearDesc,
  checkFreeTensor,
  checkFreeWeight,
  checkGatherRows,
  checkKvCacheDesc,
  checkKvHalf,
  checkKvSlots,
  checkNormWeight,
  checkNotDisposed,
  checkRope,
  checkRopeTable,
  checkTokenIds,
  checkUpload,
  checkViewRows,
  checkW8A16LinearDesc,
  lengthIs,
  liveTensor,
  liveWeight,
  shapeIs,
} from '../validate';
import { floatLinearJs, kvWriteJs, pagedAttentionJs, w8a16LinearJs, type AttentionScratch } from './js-kernels';
import { loadHostAddon, NATIVE_ISA, NATIVE_KV_DTYPE, NATIVE_WTYPE, type HostAddon, type NativeIsa } from './native';

export type HostKernels = 'native' | 'js' | 'auto';
export type { NativeIsa } from './native';

export interface HostBackendOptions {
  /** Threads one native op may use (default: all cores). The js kernels use one. */
  threads?: number;
  /** `native` requires the addon, `js` never loads it, `auto` (default) tries native and falls back to js with one log line. */
  kernels?: HostKernels;
  logger?: Logger;
  /** Force a native instruction set (tests, benchmarks); default the best this CPU supports. */
  isa?: NativeIsa;
}

class HostTensor implements Tensor {
  freed = false;
  constructor(
    readonly shape: readonly [number, number],
    readonly dtype: ActDType,
    readonly data: Float32Array,
    readonly base: HostTensor | undefined,
  ) {}
  get alive(): boolean {
    return !this.freed && (!this.base || !this.base.freed);
  }
}

class HostEmbedding implements EmbeddingTable {
  freed = false;
  constructor(
    readonly vocab: number,
    readonly hidden: number,
    readonly dtype: FloatWeightDType,
    readonly data: Float32Array | Uint16Array,
  ) {}
}

class HostNorm implements NormWeight {
  freed = false;
  constructor(readonly weight: Float32Array) {}
  get size(): number {
    return this.weight.length;
  }
}

class HostFloatLinear implements LinearWeight {
  readonly kind = 'float' as const;
  freed = false;
  constructor(
    readonly n: number,
    readonly k: number,
    readonly dtype: FloatWeightDType,
    readonly data: Float32Array | Uint16Array,
    readonly bias: Float32Array | undefined,
  ) {}
  get hasBias(): boolean {
    return this.bias !== undefined;
  }
}

class HostW8A16Linear implements LinearWeight {
  readonly kind = 'w8a16' as const;
  readonly dtype = 'i8' as const;
  freed = false;
  constructor(
    readonly n: number,
    readonly k: number,
    readonly q: Int8Array,
    readonly scale: Float32Array,
    readonly offset: Float32Array,
    readonly bias: Float32Array | undefined,
  ) {}
  get hasBias(): boolean {
    return this.bias !== undefined;
  }
}

/** The host's rope handle: the shared cos/sin table, read directly by the rope kernels. */
class HostRope extends RopeAngleTable implements RopeTable {}

class HostKvCache implements KvCacheLayer {
  freed = false;
  constructor(
    readonly numBlocks: number,
    readonly blockSize: number,
    readonly nKvHeads: number,
    readonly headDim: number,
    readonly dtype: KvCacheDType,
    readonly k: Float32Array | Uint16Array | Int8Array,
    readonly v: Float32Array | Uint16Array | Int8Array,
    readonly quant: KvQuantParams | undefined,
  ) {}
}

type HostWeight = HostEmbedding | HostNorm | HostFloatLinear | HostW8A16Linear | HostRope | HostKvCache;

class HostBackend implements Backend {
  readonly info: BackendInfo;
  private disposed = false;
  private readonly live = new Set<HostTensor | HostWeight>();
  private xSums = new Float64Array(16);
  private rowScratch = new Float32Array(1024);
  private rowSeq = new Int32Array(64);
  private attn: AttentionScratch = { scores: new Float64Array(1024), acc: new Float64Array(256), qs: new Float64Array(256) };

  constructor(
    private readonly addon: HostAddon | undefined,
    private readonly isa: number,
    threads: number,
  ) {
    const kernels = addon ? `native-${(Object.keys(NATIVE_ISA) as NativeIsa[]).find((k) => NATIVE_ISA[k] === isa)}` : 'js';
    this.info = { name: 'host', kernels, threads: addon ? threads : 1 };
  }

  // --- handles -------------------------------------------------------------------------------------------

  private check(): void {
    checkNotDisposed(this.disposed, 'host');
  }

  private t(x: Tensor, what: string): HostTensor {
    this.check();
    return liveTensor(x, HostTensor, this.live, what, 'host');
  }

  private w<C extends abstract new (...args: never[]) => HostWeight>(x: unknown, cls: C, what: string): InstanceType<C> {
    this.check();
    return liveWeight(x, cls, this.live, what, 'host');
  }

  private keep<T extends HostTensor | HostWeight>(x: T): T {
    this.live.add(x);
    return x;
  }

  // --- memory ----------------------------------------------------------------------------------------------

  alloc(rows: number, cols: number, dtype: ActDType = 'f32'): Tensor {
    this.check();
    if (dtype !== 'f32') throw new BackendError('E_DTYPE', `host backend: activations are f32, ${dtype} requested`);
    checkAllocShape(rows, cols);
    return this.keep(new HostTensor([rows, cols], dtype, new Float32Array(rows * cols), undefined));
  }

  view(x: Tensor, rowStart: number, rows: number): Tensor {
    const t = this.t(x, 'view');
    const [r, c] = t.shape;
    checkViewRows(rowStart, rows, r);
    return new HostTensor([rows, c], t.dtype, t.data.subarray(rowStart * c, (rowStart + rows) * c), t.base ?? t);
  }

  upload(dst: Tensor, src: Float32Array | Uint16Array): void {
    const t = this.t(dst, 'upload');
    checkUpload(t, src);
    t.data.set(src);
  }

  download(src: Tensor, dst?: Float32Array): Float32Array {
    const t = this.t(src, 'download');
    const out = dst ?? new Float32Array(t.data.length);
    checkDownload(t, out);
    out.set(t.data);
    return out;
  }

  free(x: Tensor): void {
    const t = this.t(x, 'free');
    checkFreeTensor(t.base);
    t.freed = true;
    this.live.delete(t);
  }

  // --- weights ---------------------------------------------------------------------------------------------

  createEmbedding(desc: EmbeddingDesc): EmbeddingTable {
    this.check();
    const data = checkEmbeddingDesc(desc);
    return this.keep(new HostEmbedding(desc.vocab, desc.hidden, desc.dtype, data));
  }

  createNormWeight(weight: Float32Array): NormWeight {
    this.check();
    checkNormWeight(weight);
    return this.keep(new HostNorm(weight));
  }

  createFloatLinear(desc: FloatLinearDesc): LinearWeight {
    this.check();
    const { data } = checkFloatLinearDesc(desc);
    return this.keep(new HostFloatLinear(desc.n, desc.k, desc.dtype, data, desc.bias));
  }

  createW8A16Linear(desc: W8A16LinearDesc): LinearWeight {
    this.check();
    checkW8A16LinearDesc(desc);
    return this.keep(new HostW8A16Linear(desc.n, desc.k, desc.weight, desc.scale, desc.offset, desc.bias));
  }

  createRope(headDim: number, invFreq: Float32Array): RopeTable {
    this.check();
    checkRopeTable(headDim, invFreq);
    return this.keep(new HostRope(headDim, invFreq));
  }

  createKvCache(desc: KvCacheDesc): KvCacheLayer {
    this.check();
    const size = desc.numBlocks * desc.blockSize * checkKvCacheDesc(desc);
    const quant: KvQuantParams | undefined = desc.dtype === 'int8' ? desc.quant : undefined;
    const make = (): Float32Array | Uint16Array | Int8Array =>
      desc.dtype === 'f32' ? new Float32Array(size) : desc.dtype === 'f16' ? new Uint16Array(size) : new Int8Array(size);
    return this.keep(new HostKvCache(desc.numBlocks, desc.blockSize, desc.nKvHeads, desc.headDim, desc.dtype, make(), make(), quant));
  }

  freeWeight(x: EmbeddingTable | NormWeight | LinearWeight | RopeTable | KvCacheLayer): void {
    this.check();
    const h = x as HostWeight;
    checkFreeWeight(h, this.live);
    h.freed = true;
    this.live.delete(h);
  }

  // --- ops -------------------------------------------------------------------------------------------------

  embedding(out: Tensor, table: EmbeddingTable, ids: Int32Array): void {
    const o = this.t(out, 'embedding out');
    const e = this.w(table, HostEmbedding, 'embedding table');
    shapeIs(o, ids.length, e.hidden, 'embedding out');
    checkTokenIds(ids, e.vocab);
    embeddingRef(o.data, e, e.hidden, ids);
  }

  rmsNorm(out: Tensor, x: Tensor, weight: NormWeight, eps: number): void {
    const o = this.t(out, 'rmsNorm out');
    const i = this.t(x, 'rmsNorm x');
    const w = this.w(weight, HostNorm, 'rmsNorm weight');
    shapeIs(i, i.shape[0], w.size, 'rmsNorm x');
    shapeIs(o, i.shape[0], w.size, 'rmsNorm out');
    rmsNormRef(o.data, i.data, i.shape[0], w.size, w.weight, eps);
  }

  linear(out: Tensor, x: Tensor, weight: LinearWeight): void {
    const o = this.t(out, 'linear out');
    const i = this.t(x, 'linear x');
    const T = i.shape[0];
    if (weight instanceof HostW8A16Linear) {
      const w = this.w(weight, HostW8A16Linear, 'linear weight');
      shapeIs(i, T, w.k, 'linear x');
      shapeIs(o, T, w.n, 'linear out');
      if (this.addon) {
        this.addon.w8a16Linear(o.data, i.data, T, w.q, w.scale, w.offset, w.bias ?? null, w.n, w.k, this.info.threads, this.isa);
      } else {
        if (this.xSums.length < T) this.xSums = new Float64Array(T);
        w8a16LinearJs(o.data, i.data, T, w.q, w.scale, w.offset, w.n, w.k, w.bias, this.xSums);
      }
      return;
    }
    const w = this.w(weight, HostFloatLinear, 'linear weight');
    shapeIs(i, T, w.k, 'linear x');
    shapeIs(o, T, w.n, 'linear out');
    if (this.addon) {
      this.addon.floatLinear(o.data, i.data, T, w.data, NATIVE_WTYPE[w.dtype], w.bias ?? null, w.n, w.k, this.info.threads, this.isa);
    } else {
      if (this.rowScratch.length < w.k) this.rowScratch = new Float32Array(w.k);
      floatLinearJs(o.data, i.data, T, w.data, w.dtype, w.n, w.k, w.bias, this.rowScratch);
    }
  }

  rope(q: Tensor, k: Tensor, positions: Int32Array, table: RopeTable): void {
    const qt = this.t(q, 'rope q');
    const kt = this.t(k, 'rope k');
    const r = this.w(table, HostRope, 'rope table');
    const T = positions.length;
    const hd = r.headDim;
    r.ensure(checkRope(qt, kt, positions, hd));
    const half = hd / 2;
    const { cos, sin } = r;
    const f = Math.fround;
    for (const x of [qt, kt]) {
      const cols = x.shape[1];
      const d = x.data;
      for (let t = 0; t < T; t++) {
        const cs = positions[t] * half;
        for (let base = t * cols; base < (t + 1) * cols; base += hd) {
          for (let i = 0; i < half; i++) {
            const c = cos[cs + i];
            const s = sin[cs + i];
            const x1 = d[base + i];
            const x2 = d[base + i + half];
            d[base + i] = f(x1 * c) - f(x2 * s);
            d[base + i + half] = f(x2 * c) + f(x1 * s);
          }
        }
      }
    }
  }

  siluMul(out: Tensor, gate: Tensor, up: Tensor): void {
    const o = this.t(out, 'siluMul out');
    const g = this.t(gate, 'siluMul gate');
    const u = this.t(up, 'siluMul up');
    shapeIs(u, g.shape[0], g.shape[1], 'siluMul up');
    shapeIs(o, g.shape[0], g.shape[1], 'siluMul out');
    siluMulRef(o.data, g.data, u.data);
  }

  add(out: Tensor, a: Tensor, b: Tensor): void {
    const o = this.t(out, 'add out');
    const x = this.t(a, 'add a');
    const y = this.t(b, 'add b');
    shapeIs(y, x.shape[0], x.shape[1], 'add b');
    shapeIs(o, x.shape[0], x.shape[1], 'add out');
    addRef(o.data, x.data, y.data);
  }

  gatherRows(out: Tensor, src: Tensor, rows: Int32Array): void {
    const o = this.t(out, 'gatherRows out');
    const s = this.t(src, 'gatherRows src');
    const cols = s.shape[1];
    shapeIs(o, rows.length, cols, 'gatherRows out');
    checkGatherRows(rows, s.shape[0]);
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i];
      o.data.set(s.data.subarray(r * cols, (r + 1) * cols), i * cols);
    }
  }

  kvWrite(cache: KvCacheLayer, k: Tensor, v: Tensor, slots: Int32Array): void {
    const c = this.w(cache, HostKvCache, 'kvWrite cache');
    const kt = this.t(k, 'kvWrite k');
    const vt = this.t(v, 'kvWrite v');
    const T = slots.length;
    const kvDim = c.nKvHeads * c.headDim;
    shapeIs(kt, T, kvDim, 'kvWrite k');
    shapeIs(vt, T, kvDim, 'kvWrite v');
    checkKvSlots(slots, c.numBlocks * c.blockSize);
    kvWriteJs(c, kt.data, vt.data, T, slots);
  }

  pagedAttention(out: Tensor, q: Tensor, cache: KvCacheLayer, batch: AttentionBatch, scale?: number): void {
    const o = this.t(out, 'pagedAttention out');
    const qt = this.t(q, 'pagedAttention q');
    const c = this.w(cache, HostKvCache, 'pagedAttention cache');
    const T = qt.shape[0];
    const nHeads = attentionHeads(qt, c.nKvHeads, c.headDim);
    shapeIs(o, T, qt.shape[1], 'pagedAttention out');
    const maxContext = checkAttentionBatch(batch, T, c);
    const attnScale = scale ?? 1 / Math.sqrt(c.headDim);
    if (this.addon) {
      if (this.rowSeq.length < T) this.rowSeq = new Int32Array(T);
      for (let s = 0; s < batch.numSeqs; s++) this.rowSeq.fill(s, batch.queryStart[s], batch.queryStart[s + 1]);
      const qp = c.quant;
      this.addon.pagedAttention(
        o.data, qt.data, T, nHeads, c.k, c.v, NATIVE_KV_DTYPE[c.dtype],
        qp?.kScale ?? null, qp?.kOffset ?? null, qp?.vScale ?? null, qp?.vOffset ?? null,
        c.nKvHeads, c.headDim, c.blockSize, batch.maxBlocksPerSeq, batch.positions, this.rowSeq, batch.blockTables,
        maxContext, attnScale, this.info.threads, this.isa,
      );
      return;
    }
    const a = this.attn;
    if (a.scores.length < maxContext) a.scores = new Float64Array(maxContext);
    if (a.acc.length < c.headDim) a.acc = new Float64Array(c.headDim);
    if (a.qs.length < c.headDim) a.qs = new Float64Array(c.headDim);
    pagedAttentionJs(o.data, qt.data, nHeads, c, batch, attnScale, a);
  }

  argmax(out: Int32Array, logits: Tensor): void {
    const l = this.t(logits, 'argmax logits');
    const [rows, vocab] = l.shape;
    lengthIs(out, rows, 'argmax out');
    for (let r = 0; r < rows; r++) out[r] = argmaxRef(l.data.subarray(r * vocab, (r + 1) * vocab));
  }

  sample(out: Int32Array, logits: Tensor, params: SamplingParams, rng: Rng): void {
    const l = this.t(logits, 'sample logits');
    const [rows, vocab] = l.shape;
    lengthIs(out, rows, 'sample out');
    for (let r = 0; r < rows; r++) out[r] = sampleRef(l.data.subarray(r * vocab, (r + 1) * vocab), params, rng);
  }

  readKvCache(cache: KvCacheLayer, which: 'k' | 'v'): Float32Array | Uint16Array | Int8Array {
    const c = this.w(cache, HostKvCache, 'readKvCache');
    checkKvHalf(which);
    return c[which].slice();
  }

  dispose(): void {
    for (const x of this.live) x.freed = true;
    this.live.clear();
    this.disposed = true;
  }
}

/**
 * The host backend. Memory: weights are NOT copied — the backend keeps the caller's typed arrays (a Uint8Array
 * at an unaligned offset is copied once), so the caller must not modify them; activations and KV caches are
 * fresh f32/f16/int8 arrays. Native kernels load lazily here, never on import.
 */
export function createHostBackend(opts: HostBackendOptions = {}): Backend {
  const kernels = opts.kernels ?? 'auto';
  if (!['native', 'js', 'auto'].includes(kernels)) {
    throw new BackendError('E_ARGUMENT', `host backend: kernels must be 'native', 'js' or 'auto', found ${String(kernels)}`);
  }
  const threads = Math.max(1, Math.floor(opts.threads ?? availableParallelism()));
  if (kernels === 'js') return new HostBackend(undefined, 0, threads);
  let addon: HostAddon;
  try {
    addon = loadHostAddon();
  } catch (e) {
    if (kernels === 'native' || !(e instanceof BackendError)) throw e;
    (opts.logger?.warn ?? opts.logger?.info)?.call(opts.logger, `ascend-runtime: using js host kernels (${e.message})`);
    return new HostBackend(undefined, 0, threads);
  }
  const best = addon.bestIsa();
  let isa = best;
  if (opts.isa) {
    isa = NATIVE_ISA[opts.isa];
    if (isa === undefined || isa > best) {
      throw new BackendError('E_ARGUMENT', `host backend: isa ${opts.isa} requested, this CPU supports up to ${Object.keys(NATIVE_ISA)[best]}`);
    }
  }
  return new HostBackend(addon, isa, threads);
}
