// The m3 search on the host addon: the whole grid of a row chunk in one native call (m3GridLosses: fake
// quantization and Σ (x_t · e_r)² fused), and the older inner kernel alone on the addon's float32 linear.
// Not the choice (calibrate/m3.ts) and not the f16/bf16 compute paths (those stay on anti-outlier's JS search).

import { M3_MIN_SCALE, m3ScalesInto, meanAbsPerChannel, type M3ErrorKernelF32 } from '@w8a16/anti-outlier';
import type { HostAddon } from '@w8a16/ascend-runtime';
import type { QuantScheme } from '@w8a16/quant-core';

/** floatLinear's weight element code for float32 (ascend-runtime's NATIVE_WTYPE.f32). */
const WTYPE_F32 = 0;
/**
 * One thread per call: the search calls this for 16 rows at a time (M3_ROW_BLOCK), too little work to split,
 * and the app runs several searches side by side on worker threads instead.
 */
const KERNEL_THREADS = 1;

/** The addon's floatLinear as an M3ErrorKernelF32 (float32 dot products, float64 sum of their squares). */
export function addonM3Kernel(addon: Pick<HostAddon, 'floatLinear' | 'bestIsa'>, isa = addon.bestIsa()): M3ErrorKernelF32 {
  let y = new Float32Array(0); // (tokens, rows) X·Eᵀ, grown on demand
  return (x, e, tokens, rows, channels) => {
    const n = tokens * rows;
    if (y.length < n) y = new Float32Array(n);
    const out = y.length === n ? y : y.subarray(0, n);
    addon.floatLinear(out, x, tokens, e, WTYPE_F32, null, rows, channels, KERNEL_THREADS, isa);
    let total = 0;
    for (let i = 0; i < n; i++) total += out[i] * out[i];
    return total;
  };
}

/**
 * One thread per call: the app already runs one m3 chunk per worker thread side by side, and with one thread the
 * addon runs the call inline, outside its pool's lock (more threads would serialize the workers on that lock).
 */
const GRID_THREADS = 1;

/** The rows of one m3 chunk: `w [rows, C]` float32 weights and the group's activation `x [tokens, C]`. */
export interface M3GridInput {
  readonly x: Float32Array;
  readonly tokens: number;
  readonly channels: number;
  readonly w: Float32Array;
  readonly rows: number;
  readonly scheme: QuantScheme;
  readonly nGrid: number;
  /** `[nGrid, C]` m3ScaleGrid(x, ...) when the caller has it already (it is the same for every chunk of a group). */
  readonly grid?: Float32Array;
}

/**
 * The scale vector of every grid point, `[nGrid, C]`, as searchM3Scales forms them (float32 compute):
 * m3ScalesInto of mean |x| at ratio g / nGrid. Costs nGrid·C torch-exact pow calls, so a group computes it once.
 */
export function m3ScaleGrid(x: Float32Array, tokens: number, C: number, nGrid: number): Float32Array {
  const a = meanAbsPerChannel(x, tokens, C, 'f32');
  const grid = new Float32Array(nGrid * C);
  for (let g = 0; g < nGrid; g++) m3ScalesInto(grid.subarray(g * C, (g + 1) * C), a, g / nGrid, M3_MIN_SCALE, 'f32');
  return grid;
}

/**
 * searchM3Scales(...).losses of one linear's row chunk (float32 compute), from the addon's m3GridLosses: the grid's
 * scales (the input's, or m3ScaleGrid of `x`, cached for the last `x`), Σ (x·e)² per grid point natively, divided by
 * tokens·rows as the search does. Returns null when a weight makes W⊙s non-finite or a loss is not finite: the
 * caller then runs the JS search, which reports the problem its own way.
 */
export function addonM3GridSearch(addon: Pick<HostAddon, 'm3GridLosses'>): (input: M3GridInput) => Float64Array | null {
  let lastX: Float32Array | null = null;
  let lastGrid = 0;
  let cached: Float32Array = new Float32Array(0); // (nGrid, C) the grid's scale vectors for lastX
  return ({ x, tokens, channels: C, w, rows, scheme, nGrid, grid }) => {
    let scales = grid;
    if (scales === undefined || scales.length !== nGrid * C) {
      if (x !== lastX || nGrid !== lastGrid || cached.length !== nGrid * C) {
        cached = m3ScaleGrid(x, tokens, C, nGrid);
        lastX = x;
        lastGrid = nGrid;
      }
      scales = cached;
    }
    const losses = new Float64Array(nGrid);
    const bad = addon.m3GridLosses(losses, x, tokens, C, w, rows, scales, nGrid, scheme === 'sym' ? 1 : 0, GRID_THREADS);
    if (bad >= 0) return null;
    for (let g = 0; g < nGrid; g++) {
      losses[g] /= tokens * rows;
      if (!Number.isFinite(losses[g])) return null;
    }
    return losses;
  };
}
