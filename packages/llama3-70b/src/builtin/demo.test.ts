// The `demo` command end to end (inline, from sources): built-in model generated once into the cache,
// then converted with the seed recipe's disable list; the second run reuses the cache.

import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { readDescription } from '@w8a16/format';
import { main } from '../commands/demo';
import { CACHE_DIR_ENV } from './cache';

let cacheDir: string;
const savedEnv = process.env[CACHE_DIR_ENV];
beforeAll(() => {
  cacheDir = mkdtempSync(join(tmpdir(), 'w8a16-demo-'));
  process.env[CACHE_DIR_ENV] = cacheDir;
});
afterAll(() => {
  if (savedEnv === undefined) delete process.env[CACHE_DIR_ENV];
  else process.env[CACHE_DIR_ENV] = savedEnv;
  rmSync(cacheDir, { recursive: true, force: true });
});
afterEach(() => {
  vi.restoreAllMocks();
});

async function runDemo(argv: string[]): Promise<{ code: number; stdout: string }> {
  let stdout = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stdout += String(chunk);
    return true;
  });
  vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  const code = await main(argv);
  vi.restoreAllMocks();
  return { code, stdout };
}

describe('llama3-70b demo', () => {
  it('generates the built-in model on first use, converts it with the seed recipe, runs it, and reuses the cache', async () => {
    const first = await runDemo(['--threads', '1']);
    expect(first.code).toBe(0);
    expect(first.stdout).toContain('generating built-in default');
    expect(first.stdout).toContain('--anti_method m3');
    expect(first.stdout).toContain('--use_kvcache_quant True --disable_preset llama3-70b --force');
    const out = join(cacheDir, 'builtin-w8a16');
    expect(first.stdout).toContain(`converted -> ${out}`);
    const files = readdirSync(out);
    expect(files).toEqual(
      expect.arrayContaining(['quant_model_weight_w8a16.safetensors', 'quant_model_description.json', 'config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']),
    );
    const { entries } = readDescription(out);
    for (let l = 0; l < 8; l++) {
      for (const m of ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj']) {
        expect(entries.get(`model.layers.${l}.${m}.weight`)).toBe(l < 5 ? 'FLOAT' : 'W8A16');
      }
    }
    expect(entries.get('lm_head.weight')).toBe('FLOAT');
    expect(entries.get('model.layers.7.mlp.up_proj.weight_offset')).toBe('W8A16');
    // m3 adds a zero bias to every norm; C8 adds KV scales to every layer, disabled ones included.
    expect(entries.get('model.norm.bias')).toBe('FLOAT');
    expect(entries.get('kv_cache_type')).toBe('C8');
    expect(entries.get('model.layers.0.self_attn.k_proj.kv_cache_scale')).toBe('C8');
    // The run step generated text (greedy) and reported its speed.
    expect(first.stdout).toContain("What's deep learning?");
    expect(first.stdout).toMatch(/decode: \d+ tokens in [\d.]+ s, [\d.]+ tokens\/s/);
    expect(first.stdout).toMatch(/kv int8/);

    const second = await runDemo(['--save_directory', join(cacheDir, 'elsewhere')]);
    expect(second.code).toBe(0);
    expect(second.stdout).toContain('using the cached model');
    expect(second.stdout).not.toContain('generating');
    expect(existsSync(join(cacheDir, 'elsewhere', 'quant_model_description.json'))).toBe(true);
  });

  it('rejects unknown flags and positionals with E_USAGE', async () => {
    await expect(main(['--model_path', 'x'])).rejects.toMatchObject({ code: 'E_USAGE' });
    await expect(main(['extra'])).rejects.toMatchObject({ code: 'E_USAGE' });
  });
});
