// The Ascend (NPU) backend: the Backend interface over AscendCL + aclnn through koffi, one device, one stream.
// Weights, activations and the paged KV cache live in device memory; the host only uploads ids and metadata.

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
import { bf16ToF32, f16ToF32Table, f32ToBf16Bits, f32ToF16Bits } from '../dtype';
import { BackendError } from '../errors';
import { RopeAngleTable } from '../rope';
import { sampleRef } from '../sampling';
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
  positiveInt,
  shapeIs,
} from '../validate';
import {
  ACL_DTYPE,
  HCCL_DTYPE,
  HCCL_REDUCE_SUM,
  HCCL_ROOT_INFO_BYTES,
  loadAscendLibraries,
  type AscendLibraries,
  type Ptr,
} from './bindings';
import { AscendError } from './errors';
import { AclSession, contiguousStrides, GrowBuffer, type TensorDesc } from './session';

export interface AscendBackendOptions {
  /** NPU index for aclrtSetDevice (default 0). */
  deviceId?: number;
  /** Directory holding libascendcl.so, libnnopbase.so, libopapi.so, libhccl.so; when set, the only place searched. */
  libDir?: string;
  logger?: Logger;
  /**
   * Activation dtype `alloc` uses when none is given, and the dtype float weights and the embedding are stored in.
   * Default `f16`: the W8A16 matmul and the attention kernels of Atlas A2 take FLOAT16/BFLOAT16 only. `f32` runs on
   * the test stand-in (exact comparison with the host Ref kernels) but real A2 kernels reject it.
   */
  actDType?: ActDType;
  /** Environment for the library search variables (default `process.env`). */
  env?: Record<string, string | undefined>;
}

/** The Backend plus what only a device backend has: its device, its libraries, and HCCL all-reduce. */
export interface AscendBackend extends Backend {
  readonly deviceId: number;
  readonly libraryPaths: Readonly<Record<'ascendcl' | 'nnopbase' | 'opapi', string>>;
  /** Device memory held by this backend, in bytes (weights, caches, activations, scratch). */
  readonly deviceBytes: number;
  /** Wait for everything queued on the stream. */
  synchronize(): void;
  /** HCCL root info, made by rank 0 and handed to the other ranks out of band (HCCL_ROOT_INFO_BYTES bytes). */
  hcclRootInfo(): Uint8Array;
  /** Join the communicator of `nRanks` ranks as `rank` (HcclCommInitRootInfo). */
  initCommunicator(nRanks: number, rank: number, rootInfo: Uint8Array): void;
  /** In-place sum of `t` over every rank of the communicator (HcclAllReduce, queued on this backend's stream). */
  allReduceSum(t: Tensor): void;
  /**
   * Leave the communicator now (HcclCommDestroy; no-op without one) but keep the device: a rank that gives up calls it
   * so the others' pending collectives end, without finalizing AscendCL under ranks still running. dispose does it too.
   */
  destroyCommunicator(): void;
}

/** Device element type of each activation dtype. */
const ACT = {
  f32: { acl: ACL_DTYPE.f32, bytes: 4, hccl: HCCL_DTYPE.f32 },
  f16: { acl: ACL_DTYPE.f16, bytes: 2, hccl: HCCL_DTYPE.f16 },
  bf16: { acl: ACL_DTYPE.bf16, bytes: 2, hccl: HCCL_DTYPE.bf16 },
} as const satisfies Record<ActDType, { acl: number; bytes: number; hccl: number }>;

const KV = {
  f32: { acl: ACL_DTYPE.f32, bytes: 4 },
  f16: { acl: ACL_DTYPE.f16, bytes: 2 },
  int8: { acl: ACL_DTYPE.i8, bytes: 1 },
} as const satisfies Record<KvCacheDType, { acl: number; bytes: number }>;

/** FIA's rightDownCausal (sparseMode 3) takes this fixed lower-triangular mask, not a per-batch one (FIA V2 doc). */
const CAUSAL_MASK_SIZE = 2048;
/** Host conversions of big float tables go through bounded chunks, so a 2 GB embedding never doubles in host memory. */
const CONVERT_CHUNK_ELEMENTS = 1 << 22;

/** f32 values as the host bits of `dtype` (a copy for f16/bf16, the input itself for f32). */
function encodeAct(values: Float32Array, dtype: ActDType): Float32Array | Uint16Array {
  if (dtype === 'f32') return values;
  return Uint16Array.from(values, dtype === 'f16' ? f32ToF16Bits : f32ToBf16Bits);
}

/** Element i of a host float weight as f32. */
function weightValue(data: Float32Array | Uint16Array, dtype: FloatWeightDType): (i: number) => number {
  if (dtype === 'f32') return (i) => data[i];
  if (dtype === 'f16') {
    const t = f16ToF32Table();
    return (i) => t[data[i]];
  }
  return (i) => bf16ToF32(data[i]);
}

class AscendTensor implements Tensor {
  freed = false;
  constructor(
    readonly shape: readonly [number, number],
    readonly dtype: ActDType,
    /** Start of the base allocation. */
    readonly ptr: Ptr,
    /** Elements in the base allocation. */
    readonly storageElems: number,
    /** First element of this tensor in the base allocation (views start inside it). */
    readonly elemOffset: number,
    readonly base: AscendTensor | undefined,
  ) {}
  get alive(): boolean {
    return !this.freed && (!this.base || !this.base.freed);
  }
  get byteOffset(): number {
    return this.elemOffset * ACT[this.dtype].bytes;
  }
}

class AscendEmbedding implements EmbeddingTable {
  freed = false;
  constructor(
    readonly vocab: number,
    readonly hidden: number,
    readonly dtype: FloatWeightDType,
    readonly deviceDtype: ActDType,
    readonly ptr: Ptr,
  ) {}
}

/** A small host array kept on the device once per activation dtype that asks for it. */
type PerDtype = Map<ActDType, Ptr>;

class AscendNorm implements NormWeight {
  freed = false;
  readonly dev: PerDtype = new Map();
  constructor(readonly weight: Float32Array) {}
  get size(): number {
    return this.weight.length;
  }
}

class AscendFloatLinear implements LinearWeight {
  readonly kind = 'float' as const;
  freed = false;
  readonly biasDev: PerDtype = new Map();
  constructor(
    readonly n: number,
    readonly k: number,
    readonly dtype: FloatWeightDType,
    readonly deviceDtype: ActDType,
    readonly ptr: Ptr,
    readonly bias: Float32Array | undefined,
  ) {}
  get hasBias(): boolean {
    return this.bias !== undefined;
  }
}

interface W8A16Params {
  scale: Ptr;
  antiquantOffset: Ptr;
  bias: Ptr | null;
  biasDtype: number;
}

class AscendW8A16Linear implements LinearWeight {
  readonly kind = 'w8a16' as const;
  readonly dtype = 'i8' as const;
  freed = false;
  readonly params = new Map<ActDType, W8A16Params>();
  constructor(
    readonly n: number,
    readonly k: number,
    readonly ptr: Ptr,
    readonly scale: Float32Array,
    readonly offset: Float32Array,
    readonly bias: Float32Array | undefined,
  ) {}
  get hasBias(): boolean {
    return this.bias !== undefined;
  }
}

/** The Ascend rope handle: the shared cos/sin table on the host; rows are uploaded per call in the rotate_half layout. */
class AscendRope extends RopeAngleTable implements RopeTable {}

interface KvDeviceQuant {
  /** `[kvDim]` each, in the dtype aclnnQuantize takes with this activation dtype. */
  kScale: Ptr;
  vScale: Ptr;
  /** `[kvDim]` INT32 zero points (the integral offsets). */
  kZero: Ptr;
  vZero: Ptr;
  /** `[2, kvDim]` (K row, V row) in the query dtype, for FIA's antiquant: scale, and offset = −kv_cache_offset. */
  antiScale: Ptr;
  antiOffset: Ptr;
}

class AscendKvCache implements KvCacheLayer {
  freed = false;
  readonly quantDev = new Map<ActDType, KvDeviceQuant>();
  constructor(
    readonly numBlocks: number,
    readonly blockSize: number,
    readonly nKvHeads: number,
    readonly headDim: number,
    readonly dtype: KvCacheDType,
    readonly k: Ptr,
    readonly v: Ptr,
    readonly quant: KvQuantParams | undefined,
  ) {}
  get kvDim(): number {
    return this.nKvHeads * this.headDim;
  }
  get slots(): number {
    return this.numBlocks * this.blockSize;
  }
}

type AscendWeight = AscendEmbedding | AscendNorm | AscendFloatLinear | AscendW8A16Linear | AscendRope | AscendKvCache;

/** An int32 upload that skips the copy when the host data did not change (the same metadata every layer of a step). */
class IndexUpload {
  private last: Int32Array | null = null;
  constructor(readonly buf: GrowBuffer) {}
  put(s: AclSession, data: Int32Array): Ptr {
    const bytes = Math.max(4, data.byteLength);
    if (this.last && this.buf.ptr !== null && this.buf.bytes >= bytes && sameInts(this.last, data)) return this.buf.ptr;
    const grew = this.buf.ptr === null || this.buf.bytes < bytes;
    const p = this.buf.ensure(bytes);
    if (grew) this.last = null;
    if (data.length) s.upload(p, data);
    this.last = data.slice();
    return p;
  }
}

function sameInts(a: Int32Array, b: Int32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

class AscendBackendImpl implements AscendBackend {
  readonly info: BackendInfo;
  readonly deviceId: number;
  readonly libraryPaths: AscendBackend['libraryPaths'];
  private disposed = false;
  private readonly live = new Set<AscendTensor | AscendWeight>();
  private comm: Ptr | null = null;

  // scratch: grow-only device buffers reused by every call
  private readonly ids: IndexUpload;
  private readonly slotIdx: IndexUpload;
  private readonly keepIdx: IndexUpload;
  private readonly gatherIdx: IndexUpload;
  private readonly blockTables: IndexUpload;
  private readonly ropeCos: GrowBuffer;
  private readonly ropeSin: GrowBuffer;
  private ropeKey: { table: AscendRope; dtype: ActDType; positions: Int32Array } | null = null;
  private readonly rstd: GrowBuffer;
  private readonly tmpAct: GrowBuffer;
  private readonly kvCompactK: GrowBuffer;
  private readonly kvCompactV: GrowBuffer;
  private readonly kvConvK: GrowBuffer;
  private readonly kvConvV: GrowBuffer;
  private readonly argmaxOut: GrowBuffer;
  private causalMask: Ptr | null = null;
  private hostBits = new Uint16Array(0);
  private hostF32 = new Float32Array(0);

  constructor(
    private readonly s: AclSession,
    private readonly libs: AscendLibraries,
    private readonly actDType: ActDType,
    private readonly logger: Logger | undefined,
  ) {
    this.deviceId = s.deviceId;
    this.libraryPaths = libs.paths;
    this.info = { name: 'ascend', kernels: 'aclnn', threads: 1 };
    const buf = (what: string): GrowBuffer => new GrowBuffer(s, what);
    this.ids = new IndexUpload(buf('token ids'));
    this.slotIdx = new IndexUpload(buf('kv slots'));
    this.keepIdx = new IndexUpload(buf('kv kept rows'));
    this.gatherIdx = new IndexUpload(buf('gather rows'));
    this.blockTables = new IndexUpload(buf('block tables'));
    this.ropeCos = buf('rope cos');
    this.ropeSin = buf('rope sin');
    this.rstd = buf('rmsnorm rstd');
    this.tmpAct = buf('activation temporary');
    this.kvCompactK = buf('kv write K rows');
    this.kvCompactV = buf('kv write V rows');
    this.kvConvK = buf('kv write K in cache dtype');
    this.kvConvV = buf('kv write V in cache dtype');
    this.argmaxOut = buf('argmax');
  }

  get deviceBytes(): number {
    return this.s.deviceBytes;
  }

  // --- handles -------------------------------------------------------------------------------------------

  private check(): void {
    checkNotDisposed(this.disposed, 'ascend');
  }

  private t(x: Tensor, what: string): AscendTensor {
    this.check();
    return liveTensor(x, AscendTensor, this.live, what, 'ascend');
  }

  private w<C extends abstract new (...args: never[]) => AscendWeight>(x: unknown, cls: C, what: string): InstanceType<C> {
    this.check();
    return liveWeight(x, cls, this.live, what, 'ascend');
  }

  private keep<T extends AscendTensor | AscendWeight>(x: T): T {
    this.live.add(x);
    return x;
  }

  private sameDtype(a: AscendTensor, b: AscendTensor, what: string): void {
    if (a.dtype !== b.dtype) throw new BackendError('E_DTYPE', `${what}: dtypes differ (${a.dtype} and ${b.dtype}); the aclnn kernels take one dtype`);
  }

  // --- descriptors ---------------------------------------------------------------------------------------

  /** A 2-D activation: its rows inside the base allocation (the view offset goes into aclCreateTensor's offset). */
  private act(t: AscendTensor, dims: readonly number[] = t.shape): TensorDesc {
    return { dtype: ACT[t.dtype].acl, dims, strides: contiguousStrides(dims), offset: t.elemOffset, storage: [t.storageElems], data: t.ptr };
  }

  private flat(ptr: Ptr, dtype: number, dims: readonly number[], offset = 0, storageElems?: number): TensorDesc {
    const n = dims.reduce((a, b) => a * b, 1);
    return { dtype, dims, strides: contiguousStrides(dims), offset, storage: [storageElems ?? n + offset], data: ptr };
  }

  /** The (k, n) view of a row-major (n, k) weight: transposeB as MindIE passes it (strides (1, k)). */
  private transposedWeight(ptr: Ptr, dtype: number, n: number, k: number): TensorDesc {
    return { dtype, dims: [k, n], strides: [1, k], offset: 0, storage: [n, k], data: ptr };
  }

  // --- memory --------------------------------------------------------------------------------------------

  alloc(rows: number, cols: number, dtype: ActDType = this.actDType): Tensor {
    this.check();
    if (!Object.hasOwn(ACT, dtype)) throw new BackendError('E_DTYPE', `ascend backend: unknown activation dtype ${dtype}`);
    checkAllocShape(rows, cols);
    const ptr = this.s.malloc(rows * cols * ACT[dtype].bytes, `activation [${rows}, ${cols}] ${dtype}`);
    return this.keep(new AscendTensor([rows, cols], dtype, ptr, rows * cols, 0, undefined));
  }

  view(x: Tensor, rowStart: number, rows: number): Tensor {
    const t = this.t(x, 'view');
    const [r, c] = t.shape;
    checkViewRows(rowStart, rows, r);
    return new AscendTensor([rows, c], t.dtype, t.ptr, t.storageElems, t.elemOffset + rowStart * c, t.base ?? t);
  }

  upload(dst: Tensor, src: Float32Array | Uint16Array): void {
    const t = this.t(dst, 'upload');
    checkUpload(t, src);
    // f16/bf16 tensors take raw bits, or f32 values rounded to nearest even on the host
    const data = t.dtype === 'f32' || src instanceof Uint16Array ? src : encodeAct(src, t.dtype);
    this.s.upload(t.ptr, data, t.byteOffset);
  }

  download(src: Tensor, dst?: Float32Array): Float32Array {
    const t = this.t(src, 'download');
    const n = t.shape[0] * t.shape[1];
    const out = dst ?? new Float32Array(n);
    checkDownload(t, out);
    if (t.dtype === 'f32') {
      this.s.download(out, t.ptr, t.byteOffset);
      return out;
    }
    if (this.hostBits.length < n) this.hostBits = new Uint16Array(n);
    const bits = this.hostBits.subarray(0, n);
    this.s.download(bits, t.ptr, t.byteOffset);
    const decode = t.dtype === 'f16' ? weightValue(bits, 'f16') : weightValue(bits, 'bf16');
    for (let i = 0; i < n; i++) out[i] = decode(i);
    return out;
  }

  free(x: Tensor): void {
    const t = this.t(x, 'free');
    checkFreeTensor(t.base);
    t.freed = true;
    this.live.delete(t);
    this.s.free(t.ptr);
  }

  synchronize(): void {
    this.check();
    this.s.sync();
  }

  // --- weights -------------------------------------------------------------------------------------------

  /** Uploads `count` float elements converted from the checkpoint dtype to the device dtype, chunk by chunk. */
  private uploadFloat(ptr: Ptr, data: Float32Array | Uint16Array, from: FloatWeightDType, to: ActDType, count: number): void {
    if (from === to) {
      this.s.upload(ptr, data);
      return;
    }
    const get = weightValue(data, from);
    const bytes = ACT[to].bytes;
    for (let start = 0; start < count; start += CONVERT_CHUNK_ELEMENTS) {
      const end = Math.min(count, start + CONVERT_CHUNK_ELEMENTS);
      const chunk = to === 'f32' ? new Float32Array(end - start) : new Uint16Array(end - start);
      const enc = to === 'f16' ? f32ToF16Bits : f32ToBf16Bits;
      for (let i = start; i < end; i++) chunk[i - start] = to === 'f32' ? get(i) : enc(get(i));
      this.s.upload(ptr, chunk, start * bytes);
    }
  }

  /** A host f32 vector on the device in `dtype` (norm gammas, scales, biases), made on first use per dtype. */
  private smallParam(map: PerDtype, dtype: ActDType, values: Float32Array, what: string): Ptr {
    const have = map.get(dtype);
    if (have !== undefined) return have;
    const p = this.s.malloc(values.length * ACT[dtype].bytes, what);
    this.s.upload(p, encodeAct(values, dtype));
    map.set(dtype, p);
    return p;
  }

  createEmbedding(desc: EmbeddingDesc): EmbeddingTable {
    this.check();
    const data = checkEmbeddingDesc(desc);
    const count = desc.vocab * desc.hidden;
    const ptr = this.s.malloc(count * ACT[this.actDType].bytes, `embedding [${desc.vocab}, ${desc.hidden}]`);
    this.uploadFloat(ptr, data, desc.dtype, this.actDType, count);
    return this.keep(new AscendEmbedding(desc.vocab, desc.hidden, desc.dtype, this.actDType, ptr));
  }

  createNormWeight(weight: Float32Array): NormWeight {
    this.check();
    checkNormWeight(weight);
    return this.keep(new AscendNorm(weight.slice()));
  }

  createFloatLinear(desc: FloatLinearDesc): LinearWeight {
    this.check();
    const { what, data } = checkFloatLinearDesc(desc);
    const count = desc.n * desc.k;
    // Stored in the activation dtype: aclnnMatmul multiplies operands of one dtype (MindIE casts every float weight
    // to the model dtype at load too, spec §1.3).
    const ptr = this.s.malloc(count * ACT[this.actDType].bytes, `${what} [${desc.n}, ${desc.k}]`);
    this.uploadFloat(ptr, data, desc.dtype, this.actDType, count);
    return this.keep(new AscendFloatLinear(desc.n, desc.k, desc.dtype, this.actDType, ptr, desc.bias?.slice()));
  }

  createW8A16Linear(desc: W8A16LinearDesc): LinearWeight {
    this.check();
    const what = checkW8A16LinearDesc(desc);
    // int8 weights stay [n, k] on the device; the matmul reads them through a transposed view.
    const ptr = this.s.malloc(desc.n * desc.k, `${what} int8 [${desc.n}, ${desc.k}]`);
    this.s.upload(ptr, desc.weight);
    return this.keep(new AscendW8A16Linear(desc.n, desc.k, ptr, desc.scale.slice(), desc.offset.slice(), desc.bias?.slice()));
  }

  createRope(headDim: number, invFreq: Float32Array): RopeTable {
    this.check();
    checkRopeTable(headDim, invFreq);
    return this.keep(new AscendRope(headDim, invFreq.slice()));
  }

  createKvCache(desc: KvCacheDesc): KvCacheLayer {
    this.check();
    const kvDim = checkKvCacheDesc(desc);
    let quant: KvQuantParams | undefined;
    if (desc.dtype === 'int8' && desc.quant) {
      // copies (the caller may reuse its arrays); the zero points are integral (checked above): aclnnQuantize takes INT32
      quant = {
        kScale: desc.quant.kScale.slice(),
        kOffset: desc.quant.kOffset.slice(),
        vScale: desc.quant.vScale.slice(),
        vOffset: desc.quant.vOffset.slice(),
      };
    }
    if (desc.dtype === 'f32') this.logger?.warn?.('ascend backend: an f32 KV cache runs on the stand-in only; Atlas A2 attention takes FLOAT16/BFLOAT16/INT8 KV');
    if (desc.blockSize % 128 !== 0) {
      this.logger?.warn?.(`ascend backend: blockSize ${desc.blockSize}; FIA page attention on Atlas A2 wants a multiple of 128 (prefill)`);
    }
    const bytes = desc.numBlocks * desc.blockSize * kvDim * KV[desc.dtype].bytes;
    const k = this.s.malloc(bytes, `kv cache K [${desc.numBlocks}, ${desc.blockSize}, ${desc.nKvHeads}, ${desc.headDim}] ${desc.dtype}`);
    const v = this.s.malloc(bytes, `kv cache V [${desc.numBlocks}, ${desc.blockSize}, ${desc.nKvHeads}, ${desc.headDim}] ${desc.dtype}`);
    this.s.zero(k, bytes);
    this.s.zero(v, bytes);
    return this.keep(new AscendKvCache(desc.numBlocks, desc.blockSize, desc.nKvHeads, desc.headDim, desc.dtype, k, v, quant));
  }

  freeWeight(x: EmbeddingTable | NormWeight | LinearWeight | RopeTable | KvCacheLayer): void {
    this.check();
    const h = x as AscendWeight;
    checkFreeWeight(h, this.live);
    h.freed = true;
    this.live.delete(h);
    const ptrs: Ptr[] = [];
    if (h instanceof AscendEmbedding || h instanceof AscendFloatLinear || h instanceof AscendW8A16Linear) ptrs.push(h.ptr);
    if (h instanceof AscendNorm) ptrs.push(...h.dev.values());
    if (h instanceof AscendFloatLinear) ptrs.push(...h.biasDev.values());
    if (h instanceof AscendW8A16Linear) for (const p of h.params.values()) ptrs.push(p.scale, p.antiquantOffset, ...(p.bias === null ? [] : [p.bias]));
    if (h instanceof AscendKvCache) {
      ptrs.push(h.k, h.v);
      for (const q of h.quantDev.values()) ptrs.push(q.kScale, q.vScale, q.kZero, q.vZero, q.antiScale, q.antiOffset);
    }
    if (this.ropeKey?.table === h) this.ropeKey = null;
    for (const p of ptrs) this.s.free(p);
  }

  // --- ops -----------------------------------------------------------------------------------------------

  embedding(out: Tensor, table: EmbeddingTable, ids: Int32Array): void {
    const o = this.t(out, 'embedding out');
    const e = this.w(table, AscendEmbedding, 'embedding table');
    shapeIs(o, ids.length, e.hidden, 'embedding out');
    if (o.dtype !== e.deviceDtype) throw new BackendError('E_DTYPE', `embedding: out is ${o.dtype}, the table is stored as ${e.deviceDtype}`);
    checkTokenIds(ids, e.vocab);
    const idx = this.ids.put(this.s, ids);
    const { op } = this.libs;
    this.s.run('aclnnEmbedding', (sc) => {
      const weight = sc.tensor(this.flat(e.ptr, ACT[e.deviceDtype].acl, [e.vocab, e.hidden]));
      const indices = sc.tensor(this.flat(idx, ACL_DTYPE.i32, [ids.length]));
      const y = sc.tensor(this.act(o));
      return { plan: (ws, ex) => op.aclnnEmbeddingGetWorkspaceSize(weight, indices, y, ws, ex), launch: op.aclnnEmbedding };
    });
  }

  rmsNorm(out: Tensor, x: Tensor, weight: NormWeight, eps: number): void {
    const o = this.t(out, 'rmsNorm out');
    const i = this.t(x, 'rmsNorm x');
    const w = this.w(weight, AscendNorm, 'rmsNorm weight');
    const [T, H] = i.shape;
    shapeIs(i, T, w.size, 'rmsNorm x');
    shapeIs(o, T, w.size, 'rmsNorm out');
    this.sameDtype(o, i, 'rmsNorm');
    const gamma = this.smallParam(w.dev, i.dtype, w.weight, 'rmsNorm gamma');
    const rstd = this.rstd.ensure(T * 4);
    // An output aliasing the input goes through a temporary: aclnnRmsNorm does not document in-place use.
    const aliased = o.ptr === i.ptr && o.elemOffset === i.elemOffset;
    const target = aliased ? new AscendTensor([T, H], i.dtype, this.tmpAct.ensure(T * H * ACT[i.dtype].bytes), T * H, 0, undefined) : o;
    const { op } = this.libs;
    this.s.run('aclnnRmsNorm', (sc) => {
      const xd = sc.tensor(this.act(i));
      const g = sc.tensor(this.flat(gamma, ACT[i.dtype].acl, [H]));
      const y = sc.tensor(this.act(target));
      const r = sc.tensor(this.flat(rstd, ACL_DTYPE.f32, [T, 1]));
      return { plan: (ws, ex) => op.aclnnRmsNormGetWorkspaceSize(xd, g, eps, y, r, ws, ex), launch: op.aclnnRmsNorm };
    });
    if (aliased) this.copy(o, target);
  }

  /** dst = src on the stream (aclnnInplaceCopy). */
  private copy(dst: AscendTensor, src: AscendTensor): void {
    const { op } = this.libs;
    this.s.run('aclnnInplaceCopy', (sc) => {
      const d = sc.tensor(this.act(dst));
      const s = sc.tensor(this.act(src));
      return { plan: (ws, ex) => op.aclnnInplaceCopyGetWorkspaceSize(d, s, ws, ex), launch: op.aclnnInplaceCopy };
    });
  }

  linear(out: Tensor, x: Tensor, weight: LinearWeight): void {
    const o = this.t(out, 'linear out');
    const i = this.t(x, 'linear x');
    const T = i.shape[0];
    this.sameDtype(o, i, 'linear');
    const { op } = this.libs;
    if (weight instanceof AscendW8A16Linear) {
      const w = this.w(weight, AscendW8A16Linear, 'linear weight');
      shapeIs(i, T, w.k, 'linear x');
      shapeIs(o, T, w.n, 'linear out');
      const p = this.w8a16Params(w, i.dtype);
      this.s.run('aclnnWeightQuantBatchMatmulV2', (sc) => {
        const xd = sc.tensor(this.act(i));
        const wd = sc.tensor(this.transposedWeight(w.ptr, ACL_DTYPE.i8, w.n, w.k));
        const scale = sc.tensor(this.flat(p.scale, ACT[i.dtype].acl, [w.n]));
        const offset = sc.tensor(this.flat(p.antiquantOffset, ACT[i.dtype].acl, [w.n]));
        const bias = p.bias === null ? null : sc.tensor(this.flat(p.bias, p.biasDtype, [w.n]));
        const y = sc.tensor(this.act(o));
        return {
          plan: (ws, ex) => op.aclnnWeightQuantBatchMatmulV2GetWorkspaceSize(xd, wd, scale, offset, null, null, bias, 0, y, ws, ex),
          launch: op.aclnnWeightQuantBatchMatmulV2,
        };
      });
      return;
    }
    const w = this.w(weight, AscendFloatLinear, 'linear weight');
    shapeIs(i, T, w.k, 'linear x');
    shapeIs(o, T, w.n, 'linear out');
    if (i.dtype !== w.deviceDtype) {
      throw new BackendError('E_DTYPE', `linear: x is ${i.dtype}, the float weight is stored as ${w.deviceDtype} (the backend's actDType)`);
    }
    this.s.run('aclnnMatmul', (sc) => {
      const xd = sc.tensor(this.act(i));
      const wd = sc.tensor(this.transposedWeight(w.ptr, ACT[w.deviceDtype].acl, w.n, w.k));
      const y = sc.tensor(this.act(o));
      // cubeMathType 0 = KEEP_DTYPE: no silent down-cast of f32 operands
      return { plan: (ws, ex) => op.aclnnMatmulGetWorkspaceSize(xd, wd, y, 0, ws, ex), launch: op.aclnnMatmul };
    });
    if (w.bias) {
      const b = this.smallParam(w.biasDev, o.dtype, w.bias, 'linear bias');
      this.addRaw(o, o, this.flat(b, ACT[o.dtype].acl, [1, w.n]));
    }
  }

  /** The matmul's per-channel parameters in `dtype`: scale, antiquantOffset = −offset (MindIE's loader), bias. */
  private w8a16Params(w: AscendW8A16Linear, dtype: ActDType): W8A16Params {
    const have = w.params.get(dtype);
    if (have) return have;
    const put = (values: Float32Array, as: ActDType | 'f32', what: string): Ptr => {
      const p = this.s.malloc(values.length * ACT[as].bytes, what);
      this.s.upload(p, encodeAct(values, as));
      return p;
    };
    // bias dtype per the op doc: FLOAT16 with FLOAT16 x, FLOAT with BFLOAT16 x (and with the stand-in's FLOAT x)
    const biasAs: ActDType = dtype === 'f16' ? 'f16' : 'f32';
    const params: W8A16Params = {
      scale: put(w.scale, dtype, 'w8a16 antiquantScale'),
      antiquantOffset: put(w.offset.map((o) => -o), dtype, 'w8a16 antiquantOffset'),
      bias: w.bias ? put(w.bias, biasAs, 'w8a16 bias') : null,
      biasDtype: ACT[biasAs].acl,
    };
    w.params.set(dtype, params);
    return params;
  }

  rope(q: Tensor, k: Tensor, positions: Int32Array, table: RopeTable): void {
    const qt = this.t(q, 'rope q');
    const kt = this.t(k, 'rope k');
    const r = this.w(table, AscendRope, 'rope table');
    const T = positions.length;
    const hd = r.headDim;
    const maxPos = checkRope(qt, kt, positions, hd);
    this.sameDtype(qt, kt, 'rope');
    const dtype = qt.dtype;
    const bytes = T * hd * ACT[dtype].bytes;
    // The cos/sin rows are the same for every layer of a step: upload them only when the positions change.
    const grows = this.ropeCos.ptr === null || this.ropeCos.bytes < bytes || this.ropeSin.ptr === null || this.ropeSin.bytes < bytes;
    const key = this.ropeKey;
    const cosPtr = this.ropeCos.ensure(bytes);
    const sinPtr = this.ropeSin.ensure(bytes);
    if (grows || !key || key.table !== r || key.dtype !== dtype || !sameInts(key.positions, positions)) {
      // cos/sin rows in the rotate_half layout ApplyRotaryPosEmb expects: [cos θ0..θh-1, cos θ0..θh-1]
      r.ensure(maxPos);
      const half = hd / 2;
      const cos = new Float32Array(T * hd);
      const sin = new Float32Array(T * hd);
      for (let t = 0; t < T; t++) {
        for (let i = 0; i < half; i++) {
          const c = r.cos[positions[t] * half + i];
          const s = r.sin[positions[t] * half + i];
          cos[t * hd + i] = cos[t * hd + i + half] = c;
          sin[t * hd + i] = sin[t * hd + i + half] = s;
        }
      }
      this.s.upload(cosPtr, encodeAct(cos, dtype));
      this.s.upload(sinPtr, encodeAct(sin, dtype));
      this.ropeKey = { table: r, dtype, positions: positions.slice() };
    }
    const { op } = this.libs;
    this.s.run('aclnnApplyRotaryPosEmb', (sc) => {
      // layout 1 = BSND with B = T tokens, S = 1
      const qd = sc.tensor(this.act(qt, [T, 1, qt.shape[1] / hd, hd]));
      const kd = sc.tensor(this.act(kt, [T, 1, kt.shape[1] / hd, hd]));
      const c = sc.tensor(this.flat(cosPtr, ACT[dtype].acl, [T, 1, 1, hd]));
      const s = sc.tensor(this.flat(sinPtr, ACT[dtype].acl, [T, 1, 1, hd]));
      return { plan: (ws, ex) => op.aclnnApplyRotaryPosEmbGetWorkspaceSize(qd, kd, c, s, 1, ws, ex), launch: op.aclnnApplyRotaryPosEmb };
    });
  }

  siluMul(out: Tensor, gate: Tensor, up: Tensor): void {
    const o = this.t(out, 'siluMul out');
    const g = this.t(gate, 'siluMul gate');
    const u = this.t(up, 'siluMul up');
    const [T, I] = g.shape;
    shapeIs(u, T, I, 'siluMul up');
    shapeIs(o, T, I, 'siluMul out');
    this.sameDtype(g, u, 'siluMul');
    this.sameDtype(o, g, 'siluMul');
    const tmp = new AscendTensor([T, I], g.dtype, this.tmpAct.ensure(T * I * ACT[g.dtype].bytes), T * I, 0, undefined);
    const { op } = this.libs;
    this.s.run('aclnnSilu', (sc) => {
      const a = sc.tensor(this.act(g));
      const y = sc.tensor(this.act(tmp));
      return { plan: (ws, ex) => op.aclnnSiluGetWorkspaceSize(a, y, ws, ex), launch: op.aclnnSilu };
    });
    // elementwise: out may be gate or up
    this.s.run('aclnnMul', (sc) => {
      const a = sc.tensor(this.act(tmp));
      const b = sc.tensor(this.act(u));
      const y = sc.tensor(this.act(o));
      return { plan: (ws, ex) => op.aclnnMulGetWorkspaceSize(a, b, y, ws, ex), launch: op.aclnnMul };
    });
  }

  add(out: Tensor, a: Tensor, b: Tensor): void {
    const o = this.t(out, 'add out');
    const x = this.t(a, 'add a');
    const y = this.t(b, 'add b');
    shapeIs(y, x.shape[0], x.shape[1], 'add b');
    shapeIs(o, x.shape[0], x.shape[1], 'add out');
    this.sameDtype(x, y, 'add');
    this.sameDtype(o, x, 'add');
    this.addRaw(o, x, this.act(y));
  }

  /** out = a + b (b may be a (1, C) row broadcast over a's rows). Elementwise, so out may alias a or b. */
  private addRaw(o: AscendTensor, a: AscendTensor, b: TensorDesc): void {
    const { op } = this.libs;
    this.s.run('aclnnAdd', (sc) => {
      const x = sc.tensor(this.act(a));
      const y = sc.tensor(b);
      const alpha = sc.floatScalar(1);
      const z = sc.tensor(this.act(o));
      return { plan: (ws, ex) => op.aclnnAddGetWorkspaceSize(x, y, alpha, z, ws, ex), launch: op.aclnnAdd };
    });
  }

  gatherRows(out: Tensor, src: Tensor, rows: Int32Array): void {
    const o = this.t(out, 'gatherRows out');
    const s = this.t(src, 'gatherRows src');
    const cols = s.shape[1];
    shapeIs(o, rows.length, cols, 'gatherRows out');
    this.sameDtype(o, s, 'gatherRows');
    checkGatherRows(rows, s.shape[0]);
    this.indexSelect(o, s, this.gatherIdx.put(this.s, rows), rows.length);
  }

  private indexSelect(o: AscendTensor, s: AscendTensor, idx: Ptr, n: number): void {
    const { op } = this.libs;
    this.s.run('aclnnIndexSelect', (sc) => {
      const x = sc.tensor(this.act(s));
      const index = sc.tensor(this.flat(idx, ACL_DTYPE.i32, [n]));
      const y = sc.tensor(this.act(o));
      return { plan: (ws, ex) => op.aclnnIndexSelectGetWorkspaceSize(x, 0, index, y, ws, ex), launch: op.aclnnIndexSelect };
    });
  }

  kvWrite(cache: KvCacheLayer, k: Tensor, v: Tensor, slots: Int32Array): void {
    const c = this.w(cache, AscendKvCache, 'kvWrite cache');
    const kt = this.t(k, 'kvWrite k');
    const vt = this.t(v, 'kvWrite v');
    const T = slots.length;
    const kvDim = c.kvDim;
    shapeIs(kt, T, kvDim, 'kvWrite k');
    shapeIs(vt, T, kvDim, 'kvWrite v');
    this.sameDtype(kt, vt, 'kvWrite');
    checkKvSlots(slots, c.slots);
    const kept: number[] = [];
    for (let t = 0; t < T; t++) if (slots[t] >= 0) kept.push(t);
    if (!kept.length) return;
    // Negative slots skip their row; aclnnScatterPaKvCache takes slots in [0, slots) only, so the kept rows are
    // gathered first.
    let ks = kt;
    let vs = vt;
    let useSlots = slots;
    const n = kept.length;
    if (n < T) {
      const keep = this.keepIdx.put(this.s, Int32Array.from(kept));
      const bytes = n * kvDim * ACT[kt.dtype].bytes;
      ks = new AscendTensor([n, kvDim], kt.dtype, this.kvCompactK.ensure(bytes), n * kvDim, 0, undefined);
      vs = new AscendTensor([n, kvDim], kt.dtype, this.kvCompactV.ensure(bytes), n * kvDim, 0, undefined);
      this.indexSelect(ks, kt, keep, n);
      this.indexSelect(vs, vt, keep, n);
      useSlots = Int32Array.from(kept, (t) => slots[t]);
    }
    const slotPtr = this.slotIdx.put(this.s, useSlots);
    // The rows in the cache's dtype: quantized for int8 (aclnnQuantize, spec §3.2), cast when the float dtypes differ.
    const convBytes = n * kvDim * KV[c.dtype].bytes;
    let kSrc: TensorDesc = this.act(ks, [n, c.nKvHeads, c.headDim]);
    let vSrc: TensorDesc = this.act(vs, [n, c.nKvHeads, c.headDim]);
    if (c.dtype === 'int8') {
      const q = this.kvQuant(c, ks.dtype);
      const kq = this.kvConvK.ensure(convBytes);
      const vq = this.kvConvV.ensure(convBytes);
      this.quantize(ks, q.kScale, q.kZero, kq, kvDim);
      this.quantize(vs, q.vScale, q.vZero, vq, kvDim);
      kSrc = this.flat(kq, ACL_DTYPE.i8, [n, c.nKvHeads, c.headDim]);
      vSrc = this.flat(vq, ACL_DTYPE.i8, [n, c.nKvHeads, c.headDim]);
    } else if (KV[c.dtype].acl !== ACT[ks.dtype].acl) {
      const kc = this.kvConvK.ensure(convBytes);
      const vc = this.kvConvV.ensure(convBytes);
      this.cast(ks, kc, KV[c.dtype].acl);
      this.cast(vs, vc, KV[c.dtype].acl);
      kSrc = this.flat(kc, KV[c.dtype].acl, [n, c.nKvHeads, c.headDim]);
      vSrc = this.flat(vc, KV[c.dtype].acl, [n, c.nKvHeads, c.headDim]);
    }
    const { op } = this.libs;
    this.s.run('aclnnScatterPaKvCache', (sc) => {
      const cacheDims = [c.numBlocks, c.blockSize, c.nKvHeads, c.headDim];
      const kd = sc.tensor(kSrc);
      const vd = sc.tensor(vSrc);
      const kc = sc.tensor(this.flat(c.k, KV[c.dtype].acl, cacheDims));
      const vc = sc.tensor(this.flat(c.v, KV[c.dtype].acl, cacheDims));
      const sm = sc.tensor(this.flat(slotPtr, ACL_DTYPE.i32, [n]));
      return {
        plan: (ws, ex) => op.aclnnScatterPaKvCacheGetWorkspaceSize(kd, kc, sm, vd, vc, null, null, null, 'Norm', 'None', null, null, ws, ex),
        launch: op.aclnnScatterPaKvCache,
      };
    });
  }

  private quantize(x: AscendTensor, scale: Ptr, zero: Ptr, out: Ptr, kvDim: number): void {
    const { op } = this.libs;
    const rows = x.shape[0];
    // scales in x's dtype (the op requires it unless x is FLOAT)
    this.s.run('aclnnQuantize', (sc) => {
      const xd = sc.tensor(this.act(x));
      const s = sc.tensor(this.flat(scale, ACT[x.dtype].acl, [kvDim]));
      const z = sc.tensor(this.flat(zero, ACL_DTYPE.i32, [kvDim]));
      const y = sc.tensor(this.flat(out, ACL_DTYPE.i8, [rows, kvDim]));
      return { plan: (ws, ex) => op.aclnnQuantizeGetWorkspaceSize(xd, s, z, ACL_DTYPE.i8, -1, y, ws, ex), launch: op.aclnnQuantize };
    });
  }

  private cast(x: AscendTensor, out: Ptr, dtype: number): void {
    const { op } = this.libs;
    this.s.run('aclnnCast', (sc) => {
      const xd = sc.tensor(this.act(x));
      const y = sc.tensor(this.flat(out, dtype, x.shape));
      return { plan: (ws, ex) => op.aclnnCastGetWorkspaceSize(xd, dtype, y, ws, ex), launch: op.aclnnCast };
    });
  }

  /** The int8 cache's quantization and antiquant parameters for activations of `dtype`, made on first use. */
  private kvQuant(c: AscendKvCache, dtype: ActDType): KvDeviceQuant {
    const have = c.quantDev.get(dtype);
    if (have) return have;
    const q = c.quant as KvQuantParams;
    const kvDim = c.kvDim;
    const put = (data: Float32Array | Uint16Array | Int32Array, what: string): Ptr => {
      const p = this.s.malloc(data.byteLength, what);
      this.s.upload(p, data);
      return p;
    };
    const both = (a: Float32Array, b: Float32Array, sign: number): Float32Array => {
      const r = new Float32Array(2 * kvDim);
      for (let i = 0; i < kvDim; i++) {
        r[i] = sign * a[i];
        r[kvDim + i] = sign * b[i];
      }
      return r;
    };
    const made: KvDeviceQuant = {
      kScale: put(encodeAct(q.kScale, dtype), 'kv K scale'),
      vScale: put(encodeAct(q.vScale, dtype), 'kv V scale'),
      kZero: put(Int32Array.from(q.kOffset), 'kv K zero points'),
      vZero: put(Int32Array.from(q.vOffset), 'kv V zero points'),
      antiScale: put(encodeAct(both(q.kScale, q.vScale, 1), dtype), 'kv antiquantScale'),
      // FIA dequantizes as (x + antiquantOffset) · antiquantScale (AscendC AscendAntiQuant convention), so the
      // offset is negated as for the W8A16 weights: (q − offset) · scale, spec §3.2.
      antiOffset: put(encodeAct(both(q.kOffset, q.vOffset, -1), dtype), 'kv antiquantOffset'),
    };
    c.quantDev.set(dtype, made);
    return made;
  }

  pagedAttention(out: Tensor, q: Tensor, cache: KvCacheLayer, batch: AttentionBatch, scale?: number): void {
    const o = this.t(out, 'pagedAttention out');
    const qt = this.t(q, 'pagedAttention q');
    const c = this.w(cache, AscendKvCache, 'pagedAttention cache');
    const T = qt.shape[0];
    const H = qt.shape[1];
    const nHeads = attentionHeads(qt, c.nKvHeads, c.headDim);
    shapeIs(o, T, H, 'pagedAttention out');
    this.sameDtype(o, qt, 'pagedAttention');
    this.checkBatch(batch, T, c);
    const { numSeqs, queryStart, contextLens, maxBlocksPerSeq } = batch;
    const bt = this.blockTables.put(this.s, batch.blockTables);
    const anti = c.dtype === 'int8' ? this.kvQuant(c, qt.dtype) : null;
    const scaleValue = scale ?? 1 / Math.sqrt(c.headDim);
    const rows = (s: number): number => queryStart[s + 1] - queryStart[s];
    let decodeOnly = true;
    for (let s = 0; s < numSeqs; s++) if (rows(s) !== 1) decodeOnly = false;
    if (decodeOnly) {
      // every sequence contributes one row: one incremental (Q_S = 1) call over the whole batch
      this.fia(o, qt, c, anti, { B: numSeqs, S: 1, rowStart: 0, bt, btOffset: 0, maxBlocksPerSeq, qLens: null, kvLens: Array.from(contextLens), scaleValue, nHeads });
      return;
    }
    for (let s = 0; s < numSeqs; s++) {
      const n = rows(s);
      if (n === 0) continue;
      this.fia(o, qt, c, anti, {
        B: 1,
        S: n,
        rowStart: queryStart[s],
        bt,
        btOffset: s * maxBlocksPerSeq,
        maxBlocksPerSeq,
        qLens: n > 1 ? [n] : null,
        kvLens: [contextLens[s]],
        scaleValue,
        nHeads,
      });
    }
  }

  /** One aclnnFusedInferAttentionScoreV2 call: BSH query rows, BnBsH paged cache, rightDownCausal for Q_S > 1. */
  private fia(
    o: AscendTensor,
    qt: AscendTensor,
    c: AscendKvCache,
    anti: KvDeviceQuant | null,
    a: { B: number; S: number; rowStart: number; bt: Ptr; btOffset: number; maxBlocksPerSeq: number; qLens: number[] | null; kvLens: number[]; scaleValue: number; nHeads: number },
  ): void {
    const H = qt.shape[1];
    const mask = a.S > 1 ? this.mask() : null;
    const { op } = this.libs;
    const qDtype = ACT[qt.dtype].acl;
    this.s.run('aclnnFusedInferAttentionScoreV2', (sc) => {
      const dims = [a.B, a.S, H];
      const query = sc.tensor({ ...this.act(qt, dims), offset: qt.elemOffset + a.rowStart * H });
      const attn = sc.tensor({ ...this.act(o, dims), offset: o.elemOffset + a.rowStart * H });
      const cacheDims = [c.numBlocks, c.blockSize, c.kvDim];
      const key = sc.tensorList(this.flat(c.k, KV[c.dtype].acl, cacheDims));
      const value = sc.tensorList(this.flat(c.v, KV[c.dtype].acl, cacheDims));
      const blockTable = sc.tensor({ ...this.flat(a.bt, ACL_DTYPE.i32, [a.B, a.maxBlocksPerSeq]), offset: a.btOffset, storage: [a.btOffset + a.B * a.maxBlocksPerSeq] });
      const maskT = mask === null ? null : sc.tensor(this.flat(mask, ACL_DTYPE.u8, [CAUSAL_MASK_SIZE, CAUSAL_MASK_SIZE]));
      const qLens = a.qLens === null ? null : sc.intArray(a.qLens);
      const kvLens = sc.intArray(a.kvLens);
      const antiScale = anti === null ? null : sc.tensor(this.flat(anti.antiScale, qDtype, [2, c.kvDim]));
      const antiOffset = anti === null ? null : sc.tensor(this.flat(anti.antiOffset, qDtype, [2, c.kvDim]));
      const maxTokens = 2147483647; // "不特意指定时建议传入2147483647"; ignored for sparseMode 3
      return {
        plan: (ws, ex) =>
          op.aclnnFusedInferAttentionScoreV2GetWorkspaceSize(
            query, key, value, null, maskT, qLens, kvLens, null, null, null, null, null, antiScale, antiOffset, blockTable,
            null, null, null, null, null, null, null, null, null, a.nHeads, a.scaleValue, maxTokens, maxTokens, 'BSH',
            c.nKvHeads, a.S > 1 ? 3 : 0, a.S > 1 ? 0 : 1, c.blockSize, 0, false, 0, 0, attn, null, ws, ex,
          ),
        launch: op.aclnnFusedInferAttentionScoreV2,
      };
    });
  }

  /** The (2048, 2048) UINT8 mask rightDownCausal wants: 1 above the diagonal (masked), made once. */
  private mask(): Ptr {
    if (this.causalMask !== null) return this.causalMask;
    const m = new Uint8Array(CAUSAL_MASK_SIZE * CAUSAL_MASK_SIZE);
    for (let i = 0; i < CAUSAL_MASK_SIZE; i++) m.fill(1, i * CAUSAL_MASK_SIZE + i + 1, (i + 1) * CAUSAL_MASK_SIZE);
    const p = this.s.malloc(m.byteLength, 'causal attention mask');
    this.s.upload(p, m);
    this.causalMask = p;
    return p;
  }

  /** Validates the batch against q and the cache (checkAttentionBatch) plus FIA's rule: query rows are the context's last rows. */
  private checkBatch(b: AttentionBatch, T: number, c: AscendKvCache): void {
    checkAttentionBatch(b, T, c);
    const { numSeqs, queryStart, positions, contextLens } = b;
    for (let s = 0; s < numSeqs; s++) {
      const len = contextLens[s];
      const n = queryStart[s + 1] - queryStart[s];
      for (let r = queryStart[s]; r < queryStart[s + 1]; r++) {
        // FIA aligns query rows to the end of the context (rightDownCausal / incremental decode)
        const want = len - n + (r - queryStart[s]);
        if (positions[r] !== want) {
          throw new BackendError(
            'E_ARGUMENT',
            `pagedAttention: row ${r} (sequence ${s}) is at position ${positions[r]}; the ascend backend needs each sequence's rows to be the last ${n} positions of its context (${want} here)`,
          );
        }
      }
    }
  }

  argmax(out: Int32Array, logits: Tensor): void {
    const l = this.t(logits, 'argmax logits');
    const [rows, vocab] = l.shape;
    lengthIs(out, rows, 'argmax out');
    const dst = this.argmaxOut.ensure(rows * 4);
    const { op } = this.libs;
    this.s.run('aclnnArgMax', (sc) => {
      const x = sc.tensor(this.act(l, [rows, vocab]));
      const y = sc.tensor(this.flat(dst, ACL_DTYPE.i32, [rows]));
      return { plan: (ws, ex) => op.aclnnArgMaxGetWorkspaceSize(x, -1, false, y, ws, ex), launch: op.aclnnArgMax };
    });
    this.s.download(out, dst);
  }

  sample(out: Int32Array, logits: Tensor, params: SamplingParams, rng: Rng): void {
    const l = this.t(logits, 'sample logits');
    const [rows, vocab] = l.shape;
    lengthIs(out, rows, 'sample out');
    // Sampling runs on the host: one [rows, vocab] download per step, the same tokens as the host backend's.
    if (this.hostF32.length < rows * vocab) this.hostF32 = new Float32Array(rows * vocab);
    const host = this.download(l, this.hostF32.subarray(0, rows * vocab));
    for (let r = 0; r < rows; r++) out[r] = sampleRef(host.subarray(r * vocab, (r + 1) * vocab), params, rng);
  }

  readKvCache(cache: KvCacheLayer, which: 'k' | 'v'): Float32Array | Uint16Array | Int8Array {
    const c = this.w(cache, AscendKvCache, 'readKvCache');
    checkKvHalf(which);
    const n = c.slots * c.kvDim;
    const out = c.dtype === 'f32' ? new Float32Array(n) : c.dtype === 'f16' ? new Uint16Array(n) : new Int8Array(n);
    this.s.download(out, which === 'k' ? c.k : c.v);
    return out;
  }

  // --- HCCL ----------------------------------------------------------------------------------------------

  private checkHccl(status: number, fn: string): void {
    if (status === 0) return;
    const hcclText = this.libs.hccl().HcclGetErrorString(status) ?? undefined;
    const aclText = this.libs.acl.aclGetRecentErrMsg() ?? undefined;
    const runtimeMessage = [hcclText, aclText].filter(Boolean).join('; ') || undefined;
    throw new AscendError('E_HCCL_CALL', `${fn} failed with HcclResult ${status}: ${runtimeMessage ?? '(no message)'}`, { fn, status, runtimeMessage });
  }

  hcclRootInfo(): Uint8Array {
    this.check();
    this.s.activate();
    const info = new Uint8Array(HCCL_ROOT_INFO_BYTES);
    this.checkHccl(this.libs.hccl().HcclGetRootInfo(info), 'HcclGetRootInfo');
    return info;
  }

  initCommunicator(nRanks: number, rank: number, rootInfo: Uint8Array): void {
    this.check();
    positiveInt(nRanks, 'initCommunicator nRanks');
    if (!Number.isInteger(rank) || rank < 0 || rank >= nRanks) throw new BackendError('E_ARGUMENT', `initCommunicator: rank ${rank} outside 0..${nRanks - 1}`);
    lengthIs(rootInfo, HCCL_ROOT_INFO_BYTES, 'initCommunicator rootInfo');
    if (this.comm !== null) throw new BackendError('E_ARGUMENT', 'initCommunicator: this backend already has a communicator');
    this.s.activate();
    const out: [Ptr | null] = [null];
    this.checkHccl(this.libs.hccl().HcclCommInitRootInfo(nRanks, rootInfo, rank, out), 'HcclCommInitRootInfo');
    this.comm = out[0];
  }

  allReduceSum(x: Tensor): void {
    const t = this.t(x, 'allReduceSum');
    if (this.comm === null) throw new BackendError('E_ARGUMENT', 'allReduceSum: call initCommunicator first');
    this.s.activate();
    const p = t.ptr + BigInt(t.byteOffset);
    const count = t.shape[0] * t.shape[1];
    this.checkHccl(this.libs.hccl().HcclAllReduce(p, p, count, ACT[t.dtype].hccl, HCCL_REDUCE_SUM, this.comm, this.s.stream), 'HcclAllReduce');
    this.s.queued();
  }

  destroyCommunicator(): void {
    if (this.disposed || this.comm === null) return;
    const comm = this.comm;
    // Forgotten first: a failing destroy is reported once, and dispose does not try again on a dead handle.
    this.comm = null;
    try {
      this.s.sync();
    } finally {
      this.checkHccl(this.libs.hccl().HcclCommDestroy(comm), 'HcclCommDestroy');
    }
  }

  dispose(): void {
    if (this.disposed) return;
    let first: unknown;
    try {
      this.destroyCommunicator();
    } catch (e) {
      first = e;
    }
    for (const x of this.live) x.freed = true;
    this.live.clear();
    this.disposed = true;
    try {
      this.s.dispose();
    } catch (e) {
      first ??= e;
    }
    if (first) throw first;
  }
}

/**
 * The Ascend backend on device `deviceId`. Loads koffi and the CANN libraries here (never on import); throws
 * AscendError E_ASCEND_LIBRARY_NOT_FOUND listing every searched path when they are absent.
 * Memory: weights are copied to the device (int8 stays [n, k]; float weights and the embedding in `actDType`), the
 * KV cache is `2 · numBlocks · blockSize · kvDim · bytes(dtype)` of device memory, scratch buffers only grow.
 */
export function createAscendBackend(opts: AscendBackendOptions = {}): AscendBackend {
  const deviceId = opts.deviceId ?? 0;
  if (!Number.isInteger(deviceId) || deviceId < 0) throw new BackendError('E_ARGUMENT', `createAscendBackend: deviceId must be a non-negative integer, found ${deviceId}`);
  const actDType = opts.actDType ?? 'f16';
  if (!Object.hasOwn(ACT, actDType)) throw new BackendError('E_DTYPE', `createAscendBackend: unknown actDType ${actDType}`);
  const libs = loadAscendLibraries({ libDir: opts.libDir, env: opts.env });
  const session = new AclSession(libs, deviceId, opts.logger);
  opts.logger?.info?.(`ascend backend: device ${deviceId}, ${libs.paths.opapi}, activations ${actDType}`);
  if (actDType === 'f32') {
    opts.logger?.warn?.('ascend backend: f32 activations run on the stand-in only; Atlas A2 W8A16 matmul and attention take FLOAT16/BFLOAT16');
  }
  return new AscendBackendImpl(session, libs, actDType, opts.logger);
}
