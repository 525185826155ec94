// Conformance: our `convert` against msModelSlim's own W8A16 outputs in ../shared/fixtures.
// int8 codes equal exactly, weight_scale / weight_offset equal as float32, FLOAT tensors equal after
// casting to float32 (msModelSlim's CPU path writes F32; we keep the source dtype), description byte-identical.

import { readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { f16ToF32, f32ToF16 } from '@w8a16/quant-core';
import { FIXTURES, loadAllTensors, runCli, scratchDir, tensorAsF32, type LoadedTensor } from './helpers';


function layer0Disabled(): string[] {
  return ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'].map(
    (m) => `model.layers.0.${m}`,
  );
}

interface Case {
  fixture: string;
  recipe: string;
  args: string[];
}

const CASES: Case[] = [
  {
    fixture: 'tiny-llama3-fp16',
    recipe: 'w8a16-rtn',
    args: ['--w_sym', 'False', '--a_bit', '16', '--mm_tensor', 'False', '--act_method', '3', '--disable_names', ...layer0Disabled(), 'lm_head'],
  },
  { fixture: 'stories260K', recipe: 'w8a16-rtn', args: ['--w_sym', 'False', '--a_bit', '16', '--mm_tensor', 'False', '--act_method', '3'] },
];

describe.each(CASES)('convert $fixture matches msModelSlim $recipe', ({ fixture, recipe, args }) => {
  const src = join(FIXTURES, fixture);
  const ref = join(src, 'reference', recipe);
  let work: string;
  let out: string;
  let ours: Map<string, LoadedTensor>;
  let theirs: Map<string, LoadedTensor>;

  beforeAll(() => {
    work = scratchDir();
    out = join(work, 'out');
    const r = runCli(['convert', '--model_path', src, '--save_directory', out, '--device_type', 'cpu', ...args]);
    expect(r.stderr).not.toMatch(/error/);
    expect(r.status).toBe(0);
    ours = loadAllTensors(out);
    theirs = loadAllTensors(ref);
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('writes the same tensor names with the same shapes', () => {
    expect([...ours.keys()].sort()).toEqual([...theirs.keys()].sort());
    for (const [name, t] of theirs) expect(ours.get(name)?.shape, name).toEqual(t.shape);
  });

  it('int8 codes are identical and weight_scale / weight_offset equal as float32', () => {
    let codes = 0;
    for (const [name, t] of theirs) {
      const o = ours.get(name) as LoadedTensor;
      if (t.dtype === 'I8') {
        expect(o.dtype, name).toBe('I8');
        expect(Buffer.compare(Buffer.from(o.bytes), Buffer.from(t.bytes)), name).toBe(0);
        codes += t.bytes.length;
      } else if (name.endsWith('.weight_scale') || name.endsWith('.weight_offset')) {
        expect(o.dtype, name).toBe('F32');
        expect(Array.from(tensorAsF32(o)), name).toEqual(Array.from(tensorAsF32(t)));
      }
    }
    expect(codes).toBeGreaterThan(0);
  });

  it('FLOAT tensors equal the reference after casting to float32', () => {
    const desc = JSON.parse(readFileSync(join(ref, 'quant_model_description.json'), 'utf8')) as Record<string, string>;
    const floats = Object.entries(desc).filter(([, v]) => v === 'FLOAT').map(([k]) => k);
    expect(floats.length).toBeGreaterThan(0);
    for (const name of floats) {
      const a = tensorAsF32(ours.get(name) as LoadedTensor);
      const b = tensorAsF32(theirs.get(name) as LoadedTensor);
      expect(a.length, name).toBe(b.length);
      let diff = 0;
      for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) diff++;
      expect(diff, name).toBe(0);
    }
  });

  it('writes quant_model_description.json byte-identical to msModelSlim', () => {
    const a = readFileSync(join(out, 'quant_model_description.json'));
    const b = readFileSync(join(ref, 'quant_model_description.json'));
    expect(a.toString('utf8')).toBe(b.toString('utf8'));
    expect(statSync(join(out, 'quant_model_description.json')).mode & 0o777).toBe(0o600);
  });

  it('copies config.json (torch_dtype as the source) and generation_config.json', () => {
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    const srcCfg = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8'));
    expect(cfg).toEqual(srcCfg);
    expect(cfg).toEqual(JSON.parse(readFileSync(join(ref, 'config.json'), 'utf8')));
    expect(readFileSync(join(out, 'generation_config.json'), 'utf8')).toBe(readFileSync(join(src, 'generation_config.json'), 'utf8'));
    expect(readdirSync(out).sort()).toEqual(['config.json', 'generation_config.json', 'quant_model_description.json', 'quant_model_weight_w8a16.safetensors']);
  });
});

describe('convert options that change the layout, not the numbers', () => {
  const src = join(FIXTURES, 'tiny-llama3-fp16');
  let work: string;
  beforeAll(() => {
    work = scratchDir();
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('one thread and two threads write identical bytes', () => {
    const a = join(work, 't1');
    const b = join(work, 't2');
    expect(runCli(['convert', '--model_path', src, '--save_directory', a, '--w_sym', 'False', '--threads', '1']).status).toBe(0);
    expect(runCli(['convert', '--model_path', src, '--save_directory', b, '--w_sym', 'False', '--threads', '2']).status).toBe(0);
    const fa = readFileSync(join(a, 'quant_model_weight_w8a16.safetensors'));
    const fb = readFileSync(join(b, 'quant_model_weight_w8a16.safetensors'));
    expect(Buffer.compare(fa, fb)).toBe(0);
  });

  it('--part_file_size shards the weights with an index and the same tensors', () => {
    const one = join(work, 'single');
    const many = join(work, 'sharded');
    expect(runCli(['convert', '--model_path', src, '--save_directory', one, '--w_sym', 'False']).status).toBe(0);
    // 0.0002 GiB = ~215 kB: the 1.4 MB fixture splits into several shards.
    const r = runCli(['convert', '--model_path', src, '--save_directory', many, '--w_sym', 'False', '--part_file_size', '0.0002']);
    expect(r.status).toBe(0);
    const files = readdirSync(many).filter((f) => f.endsWith('.safetensors'));
    expect(files.length).toBeGreaterThan(2);
    for (const f of files) expect(f).toMatch(/^quant_model_weight_w8a16-\d{5}-of-\d{5}\.safetensors$/);
    const index = JSON.parse(readFileSync(join(many, 'quant_model_weight_w8a16.safetensors.index.json'), 'utf8'));
    const a = loadAllTensors(one);
    const b = loadAllTensors(many);
    expect(Object.keys(index.weight_map).sort()).toEqual([...a.keys()].sort());
    let total = 0;
    for (const [name, t] of a) {
      total += t.bytes.length;
      expect(Buffer.compare(Buffer.from((b.get(name) as LoadedTensor).bytes), Buffer.from(t.bytes)), name).toBe(0);
    }
    expect(index.metadata.total_size).toBe(total);
  });

  it('--w_sym True writes zero offsets and codes within ±127', () => {
    const out = join(work, 'sym');
    expect(runCli(['convert', '--model_path', src, '--save_directory', out, '--w_sym', 'True']).status).toBe(0);
    const t = loadAllTensors(out);
    let checked = 0;
    for (const [name, v] of t) {
      if (name.endsWith('.weight_offset')) {
        expect(tensorAsF32(v).every((x) => x === 0), name).toBe(true);
        checked++;
      }
      if (v.dtype === 'I8') expect(new Int8Array(v.bytes.buffer, v.bytes.byteOffset, v.bytes.length).includes(-128), name).toBe(false);
    }
    expect(checked).toBe(4 * 7);
  });

  it('--device_type npu quantizes in the model dtype (fp16 scales)', () => {
    const out = join(work, 'npu');
    expect(runCli(['convert', '--model_path', src, '--save_directory', out, '--w_sym', 'False', '--device_type', 'npu']).status).toBe(0);
    const t = loadAllTensors(out);
    const scales = [...t.entries()].filter(([n]) => n.endsWith('.weight_scale'));
    expect(scales.length).toBe(4 * 7);
    for (const [name, v] of scales) {
      // Every scale is an fp16 value: a round trip through fp16 bits changes nothing.
      const f = Array.from(tensorAsF32(v));
      expect(f.map((x) => f16ToF32(f32ToF16(x))), name).toEqual(f);
    }
  });
});
