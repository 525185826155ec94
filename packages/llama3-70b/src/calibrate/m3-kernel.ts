// The m3 search on the host addon: the whole grid of a row chunk in one native call (m3GridLosses: fake
// quantization and Σ (x_t · e_r)² fused).
// Not the choice (calibrate/m3.ts) and not the f16/bf16 compute paths (those stay on anti-outlier's JS search).

import { M3_MIN_SCALE, m3ScalesInto, meanAbsPerChannel } from '@w8a16/anti-outlier';
import type { HostAddon } from '@w8a16/ascend-runtime';
import type { QuantScheme } from '@w8a16/quant-core';

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
 * scales (the input's, else m3ScaleGrid of `x`), Σ (x·e)² per grid point natively, divided by tokens·rows as the
 * search does. Returns null when a weight makes W⊙s non-finite or a loss is not finite: the caller then runs the JS
 * search, which reports the problem its own way.
 */
export function addonM3GridSearch(addon: Pick<HostAddon, 'm3GridLosses'>): (input: M3GridInput) => Float64Array | null {
  return ({ x, tokens, channels: C, w, rows, scheme, nGrid, grid }) => {
    const scales = grid !== undefined && grid.length === nGrid * C ? grid : m3ScaleGrid(x, tokens, C, nGrid);
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
