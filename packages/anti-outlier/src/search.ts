// The m3 (msModelSlim's AWQ-style, weight-only) grid search of spec §2.3 for one norm → linears group:
// a fast search (blocked, allocation-free per grid point, pluggable inner kernel) and its literal oracle.
// Not here: collecting X by running the model, reading/writing tensors, deciding which groups exist (the app).

import { fakeQuantizeRows, fakeQuantizeRowsRef, QuantError, type ComputeDType, type QuantOptions, type QuantScheme } from '@w8a16/quant-core';
import { AntiOutlierError } from './errors';
import { M3_MIN_SCALE, M3_N_GRID, checkDims, checkMinScale, m3ScalesForRatio, m3ScalesInto, meanAbsPerChannel, rounderFor } from './scales';

export interface SmoothLinear {
  /** Used in error messages only (e.g. `model.layers.3.self_attn.k_proj`). */
  name: string;
  /** `[n, C]` row-major float32 weight (out_features × in_features, as stored). */
  weight: Float32Array;
  n: number;
}

export interface SmoothGroupInput {
  /** The norm output feeding the group, first calibration sample only: `[tokens, C]` row-major f32. */
  x: Float32Array;
  tokens: number;
  channels: number;
  /** The group's linears, each `[n_i, C]` (e.g. q, k, v; or gate, up). */
  linears: SmoothLinear[];
}

/**
 * The inner cost of the search: Σ over t < tokens, r < rows of (Σ_{j<C} x[t·C + j] · e[r·C + j])², i.e. the
 * squared Frobenius norm of X·Eᵀ. `x` is the activation `[tokens, C]`; `e` = W − Wq, the quantization
 * error of `rows` weight rows `[rows, C]` (the buffer may be longer; only that prefix is read). Sync and
 * pure, so an app may plug in a native (SIMD, threaded) implementation; float64 accumulation (or float32
 * blocks summed in float64) keeps the losses within M3_LOSS_REF_REL_TOL of the oracle.
 */
export type M3ErrorKernel = (x: Float64Array, e: Float64Array, tokens: number, rows: number, channels: number) => number;
/** The same contract on float32 buffers: `x` is then the caller's own array, `e` rounded to float32 (exact in practice). */
export type M3ErrorKernelF32 = (x: Float32Array, e: Float32Array, tokens: number, rows: number, channels: number) => number;

export interface M3Options {
  /** Weight quantizer symmetry, the same as the later quantization (`--w_sym`). */
  scheme: QuantScheme;
  /** Dtype of the scale, W·s and fake-quantization arithmetic; msModelSlim's CPU path is 'f32'. */
  compute?: ComputeDType;
  /** Grid size: ratios g/nGrid, g = 0..nGrid−1 (msModelSlim: 20). */
  nGrid?: number;
  /** Lower clamp of a^r before normalisation (msModelSlim: 1e-4). */
  minScale?: number;
  /** Replaces the built-in JavaScript inner kernel (sumSquaredProducts, float64 buffers). */
  kernel?: M3ErrorKernel;
  /** A float32-buffer inner kernel (e.g. a native SIMD one); takes precedence over `kernel`. */
  kernelF32?: M3ErrorKernelF32;
}

export interface M3Result {
  /** The chosen ratio gridIndex / nGrid (e.g. 0.2). */
  ratio: number;
  gridIndex: number;
  /** `[C]` normalised scales for the chosen ratio: fold with foldM3Scales. */
  scales: Float32Array;
  /** The loss at every grid point (sum over linears of each one's mean squared output error). */
  losses: Float64Array;
}

/**
 * Rows of W processed together: the block's W⊙s, Q(W⊙s) (f32) and W − Wq (f64) take 16·C·16 bytes
 * (2 MiB at C = 8192, an L2's worth on the machines this targets); each row is then reused across all tokens.
 */
export const M3_ROW_BLOCK = 16;

/**
 * How far the fast search's losses may be from the oracle's (relative). Both use the same Wq; the fast path
 * sums X·(W − Wq)ᵀ, the oracle X·Wᵀ − X·Wqᵀ, in float64: only summation order and the oracle's cancellation
 * (~C·2^-53 of |X·W| against a difference ~1e-2 of it) separate them. Measured: ≤ 8e-15 on the fixture
 * and the synthetic tests; 1e-9 is still far below any loss gap that decides a choice (0.15% in the fixtures).
 */
export const M3_LOSS_REF_REL_TOL = 1e-9;
/** The same bound for a float32-buffer kernel, where `e` is stored as float32: measured ≤ 4e-10 (bf16 compute). */
export const M3_LOSS_REF_REL_TOL_F32 = 1e-6;

type Buffer = Float32Array | Float64Array;
type AnyKernel = (x: Buffer, e: Buffer, tokens: number, rows: number, channels: number) => number;

interface Resolved {
  quant: QuantOptions;
  nGrid: number;
  minScale: number;
  kernel: AnyKernel;
  f32Buffers: boolean;
}

/**
 * msModelSlim's m3 scale search, spec §2.3 exactly: a = mean_tokens |X| per channel; for g in 0..nGrid−1,
 * s = clamp(a^(g/nGrid), minScale) / sqrt(max(s)·min(s)); Wqᵢ = R(Q(R(Wᵢ⊙s)) / s) with quant-core's per-row
 * fake quantizer Q and R = rounding to the compute dtype (what PyTorch stores); loss = Σ over linears of the
 * mean over (tokens × n_i) of (X·Wᵢᵀ − X·Wqᵢᵀ)²; the FIRST minimum wins (strictly-less comparison).
 * Scales are float32 op by op (PyTorch CPU, see m3ScalesInto); losses accumulate in float64, where
 * msModelSlim's float32 matmuls carry ~1e-6 relative noise (so the float64 value is the better-defined one).
 *
 * Cost: tokens · C · Σn_i multiply-adds per grid point (the kernel), plus O(C · Σn_i) to form Wq.
 * X·Wᵀ − X·Wqᵀ is computed as X·(W − Wq)ᵀ: no cancellation and no [tokens, n] output buffers. Weight rows
 * go through in blocks of M3_ROW_BLOCK and each block meets every token while it is in cache; all work
 * buffers are allocated once, before the grid loop.
 */
export function searchM3Scales(input: SmoothGroupInput, opts: M3Options): M3Result {
  const o = resolveOptions('searchM3Scales', opts);
  checkGroup('searchM3Scales', input);
  const { x, tokens: T, channels: C, linears } = input;
  const R = rounderFor(o.quant.compute);
  const f32 = o.quant.compute === 'f32';
  const a = meanAbsPerChannel(x, T, C, o.quant.compute);

  // Work buffers, reused by every grid point and every linear.
  const s = new Float32Array(C); // (C) current scales
  const best = new Float32Array(C); // (C) scales of the best grid point so far
  const xk: Buffer = o.f32Buffers ? x : Float64Array.from(x); // (tokens, C) X as the kernel reads it
  const maxRows = Math.min(M3_ROW_BLOCK, Math.max(...linears.map((l) => l.n)));
  const ws = new Float32Array(maxRows * C); // (rows, C) W ⊙ s, rounded to the compute dtype
  const fq = new Float32Array(maxRows * C); // (rows, C) Q(W ⊙ s)
  const e: Buffer = o.f32Buffers ? new Float32Array(maxRows * C) : new Float64Array(maxRows * C); // (rows, C) W − Wq
  // fakeQuantizeRows wants arrays of exactly rows·C: one pair of views per distinct block height.
  const views = new Map<number, [Float32Array, Float32Array]>();
  for (const lin of linears) {
    for (const rows of [Math.min(maxRows, lin.n), lin.n % maxRows]) {
      if (rows > 0 && !views.has(rows)) views.set(rows, [ws.subarray(0, rows * C), fq.subarray(0, rows * C)]);
    }
  }

  const losses = new Float64Array(o.nGrid);
  let bestLoss = Infinity;
  let bestIndex = -1;
  for (let g = 0; g < o.nGrid; g++) {
    const ratio = g / o.nGrid;
    m3ScalesInto(s, a, ratio, o.minScale, o.quant.compute);
    let loss = 0;
    for (const lin of linears) {
      const w = lin.weight;
      let sq = 0;
      for (let r0 = 0; r0 < lin.n; r0 += maxRows) {
        const rows = Math.min(maxRows, lin.n - r0);
        const [wsView, fqView] = views.get(rows)!;
        const len = rows * C;
        const wBase = r0 * C;
        for (let i = 0; i < len; i += C) {
          for (let j = 0; j < C; j++) ws[i + j] = w[wBase + i + j] * s[j]; // the store rounds to float32
        }
        if (!f32) for (let i = 0; i < len; i++) ws[i] = R(ws[i]);
        try {
          fakeQuantizeRows(fqView, wsView, rows, C, o.quant);
        } catch (err) {
          throw rethrowQuant('searchM3Scales', err, lin.name, r0, ratio);
        }
        // W and Wq are float32 values: their difference is exact in float64.
        if (f32) {
          for (let i = 0; i < len; i += C) {
            for (let j = 0; j < C; j++) e[i + j] = w[wBase + i + j] - Math.fround(fq[i + j] / s[j]);
          }
        } else {
          for (let i = 0; i < len; i += C) {
            for (let j = 0; j < C; j++) e[i + j] = w[wBase + i + j] - R(fq[i + j] / s[j]);
          }
        }
        sq += o.kernel(xk, e, T, rows, C);
      }
      loss += sq / (T * lin.n);
    }
    losses[g] = loss;
    if (loss < bestLoss) {
      bestLoss = loss;
      bestIndex = g;
      best.set(s);
    }
  }
  if (bestIndex < 0) {
    throw new AntiOutlierError('E_NONFINITE', `searchM3Scales: no grid point has a finite loss (losses: ${Array.from(losses).join(', ')})`);
  }
  return { ratio: bestIndex / o.nGrid, gridIndex: bestIndex, scales: best, losses };
}

/**
 * The oracle of searchM3Scales: the spec written out literally. Per grid point and linear it forms
 * Wq = R(Q(R(W⊙s)) / s) (R = rounding to the compute dtype, quant-core's reference fake quantizer),
 * then both outputs X·Wᵀ and X·Wqᵀ with float64 sums, and the mean of their squared difference.
 * Allocates per grid point; slow (twice the multiply-adds of the fast path). For tests.
 */
export function searchM3ScalesRef(input: SmoothGroupInput, opts: M3Options): M3Result {
  const o = resolveOptions('searchM3ScalesRef', opts);
  checkGroup('searchM3ScalesRef', input);
  const { x, tokens: T, channels: C, linears } = input;
  const R = rounderFor(o.quant.compute);
  const a = meanAbsPerChannel(x, T, C, o.quant.compute);
  const losses = new Float64Array(o.nGrid);
  let bestLoss = Infinity;
  let bestIndex = -1;
  let best: Float32Array = new Float32Array(C);
  for (let g = 0; g < o.nGrid; g++) {
    const s = m3ScalesForRatio(a, g / o.nGrid, o.minScale, o.quant.compute);
    let loss = 0;
    for (const { name, weight: w, n } of linears) {
      const ws = new Float32Array(n * C);
      for (let r = 0; r < n; r++) for (let j = 0; j < C; j++) ws[r * C + j] = R(w[r * C + j] * s[j]);
      const fq = new Float32Array(n * C);
      try {
        fakeQuantizeRowsRef(fq, ws, n, C, o.quant);
      } catch (err) {
        throw rethrowQuant('searchM3ScalesRef', err, name, 0, g / o.nGrid);
      }
      const wq = new Float32Array(n * C);
      for (let r = 0; r < n; r++) for (let j = 0; j < C; j++) wq[r * C + j] = R(fq[r * C + j] / s[j]);
      let sq = 0;
      for (let t = 0; t < T; t++) {
        for (let r = 0; r < n; r++) {
          let y = 0;
          let yq = 0;
          for (let j = 0; j < C; j++) {
            y += x[t * C + j] * w[r * C + j];
            yq += x[t * C + j] * wq[r * C + j];
          }
          sq += (y - yq) * (y - yq);
        }
      }
      loss += sq / (T * n);
    }
    losses[g] = loss;
    if (loss < bestLoss) {
      bestLoss = loss;
      bestIndex = g;
      best = s;
    }
  }
  if (bestIndex < 0) {
    throw new AntiOutlierError('E_NONFINITE', `searchM3ScalesRef: no grid point has a finite loss (losses: ${Array.from(losses).join(', ')})`);
  }
  return { ratio: bestIndex / o.nGrid, gridIndex: bestIndex, scales: best, losses };
}

/**
 * The built-in inner kernel (see M3ErrorKernel): tiles of 4 tokens × 2 weight rows, so each loaded x
 * value is used twice and each e value four times, with eight float64 accumulators held in registers.
 * (4×4 tiles and interleaved layouts measured no faster in V8: ~2.2 GMAC/s on one Zen 4 core.)
 */
export function sumSquaredProducts(x: Float64Array, e: Float64Array, tokens: number, rows: number, channels: number): number {
  const C = channels;
  let total = 0;
  let t = 0;
  for (; t + 4 <= tokens; t += 4) {
    const x0 = t * C;
    const x1 = x0 + C;
    const x2 = x1 + C;
    const x3 = x2 + C;
    let r = 0;
    for (; r + 2 <= rows; r += 2) {
      const d0 = r * C;
      const d1 = d0 + C;
      let a00 = 0, a01 = 0, a10 = 0, a11 = 0, a20 = 0, a21 = 0, a30 = 0, a31 = 0;
      for (let j = 0; j < C; j++) {
        const w0 = e[d0 + j];
        const w1 = e[d1 + j];
        const v0 = x[x0 + j];
        const v1 = x[x1 + j];
        const v2 = x[x2 + j];
        const v3 = x[x3 + j];
        a00 += v0 * w0;
        a01 += v0 * w1;
        a10 += v1 * w0;
        a11 += v1 * w1;
        a20 += v2 * w0;
        a21 += v2 * w1;
        a30 += v3 * w0;
        a31 += v3 * w1;
      }
      total += a00 * a00 + a01 * a01 + a10 * a10 + a11 * a11 + a20 * a20 + a21 * a21 + a30 * a30 + a31 * a31;
    }
    if (r < rows) {
      const d0 = r * C;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (let j = 0; j < C; j++) {
        const w0 = e[d0 + j];
        a0 += x[x0 + j] * w0;
        a1 += x[x1 + j] * w0;
        a2 += x[x2 + j] * w0;
        a3 += x[x3 + j] * w0;
      }
      total += a0 * a0 + a1 * a1 + a2 * a2 + a3 * a3;
    }
  }
  for (; t < tokens; t++) {
    const x0 = t * C;
    for (let r = 0; r < rows; r++) {
      const d0 = r * C;
      let acc = 0;
      for (let j = 0; j < C; j++) acc += x[x0 + j] * e[d0 + j];
      total += acc * acc;
    }
  }
  return total;
}

/** Plain twin of sumSquaredProducts (either buffer type): one dot product at a time, float64 sums. */
export function sumSquaredProductsRef(x: Buffer, e: Buffer, tokens: number, rows: number, channels: number): number {
  let total = 0;
  for (let t = 0; t < tokens; t++) {
    for (let r = 0; r < rows; r++) {
      let acc = 0;
      for (let j = 0; j < channels; j++) acc += x[t * channels + j] * e[r * channels + j];
      total += acc * acc;
    }
  }
  return total;
}

// ---------------------------------------------------------------------------------------------
// Argument checks.

function resolveOptions(fn: string, opts: M3Options): Resolved {
  const { scheme } = opts;
  const compute = opts.compute ?? 'f32';
  const nGrid = opts.nGrid ?? M3_N_GRID;
  const minScale = opts.minScale ?? M3_MIN_SCALE;
  if (scheme !== 'asym' && scheme !== 'sym') {
    throw new AntiOutlierError('E_OPTION', `${fn}: expected scheme 'asym' or 'sym', found '${String(scheme)}'`);
  }
  if (compute !== 'f32' && compute !== 'f16' && compute !== 'bf16') {
    throw new AntiOutlierError('E_OPTION', `${fn}: expected compute 'f32', 'f16' or 'bf16', found '${String(compute)}'`);
  }
  if (!Number.isSafeInteger(nGrid) || nGrid <= 0) {
    throw new AntiOutlierError('E_OPTION', `${fn}: expected a positive integer nGrid, found ${nGrid}`);
  }
  checkMinScale(fn, minScale);
  // The kernels differ only in buffer element type; the search allocates the buffers to match.
  const kernel = (opts.kernelF32 ?? opts.kernel ?? sumSquaredProducts) as AnyKernel;
  return { quant: { scheme, compute }, nGrid, minScale, kernel, f32Buffers: opts.kernelF32 !== undefined };
}

function checkGroup(fn: string, input: SmoothGroupInput): void {
  const { x, tokens, channels, linears } = input;
  checkDims(fn, tokens, channels);
  if (x.length !== tokens * channels) {
    throw new AntiOutlierError('E_SHAPE', `${fn}: expected x.length = tokens·channels = ${tokens}·${channels} = ${tokens * channels}, found ${x.length}`);
  }
  if (linears.length === 0) {
    throw new AntiOutlierError('E_SHAPE', `${fn}: expected at least one linear in the group, found none`);
  }
  for (const { name, weight, n } of linears) {
    if (!Number.isSafeInteger(n) || n <= 0) {
      throw new AntiOutlierError('E_SHAPE', `${fn}: linear '${name}': expected a positive integer row count n, found ${n}`);
    }
    if (weight.length !== n * channels) {
      throw new AntiOutlierError('E_SHAPE', `${fn}: linear '${name}': expected weight.length = n·C = ${n}·${channels} = ${n * channels}, found ${weight.length}`);
    }
  }
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i])) {
      const t = Math.floor(i / channels);
      throw new AntiOutlierError('E_NONFINITE', `${fn}: expected finite activations, found x[${t}, ${i - t * channels}] = ${x[i]} (token ${t}, channel ${i - t * channels})`);
    }
  }
  for (const { name, weight } of linears) {
    for (let i = 0; i < weight.length; i++) {
      if (!Number.isFinite(weight[i])) {
        const r = Math.floor(i / channels);
        throw new AntiOutlierError('E_NONFINITE', `${fn}: linear '${name}': expected finite weights, found ${weight[i]} at row ${r}, col ${i - r * channels}`);
      }
    }
  }
}

/** A non-finite W·s (overflow of the compute dtype) surfaces from quant-core; name the linear and ratio. */
function rethrowQuant(fn: string, err: unknown, name: string, rowBase: number, ratio: number): unknown {
  if (!(err instanceof QuantError)) return err;
  const where = err.row === undefined ? '' : ` at row ${rowBase + err.row}${err.col === undefined ? '' : `, col ${err.col}`}`;
  return new AntiOutlierError('E_NONFINITE', `${fn}: linear '${name}', ratio ${ratio}: W·s is not finite in the compute dtype${where} (${err.message})`, { cause: err });
}
