import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { computeInvFreq } from './rope';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const fixtures = path.resolve(repoRoot, '../shared/fixtures');

/**
 * The hand values below are exact (f64, 9 digits); the implementation rounds to f32 after each of up to six
 * tensor ops (pow, reciprocal, reciprocal·old, −low, /(high−low), blend), each costing at most 2^-24 relative.
 */
const INV_FREQ_REL_TOL = 6 * 2 ** -24;

describe('computeInvFreq', () => {
  it('applies llama3 scaling to the tiny-llama3 fixture config as transformers does', () => {
    const cfg = JSON.parse(readFileSync(path.join(fixtures, 'tiny-llama3-fp16/config.json'), 'utf8'));
    const s = cfg.rope_scaling;
    const inv = computeInvFreq({
      headDim: cfg.head_dim,
      theta: cfg.rope_theta,
      scaling: {
        ropeType: 'llama3',
        factor: s.factor,
        lowFreqFactor: s.low_freq_factor,
        highFreqFactor: s.high_freq_factor,
        originalMaxPositionEmbeddings: s.original_max_position_embeddings,
      },
    });
    // Derivation (transformers _compute_default_rope_parameters + _compute_llama3_parameters), headDim 16,
    // theta 500000: base inv[i] = 500000^(−2i/16) = 500000^(−i/8), i = 0..7:
    //   1, 0.193922745, 0.0376060309, 0.00729266474, 0.00141421356, 0.000274248176, 5.3182959e-5, 1.03133854e-5.
    // Wavelengths 2π/inv: 6.28, 32.4, 167.1, 861.6, 4442.9, 22910.6, 118143, 609226.
    // high_freq_wavelen = 8192/4 = 2048, low_freq_wavelen = 8192/1 = 8192:
    //   i = 0..3: wavelen < 2048 → unchanged.
    //   i = 5..7: wavelen > 8192 → inv / factor 8: 3.4281022e-5, 6.64786987e-6, 1.28917317e-6.
    //   i = 4: medium; smooth = (8192/4442.88 − 1)/(4 − 1) = 0.281282605,
    //          inv = (1 − smooth)·inv/8 + smooth·inv = 0.00141421356·(0.0898396744 + 0.281282605) = 0.000524846161.
    const expected = [
      1, 0.193922745, 0.0376060309, 0.00729266474, 0.000524846161, 3.4281022e-5, 6.64786987e-6, 1.28917317e-6,
    ];
    expect(inv.length).toBe(8);
    for (let i = 0; i < 8; i++) expect(Math.abs(inv[i] - expected[i]) / expected[i]).toBeLessThan(INV_FREQ_REL_TOL);
  });

  it('gives plain RoPE without scaling (stories260K: theta 10000, headDim 8)', () => {
    const inv = computeInvFreq({ headDim: 8, theta: 10000 });
    // 10000^(−2i/8) = 1, 0.1, 0.01, 0.001, each rounded to f32
    expect(Array.from(inv)).toEqual([1, 0.1, 0.01, 0.001].map(Math.fround));
  });

  it('rejects an odd head dimension', () => {
    expect(() => computeInvFreq({ headDim: 7, theta: 10000 })).toThrow(RangeError);
  });
});
