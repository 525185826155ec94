// End to end: the BUILT cli (`bin/llama3-70b.js eval`) on the fixtures' msModelSlim outputs: the table on
// stdout, the JSON and HTML files, the positional spelling, the self-comparison zeros and the usage errors.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FIXTURES, runCli, scratchDir } from './helpers';

const TINY = join(FIXTURES, 'tiny-llama3-fp16');
const STORIES = join(FIXTURES, 'stories260K');
/** As in src/eval/evaluate.test.ts: forward-w8a16.json prints 5–6 digits; f32 summation order moves KL by < 6e-5 relative. */
const KL_REPRO_REL_TOL = 1e-4;

describe('llama3-70b eval (built cli)', () => {
  it('RTN and m3+C8 on calib.jsonl: table on stdout, --json and --html files', () => {
    const out = scratchDir('w8a16-eval-e2e-');
    const json = join(out, 'eval.json');
    const html = join(out, 'eval.html');
    const r = runCli([
      'eval', '--model_path', TINY, '--quant_path', join(TINY, 'reference/w8a16-rtn'), '--quant_path', join(TINY, 'reference/w8a16-m3-c8'),
      '--calib_file', join(TINY, 'calib.jsonl'), '--json', json, '--html', html, '--kernels', 'js',
    ]);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.status).toBe(0);
    const rows = r.stdout.split('\n').filter((l) => /^(RTN|m3\+C8)/.test(l));
    expect(rows.map((l) => l.split(/\s{2,}/)[0])).toEqual(['RTN', 'm3+C8 [f32 KV]', 'm3+C8']);
    const j = JSON.parse(readFileSync(json, 'utf8')) as { variants: { label: string; kv_cache: string; top1_agreement: number; kl_mean: number; kl_max: number }[]; weight_error: unknown[] };
    expect(j.variants.map((v) => [v.label, v.kv_cache])).toEqual([
      ['RTN', 'f32'],
      ['m3+C8 [f32 KV]', 'f32'],
      ['m3+C8', 'int8'],
    ]);
    for (const v of j.variants) {
      expect(v.top1_agreement).toBeGreaterThan(0.8);
      expect(v.kl_mean).toBeGreaterThan(0);
      expect(v.kl_max).toBeGreaterThanOrEqual(v.kl_mean);
    }
    expect(j.weight_error).toHaveLength(2);
    const page = readFileSync(html, 'utf8');
    expect(page).toContain('<table>');
    expect(page.match(/<svg /g)).toHaveLength(2);
  });

  it('positional directories and --input_ids: stories260K reproduces forward-w8a16.json; itself gives KL 0', () => {
    const out = scratchDir('w8a16-eval-e2e-');
    const ref = JSON.parse(readFileSync(join(STORIES, 'reference/w8a16-rtn/forward-w8a16.json'), 'utf8')) as {
      prompt_ids: number[];
      comparison_with_fp32_reference: { kl_last_fp32_to_w8a16: number };
    };
    const json = join(out, 'eval.json');
    const r = runCli(['eval', STORIES, join(STORIES, 'reference/w8a16-rtn'), STORIES, '--input_ids', ref.prompt_ids.join(','), '--input_ids', '1,461,2', '--json', json]);
    expect(r.status).toBe(0);
    const j = JSON.parse(readFileSync(json, 'utf8')) as { variants: { label: string; kl_mean: number; top1_agreement: number; sequences: { kl_last: number }[] }[] };
    expect(j.variants.map((v) => v.label)).toEqual(['RTN', 'FLOAT']);
    const want = ref.comparison_with_fp32_reference.kl_last_fp32_to_w8a16;
    expect(Math.abs(j.variants[0].sequences[0].kl_last - want) / want).toBeLessThan(KL_REPRO_REL_TOL);
    expect(j.variants[1].kl_mean).toBe(0);
    expect(j.variants[1].top1_agreement).toBe(1);
  });

  it('usage errors exit 2 with E_USAGE; --help exits 0', () => {
    const noSet = runCli(['eval', STORIES, join(STORIES, 'reference/w8a16-rtn')]);
    expect(noSet.status).toBe(2);
    expect(noSet.stderr).toContain('E_USAGE');
    const noQuant = runCli(['eval', STORIES, '--input_ids', '1']);
    expect(noQuant.status).toBe(2);
    expect(noQuant.stderr).toMatch(/E_USAGE: missing a converted directory/);
    const help = runCli(['eval', '--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('usage: llama3-70b eval');
  });
});
