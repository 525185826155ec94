// The m3 search cut into row chunks (each searched on its own, as the worker pool runs them) against
// anti-outlier's searchM3Scales over the whole group: same choice, same scales, same losses.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { M3_LOSS_REF_REL_TOL_F32, searchM3Scales } from '@w8a16/anti-outlier';
import { Checkpoint } from '@w8a16/format';
import { decodeFloats, encodeFloats, type QuantScheme } from '@w8a16/quant-core';
import { writeRawSafetensors } from '../../test/helpers';
import { UnitRunner, type UnitResult } from '../convert/units';
import { chooseM3, m3SearchUnits, type M3Group } from './m3';

/** mulberry32: seeded uniform [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const C = 48;
const T = 10;
const ROWS = { q: 40, k: 12, v: 12 };
const dir = mkdtempSync(join(tmpdir(), 'w8a16-m3-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A q|k|v-like group stored as F16 (the source dtype the search decodes), and an activation with outlier channels. */
function fixture(seed: number) {
  const r = rng(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const x = new Float32Array(T * C);
  for (let t = 0; t < T; t++) for (let j = 0; j < C; j++) x[t * C + j] = gauss() * (j % 17 === 3 ? 8 : 1);
  const tensors = Object.entries(ROWS).map(([name, n]) => {
    const w = new Float32Array(n * C).map(() => 0.05 * gauss());
    const bytes = new Uint8Array(2 * w.length);
    encodeFloats(bytes, w, 'F16');
    return { name: `model.layers.0.self_attn.${name}_proj.weight`, dtype: 'F16', shape: [n, C], data: bytes };
  });
  const sub = join(dir, `s${seed}`);
  writeRawSafetensors(join(sub, 'model.safetensors'), tensors);
  const ckpt = Checkpoint.open(sub);
  const group: M3Group = {
    layer: 0,
    subgraph: 'qkv',
    norm: 'model.layers.0.input_layernorm',
    linears: Object.entries(ROWS).map(([name, n]) => ({ module: `model.layers.0.self_attn.${name}_proj`, tensor: ckpt.get(`model.layers.0.self_attn.${name}_proj.weight`), n })),
  };
  const weights = group.linears.map((l) => {
    const w = new Float32Array(l.n * C);
    decodeFloats(w, ckpt.readRows(l.tensor.name, 0, l.n), 'F16');
    return { name: l.module, weight: w, n: l.n };
  });
  ckpt.close();
  return { x, group, weights };
}

describe.each([
  { scheme: 'asym' as QuantScheme, unitBytes: 7 * C * 2, label: 'asym, 7-row chunks' },
  { scheme: 'sym' as QuantScheme, unitBytes: 5 * C * 2, label: 'sym, 5-row chunks' },
  { scheme: 'asym' as QuantScheme, unitBytes: 1 << 20, label: 'asym, one chunk per linear' },
])('m3 search in row chunks ($label)', ({ scheme, unitBytes }) => {
  it('makes the choice searchM3Scales makes on the whole group, with the same scales and losses', () => {
    const runner = new UnitRunner();
    try {
      for (const seed of [1, 2, 3]) {
        const { x, group, weights } = fixture(seed);
        const units = m3SearchUnits(group, x, T, { scheme, compute: 'f32', unitBytes });
        expect(units.length).toBeGreaterThanOrEqual(3);
        const results: UnitResult[] = units.map((u) => runner.run(u));
        const ours = chooseM3(group, x, T, 'f32', units, results);
        const whole = searchM3Scales({ x, tokens: T, channels: C, linears: weights }, { scheme });
        expect(ours.gridIndex, `seed ${seed}`).toBe(whole.gridIndex);
        expect(ours.ratio).toBe(whole.ratio);
        expect(Array.from(ours.scales)).toEqual(Array.from(whole.scales));
        // The units use the addon's float32 kernel when it loads, so the float32-buffer bound applies.
        ours.losses.forEach((l, g) => expect(Math.abs(l / whole.losses[g] - 1)).toBeLessThan(M3_LOSS_REF_REL_TOL_F32));
      }
    } finally {
      runner.close();
    }
  });
});
