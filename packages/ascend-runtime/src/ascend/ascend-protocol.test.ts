// The call protocol of the Ascend backend, checked through the C stand-in: library discovery, the two-phase aclnn
// workspace protocol, the layout and dtype of every descriptor, handle lifetimes, every error path, HCCL all-reduce.
import { mkdtempSync, mkdirSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import type { Backend, Tensor } from '../backend';
import { w8a16LinearRef } from '../ref';
import { gen, worstRatio } from '../test-data';
import { buildStandin, STANDIN_LIBRARY } from '../../test/standin/build';
import { isPlan, standinControl, type LoggedPlan, type LoggedTensor } from '../../test/standin/control';
import { createAscendBackend, type AscendBackend } from './backend';
import { ACL_DTYPE, BOUND_SYMBOLS, DEFAULT_TOOLKIT_PREFIX, loadAscendLibraries, type Ptr } from './bindings';
import { AscendError } from './errors';

const libDir = buildStandin();
const ctl = standinControl(libDir);

/** aclnn status codes the stand-in returns, as the CANN docs list them. */
const ACLNN_ERR_PARAM_INVALID = 161002;
const ACL_ERROR_RT_MEMORY_ALLOCATION = 207001;

function tensorOf(b: Backend, rows: number, cols: number, data: Float32Array): Tensor {
  const t = b.alloc(rows, cols, 'f32');
  b.upload(t, data);
  return t;
}

function plans(op: string): LoggedPlan[] {
  return ctl.log().filter((e): e is LoggedPlan => isPlan(e) && e.op === op);
}

function arg(p: LoggedPlan, name: string): LoggedTensor {
  const a = p.args[name];
  if (!a || typeof a !== 'object' || Array.isArray(a)) throw new Error(`${p.op}: no tensor argument ${name}`);
  return a;
}

/** A tiny W8A16 layer slice run through every op kind the forward pass uses (one prefill, one decode). */
function exercise(b: AscendBackend, dtype: 'f32' | 'f16', kvDtype: 'f16' | 'int8'): void {
  const g = gen(5);
  const [vocab, hidden, nH, nKv, hd, blockSize] = [32, 16, 2, 1, 8, 4];
  const kvDim = nKv * hd;
  const emb = b.createEmbedding({ vocab, hidden, dtype: 'f32', data: g.f32(vocab * hidden) });
  const norm = b.createNormWeight(g.f32(hidden));
  const wq = b.createW8A16Linear({ n: nH * hd, k: hidden, weight: g.i8(nH * hd * hidden), scale: g.f32(nH * hd, 0.01).map(Math.abs), offset: Float32Array.from({ length: nH * hd }, () => g.int(-5, 5)), bias: g.f32(nH * hd) });
  const wk = b.createW8A16Linear({ n: kvDim, k: hidden, weight: g.i8(kvDim * hidden), scale: g.f32(kvDim, 0.01).map(Math.abs), offset: new Float32Array(kvDim) });
  const head = b.createFloatLinear({ n: vocab, k: hidden, dtype: 'f32', data: g.f32(vocab * hidden) });
  const rope = b.createRope(hd, Float32Array.from({ length: hd / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / hd)));
  const quant = { kScale: new Float32Array(kvDim).fill(0.05), kOffset: new Float32Array(kvDim), vScale: new Float32Array(kvDim).fill(0.05), vOffset: new Float32Array(kvDim).fill(2) };
  const cache = b.createKvCache({ numBlocks: 4, blockSize, nKvHeads: nKv, headDim: hd, dtype: kvDtype, quant: kvDtype === 'int8' ? quant : undefined });
  const step = (ids: number[], start: number): void => {
    const T = ids.length;
    const x = b.alloc(T, hidden, dtype);
    b.embedding(x, emb, Int32Array.from(ids));
    const h = b.alloc(T, hidden, dtype);
    b.rmsNorm(h, x, norm, 1e-5);
    const q = b.alloc(T, nH * hd, dtype);
    const k = b.alloc(T, kvDim, dtype);
    b.linear(q, h, wq);
    b.linear(k, h, wk);
    const positions = Int32Array.from({ length: T }, (_, i) => start + i);
    b.rope(q, k, positions, rope);
    const slots = Int32Array.from(positions, (p) => [2, 0, 3, 1][Math.floor(p / blockSize)] * blockSize + (p % blockSize));
    b.kvWrite(cache, k, k, slots);
    const att = b.alloc(T, nH * hd, dtype);
    const blockTables = Int32Array.from([2, 0, 3, 1]);
    b.pagedAttention(att, q, cache, { numSeqs: 1, queryStart: Int32Array.from([0, T]), positions, contextLens: Int32Array.from([start + T]), blockTables, maxBlocksPerSeq: 4 });
    const logits = b.alloc(1, vocab, dtype);
    b.linear(logits, b.view(x, T - 1, 1), head);
    b.add(logits, logits, logits);
    b.argmax(new Int32Array(1), logits);
    for (const t of [x, h, q, k, att, logits]) b.free(t);
  };
  step([1, 5, 9, 3, 7, 2], 0);
  step([4], 6);
}

describe('ascend backend call protocol (stand-in)', () => {
  beforeEach(() => ctl.reset());

  it('binds every declared symbol from the four library names, and loads them once', () => {
    const libs = loadAscendLibraries({ libDir });
    expect(Object.keys(libs.acl)).toEqual(BOUND_SYMBOLS.ascendcl);
    expect(Object.keys(libs.nn)).toEqual(BOUND_SYMBOLS.nnopbase);
    expect(Object.keys(libs.op)).toEqual(BOUND_SYMBOLS.opapi);
    expect(Object.keys(libs.hccl())).toEqual(BOUND_SYMBOLS.hccl);
    expect(loadAscendLibraries({ libDir })).toBe(libs);
    expect(libs.paths.opapi).toBe(path.join(libDir, 'libopapi.so'));
  });

  describe('library discovery', () => {
    it('without any variable, lists every default path searched and the variables that override them', () => {
      let err: unknown;
      try {
        createAscendBackend({ env: {} });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(AscendError);
      const e = err as AscendError;
      expect(e.code).toBe('E_ASCEND_LIBRARY_NOT_FOUND');
      expect(e.searched).toEqual([
        path.join(DEFAULT_TOOLKIT_PREFIX, 'lib64', 'libascendcl.so'),
        path.join(DEFAULT_TOOLKIT_PREFIX, `${process.arch === 'arm64' ? 'aarch64' : 'x86_64'}-linux`, 'lib64', 'libascendcl.so'),
      ]);
      for (const p of e.searched ?? []) expect(e.message).toContain(p);
      for (const v of ['W8A16_ASCEND_LIB_DIR', 'ASCEND_TOOLKIT_HOME', 'ASCEND_HOME_PATH', 'ATB_HOME_PATH', 'libDir']) expect(e.message).toContain(v);
    });

    it('searches the variables in order: W8A16_ASCEND_LIB_DIR, ASCEND_TOOLKIT_HOME/lib64, ASCEND_HOME_PATH/lib64, ATB_HOME_PATH/lib, then the prefix', () => {
      const env = { W8A16_ASCEND_LIB_DIR: '/nowhere/a', ASCEND_TOOLKIT_HOME: '/nowhere/b', ASCEND_HOME_PATH: '/nowhere/c', ATB_HOME_PATH: '/nowhere/d' };
      expect(() => createAscendBackend({ env })).toThrow(
        expect.objectContaining({
          code: 'E_ASCEND_LIBRARY_NOT_FOUND',
          searched: expect.arrayContaining([
            '/nowhere/a/libascendcl.so',
            '/nowhere/b/lib64/libascendcl.so',
            '/nowhere/c/lib64/libascendcl.so',
            '/nowhere/d/lib/libascendcl.so',
          ]),
        }),
      );
      try {
        createAscendBackend({ env });
      } catch (e) {
        const s = (e as AscendError).searched ?? [];
        expect(s.slice(0, 4)).toEqual(['/nowhere/a/libascendcl.so', '/nowhere/b/lib64/libascendcl.so', '/nowhere/c/lib64/libascendcl.so', '/nowhere/d/lib/libascendcl.so']);
        expect(s.length).toBe(6);
      }
    });

    it('an explicit libDir is the only place searched, and a missing second library is named', () => {
      const empty = mkdtempSync(path.join(tmpdir(), 'ascend-empty-'));
      expect(() => createAscendBackend({ libDir: empty })).toThrow(expect.objectContaining({ code: 'E_ASCEND_LIBRARY_NOT_FOUND', searched: [path.join(empty, 'libascendcl.so')] }));
      const partial = mkdtempSync(path.join(tmpdir(), 'ascend-partial-'));
      symlinkSync(path.join(libDir, STANDIN_LIBRARY), path.join(partial, 'libascendcl.so'));
      expect(() => createAscendBackend({ libDir: partial })).toThrow(expect.objectContaining({ code: 'E_ASCEND_LIBRARY_NOT_FOUND', message: expect.stringContaining('libnnopbase.so') }));
    });

    it('finds the libraries under ASCEND_TOOLKIT_HOME/lib64', () => {
      const home = mkdtempSync(path.join(tmpdir(), 'ascend-toolkit-'));
      mkdirSync(path.join(home, 'lib64'));
      for (const n of ['libascendcl.so', 'libnnopbase.so', 'libopapi.so', 'libhccl.so']) symlinkSync(path.join(libDir, STANDIN_LIBRARY), path.join(home, 'lib64', n));
      const b = createAscendBackend({ env: { ASCEND_TOOLKIT_HOME: home }, actDType: 'f32' });
      expect(b.libraryPaths.ascendcl).toBe(path.join(home, 'lib64', 'libascendcl.so'));
      const t = tensorOf(b, 1, 3, Float32Array.from([1, 2, 3]));
      expect(Array.from(b.download(t))).toEqual([1, 2, 3]);
      b.dispose();
    });
  });

  it('runs GetWorkspaceSize, then launches with exactly that workspace (non-null when non-zero), every time', () => {
    const b = createAscendBackend({ libDir, actDType: 'f32' });
    exercise(b, 'f32', 'int8');
    const log = ctl.log();
    let launches = 0;
    for (let i = 0; i < log.length; i++) {
      const e = log[i];
      if (!isPlan(e)) continue;
      expect(e.status).toBe(0);
      const next = log[i + 1];
      expect(next).toEqual({ launch: e.op, workspaceSize: e.workspace, workspaceNull: e.workspace === 0 });
      launches++;
    }
    const ops = new Set(log.filter(isPlan).map((p) => p.op));
    for (const op of ['aclnnEmbedding', 'aclnnRmsNorm', 'aclnnWeightQuantBatchMatmulV2', 'aclnnApplyRotaryPosEmb', 'aclnnQuantize', 'aclnnScatterPaKvCache', 'aclnnFusedInferAttentionScoreV2', 'aclnnMatmul', 'aclnnAdd', 'aclnnArgMax']) {
      expect(ops.has(op)).toBe(true);
    }
    expect(launches).toBeGreaterThan(20);
    b.dispose();
  });

  it('the stand-in refuses a workspace smaller than planned, and a second launch of a consumed executor', () => {
    const b = createAscendBackend({ libDir, actDType: 'f32' }); // initializes AscendCL and the device
    const { acl, nn, op } = loadAscendLibraries({ libDir });
    const mem: [Ptr | null] = [null];
    expect(acl.aclrtMalloc(mem, 4 * 3 * 5 + 4 * 3 + 4096, 0)).toBe(0);
    const base = mem[0] as Ptr;
    const stream: [Ptr | null] = [null];
    expect(acl.aclrtCreateStream(stream)).toBe(0);
    const x = nn.aclCreateTensor([3, 5], 2, ACL_DTYPE.f32, [5, 1], 0, 2, [15], 1, base) as Ptr;
    const y = nn.aclCreateTensor([3], 1, ACL_DTYPE.i32, [1], 0, 2, [3], 1, base + 60n) as Ptr;
    const ws: [number] = [0];
    const ex: [Ptr | null] = [null];
    expect(op.aclnnArgMaxGetWorkspaceSize(x, -1, false, y, ws, ex)).toBe(0);
    expect(ws[0]).toBeGreaterThan(0);
    const wsPtr = base + 72n;
    expect(op.aclnnArgMax(wsPtr, ws[0] - 1, ex[0] as Ptr, stream[0] as Ptr)).toBe(ACLNN_ERR_PARAM_INVALID);
    expect(acl.aclGetRecentErrMsg()).toContain(`workspace of ${ws[0] - 1} bytes given, ${ws[0]} required`);
    expect(op.aclnnArgMax(wsPtr, ws[0], ex[0] as Ptr, stream[0] as Ptr)).toBe(0);
    expect(op.aclnnArgMax(wsPtr, ws[0], ex[0] as Ptr, stream[0] as Ptr)).not.toBe(0);
    expect(acl.aclGetRecentErrMsg()).toContain('not a live aclOpExecutor');
    expect(acl.aclrtSynchronizeStream(stream[0] as Ptr)).toBe(0);
    expect(nn.aclDestroyTensor(x)).toBe(0);
    expect(nn.aclDestroyTensor(y)).toBe(0);
    expect(acl.aclrtDestroyStream(stream[0] as Ptr)).toBe(0);
    expect(acl.aclrtFree(base)).toBe(0);
    b.dispose();
  });

  it('describes every tensor with the layout and dtype the aclnn docs ask for (f32 activations, int8 KV)', () => {
    const b = createAscendBackend({ libDir, actDType: 'f32' });
    exercise(b, 'f32', 'int8');
    const [hidden, nH, hd, vocab, kvDim] = [16, 2, 8, 32, 8];
    const n = nH * hd;
    // W8A16: x (T, k) contiguous, weight the transposed view of the int8 (n, k) buffer, per-channel params in x's dtype
    const wq = plans('aclnnWeightQuantBatchMatmulV2').find((p) => arg(p, 'weight').dims[1] === n) as LoggedPlan;
    expect(arg(wq, 'weight')).toEqual({ dtype: ACL_DTYPE.i8, format: 2, dims: [hidden, n], strides: [1, hidden], offset: 0, storage: [n, hidden] });
    expect(arg(wq, 'x')).toMatchObject({ dtype: ACL_DTYPE.f32, dims: [6, hidden], strides: [hidden, 1] });
    expect(arg(wq, 'antiquantScale')).toMatchObject({ dtype: ACL_DTYPE.f32, dims: [n], strides: [1] });
    expect(arg(wq, 'antiquantOffset')).toMatchObject({ dtype: ACL_DTYPE.f32, dims: [n] });
    expect(arg(wq, 'bias')).toMatchObject({ dtype: ACL_DTYPE.f32, dims: [n] });
    expect(wq.args.antiquantGroupSize).toBe(0);
    expect(wq.a2Unsupported).toContain('FLOAT');
    // lm_head on a row view of x: offset (T-1)·hidden inside the [6, hidden] storage
    const mm = plans('aclnnMatmul')[0];
    expect(arg(mm, 'self')).toEqual({ dtype: ACL_DTYPE.f32, format: 2, dims: [1, hidden], strides: [hidden, 1], offset: 5 * hidden, storage: [6 * hidden] });
    expect(arg(mm, 'mat2')).toMatchObject({ dims: [hidden, vocab], strides: [1, hidden], storage: [vocab, hidden] });
    expect(mm.args.cubeMathType).toBe(0);
    // RmsNorm: gamma (H) and a FLOAT (T, 1) rstd
    const rn = plans('aclnnRmsNorm')[0];
    expect(arg(rn, 'gamma')).toMatchObject({ dtype: ACL_DTYPE.f32, dims: [hidden] });
    expect(arg(rn, 'rstdOut')).toMatchObject({ dtype: ACL_DTYPE.f32, dims: [6, 1] });
    // RoPE: BSND views (T, 1, heads, hd) and (T, 1, 1, hd) cos/sin
    const rp = plans('aclnnApplyRotaryPosEmb')[0];
    expect(arg(rp, 'queryRef')).toMatchObject({ dims: [6, 1, nH, hd], strides: [n, n, hd, 1] });
    expect(arg(rp, 'cos')).toMatchObject({ dims: [6, 1, 1, hd] });
    expect(rp.args.layout).toBe(1);
    // KV write: per-channel quantize to INT8 with INT32 zero points, then scatter into the (blocks, blockSize, N, D) cache
    const qz = plans('aclnnQuantize')[0];
    expect(arg(qz, 'scales')).toMatchObject({ dtype: ACL_DTYPE.f32, dims: [kvDim] });
    expect(arg(qz, 'zeroPoints')).toMatchObject({ dtype: ACL_DTYPE.i32, dims: [kvDim] });
    expect(arg(qz, 'out')).toMatchObject({ dtype: ACL_DTYPE.i8 });
    const sc = plans('aclnnScatterPaKvCache')[0];
    expect(arg(sc, 'key')).toMatchObject({ dtype: ACL_DTYPE.i8, dims: [6, 1, hd] });
    expect(arg(sc, 'keyCacheRef')).toMatchObject({ dtype: ACL_DTYPE.i8, dims: [4, 4, 1, hd] });
    expect(arg(sc, 'slotMapping')).toMatchObject({ dtype: ACL_DTYPE.i32, dims: [6] });
    expect(sc.args.cacheMode).toBe('Norm');
    // attention: prefill = one BSH call per sequence with rightDownCausal + 2048² mask; decode = Q_S 1, no mask
    const [prefill, decode] = plans('aclnnFusedInferAttentionScoreV2');
    expect(arg(prefill, 'query')).toMatchObject({ dims: [1, 6, n] });
    expect(arg(prefill, 'key')).toMatchObject({ dtype: ACL_DTYPE.i8, dims: [4, 4, kvDim] });
    expect(arg(prefill, 'blockTable')).toMatchObject({ dtype: ACL_DTYPE.i32, dims: [1, 4] });
    expect(arg(prefill, 'attenMask')).toMatchObject({ dtype: ACL_DTYPE.u8, dims: [2048, 2048] });
    expect(arg(prefill, 'antiquantScale')).toMatchObject({ dtype: ACL_DTYPE.f32, dims: [2, kvDim] });
    expect(arg(prefill, 'antiquantOffset')).toMatchObject({ dtype: ACL_DTYPE.f32, dims: [2, kvDim] });
    expect(prefill.args).toMatchObject({ inputLayout: 'BSH', sparseMode: 3, numHeads: nH, numKeyValueHeads: 1, blockSize: 4, actualSeqLengths: [6], actualSeqLengthsKv: [6] });
    expect(decode.args).toMatchObject({ sparseMode: 0, actualSeqLengths: [], actualSeqLengthsKv: [7] });
    expect(decode.args.attenMask).toBeNull();
    expect(arg(decode, 'query')).toMatchObject({ dims: [1, 1, n] });
    const am = plans('aclnnArgMax')[0];
    expect(arg(am, 'out')).toMatchObject({ dtype: ACL_DTYPE.i32, dims: [1] });
    b.dispose();
  });

  it('with f16 activations every activation, scale and bias descriptor is FLOAT16 and the real-A2 dtype rules hold', () => {
    const b = createAscendBackend({ libDir }); // default actDType f16
    exercise(b, 'f16', 'f16');
    const all = ctl.log().filter(isPlan);
    expect(all.filter((p) => p.a2Unsupported)).toEqual([]);
    const wq = plans('aclnnWeightQuantBatchMatmulV2')[0];
    for (const a of ['x', 'antiquantScale', 'antiquantOffset', 'bias', 'y']) expect(arg(wq, a).dtype).toBe(ACL_DTYPE.f16);
    const fia = plans('aclnnFusedInferAttentionScoreV2')[0];
    expect(arg(fia, 'query').dtype).toBe(ACL_DTYPE.f16);
    expect(arg(fia, 'key').dtype).toBe(ACL_DTYPE.f16);
    expect(plans('aclnnScatterPaKvCache')[0].args.key).toMatchObject({ dtype: ACL_DTYPE.f16 });
    b.dispose();
  });

  it('W8A16 with f16 activations stays within f16 rounding of w8a16LinearRef', () => {
    const g = gen(41);
    const [n, k, T] = [24, 96, 3];
    const q = g.i8(n * k);
    const scale = Float32Array.from({ length: n }, () => g.uniform(1e-3, 2e-2));
    const offset = Float32Array.from({ length: n }, () => g.int(-128, 127));
    const x = g.f32(T * k);
    const b = createAscendBackend({ libDir });
    const w = b.createW8A16Linear({ n, k, weight: q, scale, offset });
    const xt = b.alloc(T, k);
    b.upload(xt, x);
    const y = b.alloc(T, n);
    b.linear(y, xt, w);
    const ref = new Float32Array(T * n);
    w8a16LinearRef(ref, x, T, q, scale, offset, n, k);
    // f16 carries 11 significant bits: inputs, scales and the output each round by ≤ 2^-11 relative
    const sumAbs = new Float64Array(T * n);
    for (let t = 0; t < T; t++) for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) sumAbs[t * n + i] += Math.abs(x[t * k + j] * (q[i * k + j] - offset[i]) * scale[i]);
    expect(worstRatio(b.download(y), ref, (i) => 3 * 2 ** -11 * sumAbs[i] + 1e-6)).toBeLessThanOrEqual(1);
    b.dispose();
  });

  it('releases every descriptor, executor and device buffer: after ops, after failures, after dispose', () => {
    const before = ctl.stats();
    const b = createAscendBackend({ libDir, actDType: 'f32' });
    exercise(b, 'f32', 'int8');
    b.synchronize();
    const mid = ctl.stats();
    expect(mid).toMatchObject({ liveTensors: 0, liveTensorLists: 0, liveIntArrays: 0, liveScalars: 0, liveExecutors: 0, queued: 0 });
    expect(mid.bytesInUse).toBe(before.bytesInUse + b.deviceBytes);
    ctl.failNext('aclnnRmsNormGetWorkspaceSize', ACLNN_ERR_PARAM_INVALID);
    const t = tensorOf(b, 2, 4, new Float32Array(8));
    expect(() => b.rmsNorm(t, t, b.createNormWeight(new Float32Array(4).fill(1)), 1e-5)).toThrow(AscendError);
    expect(ctl.stats()).toMatchObject({ liveTensors: 0, liveExecutors: 0 });
    b.dispose();
    expect(ctl.stats()).toMatchObject({ bytesInUse: before.bytesInUse, liveTensors: 0, queued: 0 });
  });

  it('reuses its scratch: a repeated decode step allocates no device memory', () => {
    const b = createAscendBackend({ libDir, actDType: 'f32' });
    const g = gen(3);
    const [hidden, kvDim] = [16, 8];
    const w = b.createW8A16Linear({ n: hidden, k: hidden, weight: g.i8(hidden * hidden), scale: new Float32Array(hidden).fill(0.01), offset: new Float32Array(hidden), bias: g.f32(hidden) });
    const norm = b.createNormWeight(g.f32(hidden));
    const cache = b.createKvCache({ numBlocks: 2, blockSize: 4, nKvHeads: 1, headDim: kvDim, dtype: 'f32' });
    const x = tensorOf(b, 1, hidden, g.f32(hidden));
    const y = b.alloc(1, hidden, 'f32');
    const kv = tensorOf(b, 1, kvDim, g.f32(kvDim));
    const run = (p: number): void => {
      b.rmsNorm(y, x, norm, 1e-5);
      b.rmsNorm(y, y, norm, 1e-5);
      b.linear(x, y, w);
      b.siluMul(y, y, x);
      b.kvWrite(cache, kv, kv, Int32Array.from([p]));
      b.argmax(new Int32Array(1), y);
    };
    run(0);
    run(1);
    const warm = ctl.stats().mallocs;
    for (let p = 2; p < 6; p++) run(p);
    expect(ctl.stats().mallocs).toBe(warm);
    b.dispose();
  });

  describe('error paths', () => {
    it('a failing GetWorkspaceSize: AscendError E_ACL_CALL with the function, its status and the runtime message', () => {
      const b = createAscendBackend({ libDir, actDType: 'f32' });
      const g = gen(8);
      const w = b.createW8A16Linear({ n: 4, k: 8, weight: g.i8(32), scale: new Float32Array(4).fill(0.1), offset: new Float32Array(4) });
      const x = tensorOf(b, 2, 8, g.f32(16));
      const y = b.alloc(2, 4, 'f32');
      ctl.failNext('aclnnWeightQuantBatchMatmulV2GetWorkspaceSize', ACLNN_ERR_PARAM_INVALID);
      expect(() => b.linear(y, x, w)).toThrow(
        expect.objectContaining({
          name: 'AscendError',
          code: 'E_ACL_CALL',
          fn: 'aclnnWeightQuantBatchMatmulV2GetWorkspaceSize',
          status: ACLNN_ERR_PARAM_INVALID,
          runtimeMessage: expect.stringContaining('injected failure of aclnnWeightQuantBatchMatmulV2GetWorkspaceSize'),
          message: expect.stringContaining('status 161002'),
        }),
      );
      b.linear(y, x, w); // the backend stays usable
      expect(b.download(y).every(Number.isFinite)).toBe(true);
      b.dispose();
    });

    it('a failing launch, descriptor constructor, memcpy or synchronize each surface as E_ACL_CALL', () => {
      const b = createAscendBackend({ libDir, actDType: 'f32' });
      const a = tensorOf(b, 2, 3, Float32Array.from([1, 2, 3, 4, 5, 6]));
      ctl.failNext('aclnnAdd', 361001);
      expect(() => b.add(a, a, a)).toThrow(expect.objectContaining({ code: 'E_ACL_CALL', fn: 'aclnnAdd', status: 361001 }));
      ctl.failNext('aclCreateTensor', 1);
      expect(() => b.add(a, a, a)).toThrow(expect.objectContaining({ code: 'E_ACL_CALL', fn: 'aclCreateTensor', status: -1, runtimeMessage: expect.stringContaining('aclCreateTensor') }));
      b.add(a, a, a);
      ctl.failNext('aclrtSynchronizeStream', 507015);
      expect(() => b.download(a)).toThrow(expect.objectContaining({ code: 'E_ACL_CALL', fn: 'aclrtSynchronizeStream', status: 507015 }));
      ctl.failNext('aclrtMemcpy', 100000);
      expect(() => b.download(a)).toThrow(expect.objectContaining({ code: 'E_ACL_CALL', fn: 'aclrtMemcpy', message: expect.stringContaining('device to host') }));
      expect(Array.from(b.download(a))).toEqual([2, 4, 6, 8, 10, 12]);
      expect(ctl.stats()).toMatchObject({ liveTensors: 0, liveScalars: 0, liveExecutors: 0 });
      b.dispose();
    });

    it('device out of memory: E_DEVICE_OUT_OF_MEMORY naming the request, and the backend recovers when memory frees', () => {
      const b = createAscendBackend({ libDir, actDType: 'f32' });
      const small = b.alloc(4, 4, 'f32');
      ctl.setMemLimit(ctl.stats().bytesInUse + 1000);
      expect(() => b.alloc(64, 64, 'f32')).toThrow(
        expect.objectContaining({
          code: 'E_DEVICE_OUT_OF_MEMORY',
          fn: 'aclrtMalloc',
          status: ACL_ERROR_RT_MEMORY_ALLOCATION,
          message: expect.stringMatching(/16384 bytes for activation \[64, 64\] f32.*out of device memory/),
        }),
      );
      expect(() => b.createKvCache({ numBlocks: 8, blockSize: 16, nKvHeads: 2, headDim: 8, dtype: 'int8', quant: { kScale: new Float32Array(16).fill(1), kOffset: new Float32Array(16), vScale: new Float32Array(16).fill(1), vOffset: new Float32Array(16) } })).toThrow(
        expect.objectContaining({ code: 'E_DEVICE_OUT_OF_MEMORY' }),
      );
      ctl.setMemLimit(0);
      const big = b.alloc(64, 64, 'f32');
      b.free(big);
      b.free(small);
      b.dispose();
    });

    it('a W8A16 layer wider than the op allows fails in GetWorkspaceSize with the runtime reason', () => {
      const b = createAscendBackend({ libDir, actDType: 'f32' });
      const n = 65536;
      const w = b.createW8A16Linear({ n, k: 2, weight: new Int8Array(2 * n), scale: new Float32Array(n).fill(1), offset: new Float32Array(n) });
      expect(() => b.linear(b.alloc(1, n, 'f32'), tensorOf(b, 1, 2, Float32Array.from([1, 2])), w)).toThrow(
        expect.objectContaining({ code: 'E_ACL_CALL', runtimeMessage: expect.stringContaining('[1, 65535]') }),
      );
      b.dispose();
    });

    it('query rows that are not the tail of their context are refused before any call (FIA aligns rows right)', () => {
      const b = createAscendBackend({ libDir, actDType: 'f32' });
      const cache = b.createKvCache({ numBlocks: 2, blockSize: 4, nKvHeads: 1, headDim: 4, dtype: 'f32' });
      const q = tensorOf(b, 2, 4, new Float32Array(8));
      const batch = { numSeqs: 1, queryStart: Int32Array.from([0, 2]), positions: Int32Array.from([0, 1]), contextLens: Int32Array.from([3]), blockTables: Int32Array.from([0, 1]), maxBlocksPerSeq: 2 };
      expect(() => b.pagedAttention(b.alloc(2, 4, 'f32'), q, cache, batch)).toThrow(expect.objectContaining({ code: 'E_ARGUMENT', message: expect.stringContaining('last 2 positions') }));
      b.dispose();
    });
  });

  describe('HCCL', () => {
    it('two ranks (devices 0 and 1) all-reduce a tensor in place to the sum', () => {
      const r0 = createAscendBackend({ libDir, deviceId: 0, actDType: 'f32' });
      const r1 = createAscendBackend({ libDir, deviceId: 1, actDType: 'f32' });
      const root = r0.hcclRootInfo();
      r0.initCommunicator(2, 0, root);
      r1.initCommunicator(2, 1, root);
      const a = tensorOf(r0, 2, 3, Float32Array.from([1, 2, 3, 4, 5, 6]));
      const big = tensorOf(r1, 3, 3, Float32Array.from([9, 9, 9, 10, 20, 30, 40, 50, 60]));
      r0.allReduceSum(a);
      r1.allReduceSum(r1.view(big, 1, 2));
      // The stand-in completes a collective when the last rank's stream runs it, so ranks synchronize in lockstep
      // before reading (a real HCCL all-reduce blocks inside each rank's stream instead).
      r0.synchronize();
      r1.synchronize();
      expect(Array.from(r0.download(a))).toEqual([11, 22, 33, 44, 55, 66]);
      expect(Array.from(r1.download(big))).toEqual([9, 9, 9, 11, 22, 33, 44, 55, 66]);
      r0.dispose();
      r1.dispose();
    });

    it('all-reduce before a communicator is E_ARGUMENT; a failing HCCL call is E_HCCL_CALL with its text', () => {
      const b = createAscendBackend({ libDir, actDType: 'f32' });
      const t = tensorOf(b, 1, 2, Float32Array.from([1, 2]));
      expect(() => b.allReduceSum(t)).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
      ctl.failNext('HcclGetRootInfo', 2);
      expect(() => b.hcclRootInfo()).toThrow(expect.objectContaining({ code: 'E_HCCL_CALL', fn: 'HcclGetRootInfo', status: 2, runtimeMessage: expect.stringContaining('HCCL_E_PTR') }));
      b.initCommunicator(1, 0, b.hcclRootInfo());
      ctl.failNext('HcclAllReduce', 1);
      expect(() => b.allReduceSum(t)).toThrow(expect.objectContaining({ code: 'E_HCCL_CALL', fn: 'HcclAllReduce' }));
      b.allReduceSum(t); // one rank: the sum is the tensor itself
      expect(Array.from(b.download(t))).toEqual([1, 2]);
      b.dispose();
    });
  });
});
