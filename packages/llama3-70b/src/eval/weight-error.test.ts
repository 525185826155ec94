// Weight error against the float source on the fixtures: plausible magnitudes for int8 per-row codes, chunking
// that changes nothing, and the m3 unfolding checked by re-quantizing W·s with the recovered s (it must give
// msModelSlim's codes back).

import { join } from 'node:path';
import { Checkpoint } from '@w8a16/format';
import { decodeFloats, quantizePerChannel } from '@w8a16/quant-core';
import { describe, expect, it } from 'vitest';
import { FIXTURES } from '../../test/helpers';
import { describeQuantDir } from './variants';
import { accumulateWeightError, m3ColumnFactors, relativeError, weightQuantErrors, type ErrorAccumulator } from './weight-error';

const TINY = join(FIXTURES, 'tiny-llama3-fp16');
const RTN = join(TINY, 'reference/w8a16-rtn');
const M3 = join(TINY, 'reference/w8a16-m3-c8');

/**
 * Bounds on ‖W − deq‖/‖W‖ for 8-bit asymmetric per-row codes of Gaussian-like rows: the step is range/255 and
 * a uniform rounding error has rms step/√12, so with range ≈ 6–9 σ the ratio is ≈ 0.7–1.0 %; allow 0.1–3 %.
 */
const REL_ERROR_MIN = 1e-3;
const REL_ERROR_MAX = 3e-2;
/** Share of codes that may differ when re-quantizing W·s with s recovered from the norms (one f32 rounding of γ/s). */
const REQUANT_CODE_MISMATCH_MAX = 1e-3;

describe('accumulateWeightError', () => {
  it('sums (W − (q − o)·s·f)² and W² per element', () => {
    const acc: ErrorAccumulator = { errSq: 0, refSq: 0 };
    // deq row 0 = ((1-0)·0.5, (3-0)·0.5) = (0.5, 1.5); row 1 = ((0+2)·0.25, (2+2)·0.25) = (0.5, 1)
    accumulateWeightError(acc, Float32Array.from([1, 1, 0.5, 1]), Int8Array.from([1, 3, 0, 2]), [0.5, 0.25], [0, -2], undefined, 2, 2);
    expect(acc).toEqual({ errSq: 0.25 + 0.25, refSq: 1 + 1 + 0.25 + 1 });
    const withFactor: ErrorAccumulator = { errSq: 0, refSq: 0 };
    accumulateWeightError(withFactor, Float32Array.from([1, 3]), Int8Array.from([1, 3]), [0.5], [0], Float64Array.from([2, 2]), 1, 2);
    expect(withFactor.errSq).toBe(0);
    expect(relativeError(withFactor)).toBe(0);
    expect(relativeError({ errSq: 1, refSq: 0 })).toBe(Infinity);
  });

  it('m3ColumnFactors = γ_smoothed / γ_source, 1 where the source γ is 0', () => {
    expect([...m3ColumnFactors(Float32Array.from([2, 0, 1]), Float32Array.from([1, 0, 4]))]).toEqual([0.5, 1, 4]);
  });
});

describe('weightQuantErrors on tiny-llama3-fp16', () => {
  it('RTN: every quantized linear (layers 1-3; layer 0 and lm_head disabled) within plausible bounds; chunking changes nothing', () => {
    const r = weightQuantErrors(TINY, RTN, describeQuantDir(RTN));
    expect(r.linears).toHaveLength(21);
    expect(new Set(r.linears.map((l) => l.layer))).toEqual(new Set([1, 2, 3]));
    for (const l of r.linears) {
      expect(l.relError).toBeGreaterThan(REL_ERROR_MIN);
      expect(l.relError).toBeLessThan(REL_ERROR_MAX);
      expect(l.unfolded).toBe(false);
    }
    expect(r.max).toBe(Math.max(...r.linears.map((l) => l.relError)));
    const oneRow = weightQuantErrors(TINY, RTN, describeQuantDir(RTN), { chunkBytes: 1 });
    expect(oneRow.linears.map((l) => l.relError)).toEqual(r.linears.map((l) => l.relError));
  });

  it('m3: unfolded q/k/v/gate/up are as close to the source as RTN; o/down (not smoothed) equal RTN exactly', () => {
    const rtn = weightQuantErrors(TINY, RTN, describeQuantDir(RTN));
    const m3 = weightQuantErrors(TINY, M3, describeQuantDir(M3));
    expect(m3.linears.map((l) => l.name)).toEqual(rtn.linears.map((l) => l.name));
    m3.linears.forEach((l, i) => {
      if (l.kind === 'o' || l.kind === 'down') {
        expect(l.unfolded).toBe(false);
        expect(l.relError).toBe(rtn.linears[i].relError);
      } else {
        expect(l.unfolded).toBe(true);
        expect(l.relError).toBeGreaterThan(REL_ERROR_MIN);
        expect(l.relError).toBeLessThan(2 * rtn.linears[i].relError);
      }
    });
    // Without the unfolding the smoothed weights are far from the source: the factors matter.
    const folded = weightQuantErrors(TINY, M3, { ...describeQuantDir(M3), weights: 'rtn' });
    const q1 = folded.linears.find((l) => l.name === 'model.layers.1.self_attn.q_proj.weight')!;
    expect(q1.relError).toBeGreaterThan(5 * REL_ERROR_MAX); // 0.30 here: s spans a wide range
  });

  it('the recovered s is msModelSlim\'s: quantizing W·s (s = γ_source/γ_smoothed) gives back the saved codes', () => {
    const src = Checkpoint.open(TINY);
    const q = Checkpoint.open(M3);
    try {
      for (const [lin, norm] of [
        ['model.layers.1.self_attn.q_proj', 'model.layers.1.input_layernorm'],
        ['model.layers.2.mlp.up_proj', 'model.layers.2.post_attention_layernorm'],
      ]) {
        const inv = m3ColumnFactors(src.readFloat32(`${norm}.weight`), q.readFloat32(`${norm}.weight`));
        const [rows, cols] = q.get(`${lin}.weight`).shape;
        const w = new Float32Array(rows * cols);
        decodeFloats(w, src.readRows(`${lin}.weight`, 0, rows), 'F16');
        for (let i = 0; i < w.length; i++) w[i] = Math.fround(w[i] * Math.fround(1 / inv[i % cols]));
        const mine = quantizePerChannel(w, rows, cols, { scheme: 'asym', compute: 'f32' });
        const raw = q.readRows(`${lin}.weight`, 0, rows);
        const saved = new Int8Array(raw.buffer, raw.byteOffset, raw.byteLength);
        let differ = 0;
        for (let i = 0; i < saved.length; i++) {
          expect(Math.abs(saved[i] - mine.q[i])).toBeLessThanOrEqual(1);
          if (saved[i] !== mine.q[i]) differ++;
        }
        expect(differ / saved.length).toBeLessThanOrEqual(REQUANT_CODE_MISMATCH_MAX);
      }
    } finally {
      src.close();
      q.close();
    }
  });

  it('a source of another shape is E_EVAL_MISMATCH naming the tensor', () => {
    const stories = join(FIXTURES, 'stories260K');
    expect(() => weightQuantErrors(stories, RTN, describeQuantDir(RTN))).toThrow(expect.objectContaining({ code: 'E_EVAL_MISMATCH', message: expect.stringContaining('model.layers.1.self_attn.q_proj.weight') }));
  });
});
