// The m3 search of one group (norm → linears) split into row chunks that run anywhere (worker threads or
// inline), and the choice made from their losses. The loss is a sum over linears of each one's mean over rows,
// so it splits over rows exactly: a chunk's mean times its share of the rows. The per-chunk search itself is
// anti-outlier's searchM3Scales; this file only cuts and recombines.

import { M3_MIN_SCALE, M3_N_GRID, m3ScalesForRatio, meanAbsPerChannel } from '@w8a16/anti-outlier';
import type { TensorInfo } from '@w8a16/format';
import type { ComputeDType, FloatDType, QuantScheme } from '@w8a16/quant-core';
import { CliError } from '../cli/errors';
import { m3ScaleGrid } from './m3-kernel';
import { rowsPerUnit, type M3SearchUnit, type UnitResult } from '../convert/units';

/**
 * Source bytes of one m3 chunk. Smaller than a conversion unit: a chunk costs tokens·20 multiply-adds per
 * weight element, so a 1B gate|up group is still cut into ~16 chunks that two workers share evenly.
 */
export const M3_UNIT_SOURCE_BYTES = 2 * 1024 * 1024;

export type M3Subgraph = 'qkv' | 'gateup';

export interface M3Group {
  readonly layer: number;
  readonly subgraph: M3Subgraph;
  /** The norm module whose output feeds the group, e.g. `model.layers.0.input_layernorm`. */
  readonly norm: string;
  /** Linear modules (weight `[n, C]` each), in msModelSlim's order. */
  readonly linears: readonly { readonly module: string; readonly tensor: TensorInfo; readonly n: number }[];
}

export interface M3Choice {
  readonly layer: number;
  readonly subgraph: M3Subgraph;
  readonly norm: string;
  readonly linears: string[];
  readonly ratio: number;
  readonly gridIndex: number;
  /** Loss of every grid point (sum over the linears of each one's mean squared output error). */
  readonly losses: number[];
  /** `[C]` the chosen smoothing scales (γ ← γ/s, W[:, j] ← W[:, j]·s[j]). */
  readonly scales: Float32Array;
}

const BYTES: Record<FloatDType, number> = { F32: 4, F16: 2, BF16: 2 };

/** Cuts a group's linears into row chunks, each searched over the whole grid for activation `x [tokens, C]`. */
export function m3SearchUnits(
  group: M3Group,
  x: Float32Array,
  tokens: number,
  opts: { scheme: QuantScheme; compute: ComputeDType; unitBytes?: number },
): M3SearchUnit[] {
  const units: M3SearchUnit[] = [];
  // Every chunk of the group searches the same grid: its scales are formed here once, not once per chunk.
  const C = group.linears[0]?.tensor.shape[1] ?? 0;
  const grid = opts.compute === 'f32' && C > 0 && x.length === tokens * C ? m3ScaleGrid(x, tokens, C, M3_N_GRID) : undefined;
  for (const lin of group.linears) {
    const t = lin.tensor;
    const dtype = t.dtype as FloatDType;
    const cols = t.shape[1];
    if (t.shape.length !== 2 || t.shape[0] !== lin.n || x.length !== tokens * cols) {
      throw new CliError('E_INTERNAL', `m3: ${t.name} has shape [${t.shape}], expected [${lin.n}, ${x.length / tokens}]`);
    }
    const per = rowsPerUnit(cols, dtype, opts.unitBytes ?? M3_UNIT_SOURCE_BYTES);
    for (let rowStart = 0; rowStart < lin.n; rowStart += per) {
      const rowCount = Math.min(per, lin.n - rowStart);
      units.push({
        kind: 'm3search',
        tensor: t.name,
        srcPath: t.file,
        srcOffset: t.byteOffset + rowStart * cols * BYTES[dtype],
        srcDType: dtype,
        rowStart,
        rowCount,
        cols,
        x,
        tokens,
        compute: opts.compute,
        scheme: opts.scheme,
        grid,
      });
    }
  }
  return units;
}

/**
 * The group's choice from its chunks' losses (`results[i]` belongs to `units[i]`): per linear, Σ chunk loss ·
 * rowCount / n (its mean over all rows); summed over the linears; the FIRST minimum wins (strictly less), as
 * searchM3Scales decides; the scales are m3ScalesForRatio of mean |x| at that ratio.
 */
export function chooseM3(
  group: M3Group,
  x: Float32Array,
  tokens: number,
  compute: ComputeDType,
  units: readonly M3SearchUnit[],
  results: readonly UnitResult[],
  nGrid = M3_N_GRID,
): M3Choice {
  const total = new Float64Array(nGrid);
  for (const lin of group.linears) {
    const own = new Float64Array(nGrid);
    units.forEach((u, i) => {
      if (u.tensor !== lin.tensor.name) return;
      const losses = results[i].losses;
      if (!losses || losses.length !== nGrid) throw new CliError('E_INTERNAL', `m3: chunk ${u.tensor}@${u.rowStart} returned no losses`);
      for (let g = 0; g < nGrid; g++) own[g] += (losses[g] * u.rowCount) / lin.n;
    });
    for (let g = 0; g < nGrid; g++) total[g] += own[g];
  }
  let best = Infinity;
  let gridIndex = -1;
  for (let g = 0; g < nGrid; g++) {
    if (total[g] < best) {
      best = total[g];
      gridIndex = g;
    }
  }
  if (gridIndex < 0) throw new CliError('E_M3_NONFINITE', `m3: layer ${group.layer} ${group.subgraph}: no grid point has a finite loss`);
  const cols = x.length / tokens;
  const ratio = gridIndex / nGrid;
  const a = meanAbsPerChannel(x, tokens, cols, compute);
  return {
    layer: group.layer,
    subgraph: group.subgraph,
    norm: group.norm,
    linears: group.linears.map((l) => l.module),
    ratio,
    gridIndex,
    losses: Array.from(total),
    scales: m3ScalesForRatio(a, ratio, M3_MIN_SCALE, compute),
  };
}
