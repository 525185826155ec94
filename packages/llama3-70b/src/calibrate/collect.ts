// Calibration for m3 and C8: runs the FLOAT source checkpoint layer by layer through a Backend (one decoder
// layer's weights resident at a time, every sample's hidden states [tokens, hidden] kept between layers) and
// collects only what the recipe needs: the two norm outputs of the first sample per layer, handed at once to
// the m3 search (row chunks on the unit executor), and per-channel min/max of every k_proj / v_proj output
// over all samples and tokens (K pre-RoPE as msModelSlim, or post-RoPE on request; V has no RoPE). The backend's
// activations set the dtype of its linears' outputs (f32 on the host, f16 on the NPU); norms, residual adds and the
// statistics stay f32 on the host. Not the conversion (convert/) nor the m3 math (@w8a16/anti-outlier).

import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { ActDType, Backend, FloatWeightDType, KvCacheDType, KvCacheLayer, LinearWeight, RopeTable, Tensor } from '@w8a16/ascend-runtime';
import type { Checkpoint, LlamaConfig } from '@w8a16/format';
import { createMinMax, kvScalesFromMinMax, updateMinMax, type KvQuantScales } from '@w8a16/kvcache-int8';
import { decodeFloats, DTYPE_TRAITS, isFloatDType, type ComputeDType, type FloatDType, type QuantScheme } from '@w8a16/quant-core';
import { CliError } from '../cli/errors';
import { firstNonFinite, type M3SearchUnit, type UnitResult } from '../convert/units';
import { ropeInvFreq } from '../model/load';
import type { CalibSample } from './calib-data';
import { chooseM3, m3SearchUnits, type M3Choice, type M3Group } from './m3';
import { rmsNormTorchF32 } from './torch-norm';

/** Tokens per block of the temporary KV cache (any size works: one sequence, causal, batch 1). */
const CALIB_BLOCK_SIZE = 128;

const FLOAT_DTYPES: Record<string, FloatWeightDType> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

/**
 * The temporary KV cache holds K and V in the activation dtype: attention reads them beside queries of that dtype,
 * and the NPU's attention takes FLOAT16/BFLOAT16/INT8 KV only (an f32 cache under f16 queries is rejected on
 * Atlas A2). The Backend has no bf16 cache dtype, so bf16 activations cannot calibrate.
 */
const KV_CACHE_FOR_ACTIVATIONS: Record<ActDType, KvCacheDType | undefined> = { f32: 'f32', f16: 'f16', bf16: undefined };

export interface CalibrationOptions {
  /** m3 search settings (msModelSlim: the later quantizer's symmetry; compute dtype of the quantizer). */
  readonly m3?: { readonly scheme: QuantScheme; readonly compute: ComputeDType; readonly unitBytes?: number };
  /** C8: per-channel k/v min/max, turned into scales symmetric (msModelSlim's default) or not. */
  readonly kv?: KvCalibrationOptions;
  /** Where the float forward runs. */
  readonly backend: Backend;
  /** Runs one m3 search chunk: a worker pool's `run`, or a UnitRunner inline. */
  readonly runUnit: (u: M3SearchUnit) => Promise<UnitResult>;
  readonly onLayer?: (p: CalibrationProgress) => void;
  readonly signal?: AbortSignal;
}

export interface KvCalibrationOptions {
  readonly sym: boolean;
  /**
   * Take the K statistics after RoPE (positions 0..T-1 of each sample, as the runtime rotates K before it writes
   * the int8 cache) instead of from the k_proj output as msModelSlim does (spec §3.2, §3.4). V is the same either way.
   */
  readonly postRope?: boolean;
}

export interface CalibrationProgress {
  /** Layers whose forward pass is done (the m3 searches may still be running). */
  readonly layersDone: number;
  readonly layers: number;
}

export interface KvLayerStats extends KvQuantScales {
  /** `[nKvHeads·headDim]` observed over every sample and token. */
  readonly min: Float32Array;
  readonly max: Float32Array;
}

export interface LayerCalibration {
  readonly layer: number;
  readonly qkv?: M3Choice;
  readonly gateup?: M3Choice;
  readonly k?: KvLayerStats;
  readonly v?: KvLayerStats;
}

export interface CalibrationResult {
  readonly layers: LayerCalibration[];
  /** Where the forward pass ran: the backend's name (`host`, `ascend`) and its activation dtype. */
  readonly backend: string;
  readonly activations: ActDType;
  readonly samples: number;
  /** Tokens pushed through the model (only the first sample when m3 alone is asked for). */
  readonly tokens: number;
  /** Wall time of the forward passes alone, and of everything (forward + waiting for the m3 searches). */
  readonly forwardSeconds: number;
  readonly seconds: number;
}

/** A calibration in progress: each layer's result as soon as it is known, and the whole. */
export interface CalibrationRun {
  layer(l: number): Promise<LayerCalibration>;
  readonly done: Promise<CalibrationResult>;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // A layer nobody asks for must not become an unhandled rejection; `done` carries the error.
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

/** Starts calibrating; the forward pass runs on this thread between awaits, the m3 chunks wherever runUnit sends them. */
export function startCalibration(ckpt: Checkpoint, config: LlamaConfig, samples: readonly CalibSample[], opts: CalibrationOptions): CalibrationRun {
  if (samples.length === 0) throw new CliError('E_CALIB_FILE', 'calibration needs at least one sample');
  if (!opts.m3 && !opts.kv) throw new CliError('E_INTERNAL', 'calibration asked for neither m3 nor kv statistics');
  const layers = Array.from({ length: config.nLayers }, () => deferred<LayerCalibration>());
  const done = runCalibration(ckpt, config, samples, opts, layers);
  done.catch((e) => layers.forEach((d) => d.reject(e)));
  return {
    layer: (l) => {
      if (!Number.isInteger(l) || l < 0 || l >= layers.length) throw new CliError('E_INTERNAL', `calibration has no layer ${l}`);
      return layers[l].promise;
    },
    done,
  };
}

/** startCalibration(...).done: the whole result at once. */
export function collectCalibration(ckpt: Checkpoint, config: LlamaConfig, samples: readonly CalibSample[], opts: CalibrationOptions): Promise<CalibrationResult> {
  return startCalibration(ckpt, config, samples, opts).done;
}

interface LayerWeightsF {
  inNorm: Float32Array;
  postNorm: Float32Array;
  q: LinearWeight;
  k: LinearWeight;
  v: LinearWeight;
  o: LinearWeight;
  gate: LinearWeight;
  up: LinearWeight;
  down: LinearWeight;
}

async function runCalibration(
  ckpt: Checkpoint,
  config: LlamaConfig,
  allSamples: readonly CalibSample[],
  opts: CalibrationOptions,
  deferreds: Deferred<LayerCalibration>[],
): Promise<CalibrationResult> {
  const started = performance.now();
  const be = opts.backend;
  const c = config;
  const H = c.hiddenSize;
  const qDim = c.nHeads * c.headDim;
  const kvDim = c.nKvHeads * c.headDim;
  // Only C8 needs every sample; m3 looks at the first one only (spec §2.3).
  const samples = opts.kv ? allSamples : allSamples.slice(0, 1);
  const maxT = Math.max(...samples.map((s) => s.ids.length));
  const tokens = samples.reduce((n, s) => n + s.ids.length, 0);

  // hidden states of every sample, kept across layers: (T_s, hidden) each
  const hidden = samples.map((s) => embedRows(ckpt, s.ids, H));

  // run state, sized for the longest sample, in the backend's activation dtype; views of T rows per sample
  const alloc = (cols: number) => be.alloc(maxT, cols);
  const base = { xb: alloc(H), q: alloc(qDim), k: alloc(kvDim), v: alloc(kvDim), att: alloc(qDim), out: alloc(H), hb: alloc(c.intermediateSize), hb2: alloc(c.intermediateSize) };
  const normHost = new Float32Array(maxT * H); // (T, hidden) a norm output on the host
  const outHost = new Float32Array(maxT * H); // (T, hidden) o_proj / down_proj output on the host
  const kvHost = new Float32Array(maxT * kvDim); // (T, kvDim) k (before or after RoPE) or v
  const kPostRope = opts.kv?.postRope === true;
  const scratch = new Float32Array(H);
  const numBlocks = Math.ceil(maxT / CALIB_BLOCK_SIZE);
  const activations = base.k.dtype;
  let cache: KvCacheLayer | undefined;
  let rope: RopeTable | undefined;
  const positions = Int32Array.from({ length: maxT }, (_, i) => i);
  const blockTables = Int32Array.from({ length: numBlocks }, (_, i) => i);

  const pending: Promise<void>[] = [];
  let forwardMs = 0;
  try {
    const cacheDType = KV_CACHE_FOR_ACTIVATIONS[activations];
    if (!cacheDType) {
      throw new CliError('E_UNSUPPORTED', `calibration on the ${be.info.name} backend: ${activations} activations have no matching KV cache dtype (f32 or f16 activations only)`);
    }
    cache = be.createKvCache({ numBlocks, blockSize: CALIB_BLOCK_SIZE, nKvHeads: c.nKvHeads, headDim: c.headDim, dtype: cacheDType });
    rope = be.createRope(c.headDim, ropeInvFreq(c));
    const kvCache = cache;
    const ropeTable = rope;
    for (let l = 0; l < c.nLayers; l++) {
      const layerStart = performance.now();
      const p = `model.layers.${l}`;
      const last = l === c.nLayers - 1;
      const W = loadLayer(be, ckpt, c, p);
      const kStats = opts.kv ? createMinMax(kvDim) : undefined;
      const vStats = opts.kv ? createMinMax(kvDim) : undefined;
      const searches: Partial<Record<'qkv' | 'gateup', Promise<M3Choice>>> = {};
      try {
        for (let si = 0; si < samples.length; si++) {
          if (opts.signal?.aborted) throw new CliError('E_INTERRUPTED', 'calibration interrupted');
          const T = samples[si].ids.length;
          const h = hidden[si];
          const view = (t: Tensor) => be.view(t, 0, T);
          const [xb, q, k, v, att, out, hb, hb2] = [base.xb, base.q, base.k, base.v, base.att, base.out, base.hb, base.hb2].map(view);
          const normed = normHost.subarray(0, T * H);

          // attention: rmsnorm -> q, k, v (v observed; k observed here or after rope) -> rope -> causal attention -> o
          rmsNormTorchF32(normed, h, T, H, W.inNorm, c.rmsNormEps, scratch);
          if (opts.m3 && si === 0) searches.qkv = search(ckpt, opts, l, 'qkv', normed.slice(), T);
          be.upload(xb, normed);
          be.linear(q, xb, W.q);
          be.linear(k, xb, W.k);
          be.linear(v, xb, W.v);
          const kvRows = kvHost.subarray(0, T * kvDim);
          if (kStats && vStats) {
            if (!kPostRope) updateMinMax(kStats.min, kStats.max, be.download(k, kvRows), T);
            updateMinMax(vStats.min, vStats.max, be.download(v, kvRows), T);
          }
          // The last layer's output feeds nothing: only the first sample's MLP input is still wanted there (m3),
          // and the rotated K when C8 takes post-RoPE statistics.
          const attentionWanted = !last || (opts.m3 !== undefined && si === 0);
          if (!attentionWanted && !(kStats && kPostRope)) continue;
          be.rope(q, k, positions.subarray(0, T), ropeTable);
          if (kStats && kPostRope) updateMinMax(kStats.min, kStats.max, be.download(k, kvRows), T);
          if (!attentionWanted) continue;
          be.kvWrite(kvCache, k, v, positions.subarray(0, T));
          be.pagedAttention(att, q, kvCache, {
            numSeqs: 1,
            queryStart: Int32Array.of(0, T),
            positions: positions.subarray(0, T),
            contextLens: Int32Array.of(T),
            blockTables,
            maxBlocksPerSeq: numBlocks,
          });
          be.linear(out, att, W.o);
          addInto(h, be.download(out, outHost.subarray(0, T * H)));

          // mlp: rmsnorm -> gate, up -> silu(gate)·up -> down
          rmsNormTorchF32(normed, h, T, H, W.postNorm, c.rmsNormEps, scratch);
          if (opts.m3 && si === 0) searches.gateup = search(ckpt, opts, l, 'gateup', normed.slice(), T);
          if (last) continue;
          be.upload(xb, normed);
          be.linear(hb, xb, W.gate);
          be.linear(hb2, xb, W.up);
          be.siluMul(hb, hb, hb2);
          be.linear(out, hb, W.down);
          addInto(h, be.download(out, outHost.subarray(0, T * H)));
          // Let the worker pool's replies in (they dispatch the queued m3 chunks) between samples.
          await yieldToEventLoop();
        }
      } finally {
        for (const w of [W.q, W.k, W.v, W.o, W.gate, W.up, W.down]) be.freeWeight(w);
      }
      forwardMs += performance.now() - layerStart;
      opts.onLayer?.({ layersDone: l + 1, layers: c.nLayers });

      const kv = kStats && vStats && opts.kv ? { k: kvStats(kStats, opts.kv.sym), v: kvStats(vStats, opts.kv.sym) } : {};
      const d = deferreds[l];
      const layer = l;
      const settled = Promise.all([searches.qkv, searches.gateup]).then(([qkv, gateup]) => d.resolve({ layer, qkv, gateup, ...kv }));
      settled.catch((e) => d.reject(e));
      pending.push(settled);
      await yieldToEventLoop();
    }
    await Promise.all(pending);
  } finally {
    for (const t of Object.values(base)) be.free(t);
    if (cache) be.freeWeight(cache);
    if (rope) be.freeWeight(rope);
  }
  const results = await Promise.all(deferreds.map((d) => d.promise));
  return { layers: results, backend: be.info.name, activations, samples: samples.length, tokens, forwardSeconds: forwardMs / 1000, seconds: (performance.now() - started) / 1000 };
}

function kvStats(mm: { min: Float32Array; max: Float32Array }, sym: boolean): KvLayerStats {
  return { ...kvScalesFromMinMax(mm.min, mm.max, { sym }), min: mm.min, max: mm.max };
}

/** The m3 group of layer `l` (msModelSlim's norm → linears subgraphs for LLaMA, spec §2.2). */
export function m3Group(ckpt: Checkpoint, l: number, subgraph: 'qkv' | 'gateup'): M3Group {
  const p = `model.layers.${l}`;
  const modules = subgraph === 'qkv' ? ['q_proj', 'k_proj', 'v_proj'].map((m) => `${p}.self_attn.${m}`) : ['gate_proj', 'up_proj'].map((m) => `${p}.mlp.${m}`);
  return {
    layer: l,
    subgraph,
    norm: subgraph === 'qkv' ? `${p}.input_layernorm` : `${p}.post_attention_layernorm`,
    linears: modules.map((module) => {
      const tensor = ckpt.get(`${module}.weight`);
      return { module, tensor, n: tensor.shape[0] };
    }),
  };
}

/** Sends the group's chunks off and resolves with its choice; `x` is the group's input for the first sample. */
function search(ckpt: Checkpoint, opts: CalibrationOptions, l: number, subgraph: 'qkv' | 'gateup', x: Float32Array, T: number): Promise<M3Choice> {
  const m3 = opts.m3!;
  const group = m3Group(ckpt, l, subgraph);
  const units = m3SearchUnits(group, x, T, { scheme: m3.scheme, compute: m3.compute, unitBytes: m3.unitBytes });
  const p = Promise.all(units.map((u) => opts.runUnit(u))).then((results) => chooseM3(group, x, T, m3.compute, units, results));
  p.catch(() => undefined); // reported through the layer's promise
  return p;
}

/** h += d, elementwise in float32 (the residual add). */
function addInto(h: Float32Array, d: Float32Array): void {
  for (let i = 0; i < h.length; i++) h[i] += d[i];
}

/** The embedding rows of `ids` as float32 `[T, hidden]` (reads only those rows of the table). */
function embedRows(ckpt: Checkpoint, ids: Int32Array, H: number): Float32Array {
  const name = 'model.embed_tokens.weight';
  const dtype = ckpt.get(name).dtype;
  if (!isFloatDType(dtype)) throw new CliError('E_DTYPE', `tensor '${name}' is ${dtype}; expected F32, F16 or BF16`);
  const out = new Float32Array(ids.length * H);
  ids.forEach((id, t) => decodeFloats(out.subarray(t * H, (t + 1) * H), ckpt.readRows(name, id, 1), dtype));
  return out;
}

/**
 * A weight with NaN or Inf would poison every activation after it, so the error would surface far from its
 * cause; calibration checks each float weight as it loads the layer and names the first bad element. The check
 * reads the raw exponent bits (as the conversion's copies do), so it costs a pass over the bytes, not a decode.
 */
function assertFiniteRows(bytes: Uint8Array, dtype: FloatDType, k: number, file: string, name: string): void {
  const i = firstNonFinite(bytes, dtype);
  if (i < 0) return;
  const size = DTYPE_TRAITS[dtype].bytes;
  const value = new Float32Array(1);
  decodeFloats(value, bytes.subarray(i * size, (i + 1) * size), dtype);
  throw new CliError('E_NONFINITE_WEIGHT', `${file}: tensor '${name}' has a non-finite value (${value[0]}) at row ${Math.floor(i / k)}, column ${i % k}`);
}

function loadLayer(be: Backend, ckpt: Checkpoint, c: LlamaConfig, p: string): LayerWeightsF {
  const created: LinearWeight[] = [];
  const lin = (module: string, n: number, k: number, hasBias: boolean): LinearWeight => {
    const name = `${module}.weight`;
    const info = ckpt.get(name);
    const dtype = FLOAT_DTYPES[info.dtype];
    if (!dtype) throw new CliError('E_DTYPE', `${info.file}: tensor '${name}' is ${info.dtype}; calibration runs the float checkpoint (F32, F16 or BF16)`);
    const data = ckpt.readRows(name, 0, n);
    assertFiniteRows(data, info.dtype as FloatDType, k, info.file, name);
    const w = be.createFloatLinear({ n, k, dtype, data, bias: hasBias ? ckpt.readFloat32(`${module}.bias`) : undefined, name });
    created.push(w);
    return w;
  };
  try {
    const qDim = c.nHeads * c.headDim;
    const kvDim = c.nKvHeads * c.headDim;
    const a = c.attentionBias;
    const m = c.mlpBias;
    return {
      inNorm: ckpt.readFloat32(`${p}.input_layernorm.weight`),
      postNorm: ckpt.readFloat32(`${p}.post_attention_layernorm.weight`),
      q: lin(`${p}.self_attn.q_proj`, qDim, c.hiddenSize, a),
      k: lin(`${p}.self_attn.k_proj`, kvDim, c.hiddenSize, a),
      v: lin(`${p}.self_attn.v_proj`, kvDim, c.hiddenSize, a),
      o: lin(`${p}.self_attn.o_proj`, c.hiddenSize, qDim, a),
      gate: lin(`${p}.mlp.gate_proj`, c.intermediateSize, c.hiddenSize, m),
      up: lin(`${p}.mlp.up_proj`, c.intermediateSize, c.hiddenSize, m),
      down: lin(`${p}.mlp.down_proj`, c.hiddenSize, c.intermediateSize, m),
    };
  } catch (e) {
    for (const w of created) be.freeWeight(w);
    throw e;
  }
}
