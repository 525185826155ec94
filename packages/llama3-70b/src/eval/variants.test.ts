// Labels read from quant_model_description.json: the fixtures' msModelSlim outputs, a float checkpoint, and
// hand-written descriptions for the combinations the fixtures lack (m3 alone, RTN + C8).

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FIXTURES, scratchDir } from '../../test/helpers';
import { describeQuantDir, planVariantRuns } from './variants';

const TINY = join(FIXTURES, 'tiny-llama3-fp16');

function dirWithDescription(entries: Record<string, string>): string {
  const dir = join(scratchDir('w8a16-eval-variants-'), 'q');
  mkdirSync(dir);
  writeFileSync(join(dir, 'quant_model_description.json'), JSON.stringify({ version: '1.0.0', model_quant_type: 'W8A16', ...entries }, null, 2));
  return dir;
}

describe('describeQuantDir', () => {
  it('labels the msModelSlim fixtures: RTN, m3+C8; a plain checkpoint is FLOAT', () => {
    expect(describeQuantDir(join(TINY, 'reference/w8a16-rtn'))).toEqual({ weights: 'rtn', c8: false, w8a16Linears: 21, label: 'RTN' });
    expect(describeQuantDir(join(TINY, 'reference/w8a16-m3-c8'))).toEqual({ weights: 'm3', c8: true, w8a16Linears: 21, label: 'm3+C8' });
    expect(describeQuantDir(join(FIXTURES, 'stories260K/reference/w8a16-rtn'))).toMatchObject({ label: 'RTN', w8a16Linears: 35 });
    expect(describeQuantDir(TINY)).toEqual({ weights: 'float', c8: false, w8a16Linears: 0, label: 'FLOAT' });
  });

  it('m3 without C8, and RTN with C8', () => {
    const m3 = dirWithDescription({ 'model.layers.0.self_attn.q_proj.weight': 'W8A16', 'model.layers.0.input_layernorm.bias': 'FLOAT' });
    expect(describeQuantDir(m3).label).toBe('m3');
    const c8 = dirWithDescription({ kv_cache_type: 'C8', kv_quant_type: 'C8', 'model.layers.0.self_attn.k_proj.kv_cache_scale': 'C8' });
    expect(describeQuantDir(c8)).toMatchObject({ weights: 'rtn', c8: true, label: 'RTN+C8' });
  });
});

describe('planVariantRuns', () => {
  it('runs a C8 directory twice, f32 KV first; others once with their own cache', () => {
    const runs = planVariantRuns([join(TINY, 'reference/w8a16-rtn'), join(TINY, 'reference/w8a16-m3-c8')]);
    expect(runs.map((r) => [r.label, r.kvCache])).toEqual([
      ['RTN', 'auto'],
      ['m3+C8 [f32 KV]', 'f32'],
      ['m3+C8', 'auto'],
    ]);
  });
});
