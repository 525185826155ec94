// End to end: the BUILT cli (`bin/llama3-70b.js run --world_size N`, worker threads from dist/parallel-worker.js)
// gives the same greedy output_ids as `--world_size 1`, and an impossible split is a clear error.

import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FIXTURES, runCli } from './helpers';

const C8 = 'tiny-llama3-fp16/reference/w8a16-m3-c8'; // 8 heads, 2 KV heads, int8 KV cache
const STORIES = 'stories260K/reference/w8a16-rtn'; // 8 heads, 4 KV heads
const C8_DIR = join(FIXTURES, C8);
const PROMPTS = ['1,162,38,15,28,206,236,138,220,245,9,73', '1,7,99'];

function outputIds(dir: string, worldSize: number): number[][] {
  const r = runCli(['run', dir, ...PROMPTS.flatMap((p) => ['--input_ids', p]), '--json', '--ignore_eos', '--max_output_length', '12', '--world_size', String(worldSize)]);
  expect(r.stderr).not.toMatch(/error/i);
  expect(r.status).toBe(0);
  return r.stdout
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { output_ids: number[] }).output_ids);
}

describe('llama3-70b run --world_size (built cli)', () => {
  it.each([
    [C8, 2],
    [C8, 4], // KV heads replicated on two ranks each
    [STORIES, 2],
    [STORIES, 4],
  ])('%s: --world_size %i gives the output_ids of --world_size 1', (fixture, N) => {
    const dir = join(FIXTURES, fixture);
    const one = outputIds(dir, 1);
    expect(one).toHaveLength(2);
    expect(one.every((ids) => ids.length === 12)).toBe(true);
    expect(outputIds(dir, N)).toEqual(one);
  });

  it('the streaming summary names the ranks, and the process ends (worker threads closed)', () => {
    const r = runCli(['run', C8_DIR, '--input_ids', '1,5', '--max_output_length', '3', '--world_size', '2']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/decode: 2 tokens in [\d.]+ s, [\d.]+ tokens\/s \| host .*, 2 tensor-parallel ranks, W8A16/);
  });

  it('--world_size 3 over 8 heads exits 1 with E_WORLD_SIZE', () => {
    const r = runCli(['run', C8_DIR, '--input_ids', '1,5', '--world_size', '3']);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('error E_WORLD_SIZE: --world_size 3 does not divide num_attention_heads 8');
    expect(r.stdout).toBe('');
  });
});
