// Conformance of `convert --anti_method m3 --use_kvcache_quant True` (the built CLI) against msModelSlim's own
// output for tiny-llama3-fp16 recipe w8a16-m3-c8. Calibration activations come from another engine (summation
// order), so beyond layer 0's q/k/v the smoothed values carry float32 noise: tolerances are named below.

import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeLlama3TokenizerFiles } from '../src/builtin/tokenizer-files';
import { LlamaTokenizer } from '../src/tokenizer/tokenizer';
import {
  FIXTURES,
  loadAllTensors,
  runCli,
  scratchDir,
  tensorAsF32,
  TINY_CONFIG,
  tinyTensors,
  writeTinyModel,
  type LoadedTensor,
  type RawTensor,
} from './helpers';

/** Share of a smoothed linear's int8 codes allowed to differ by one (the bound); measured: 0. */
const MIN_CODE_AGREEMENT = 0.999;
/** Smoothed float tensors (γ/s, disabled W·s) and weight_scale: relative error; measured at most 5.6e-7. */
const SMOOTHED_REL_TOL = 2e-6;
/** kv_cache_scale: relative error (activation statistics, un-smoothed model here); measured 1.2e-6. */
const KV_SCALE_REL_TOL = 1e-5;


function codes(t: LoadedTensor): Int8Array {
  return new Int8Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength);
}

function maxRelError(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (d > 0) worst = Math.max(worst, b[i] === 0 ? Infinity : d / Math.abs(b[i]));
  }
  return worst;
}

const SRC = join(FIXTURES, 'tiny-llama3-fp16');
const REF = join(SRC, 'reference/w8a16-m3-c8');
const RTN = join(SRC, 'reference/w8a16-rtn');
const LAYER0 = ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'].map(
  (m) => `model.layers.0.${m}`,
);
/** recipe.json of w8a16-m3-c8, as flags. */
const RECIPE = ['--w_sym', 'False', '--a_bit', '16', '--mm_tensor', 'False', '--act_method', '3', '--anti_method', 'm3', '--use_kvcache_quant', 'True'];
const DISABLED = ['--disable_names', ...LAYER0, 'lm_head'];

interface Choice {
  layer: number;
  subgraph: string;
  ratio: number;
}

let work: string;
beforeAll(() => {
  work = scratchDir();
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('convert tiny-llama3-fp16 with m3 + C8 matches msModelSlim w8a16-m3-c8', () => {
  let out: string;
  let stdout: string;
  let report: { m3: { layer: number; subgraph: string; ratio: number; grid_index: number }[]; samples: number; tokens: number };
  let ours: Map<string, LoadedTensor>;
  let theirs: Map<string, LoadedTensor>;
  let desc: Record<string, string>;

  beforeAll(() => {
    out = join(work, 'm3c8');
    const reportPath = join(work, 'm3c8-report.json');
    const r = runCli(['convert', '--model_path', SRC, '--save_directory', out, '--device_type', 'cpu', ...RECIPE, '--calib_file', join(SRC, 'calib.jsonl'), '--calib_report', reportPath, ...DISABLED]);
    expect(r.stderr).not.toMatch(/error/);
    expect(r.status).toBe(0);
    stdout = r.stdout;
    report = JSON.parse(readFileSync(reportPath, 'utf8'));
    ours = loadAllTensors(out);
    theirs = loadAllTensors(REF);
    desc = JSON.parse(readFileSync(join(REF, 'quant_model_description.json'), 'utf8')) as Record<string, string>;
  });

  it('chooses the m3 ratio of m3-choices.json for every group (report and summary)', () => {
    const want = (JSON.parse(readFileSync(join(REF, 'm3-choices.json'), 'utf8')) as { choices: Choice[] }).choices;
    expect(report.m3.map((c) => [c.layer, c.subgraph, c.ratio])).toEqual(want.map((c) => [c.layer, c.subgraph, c.ratio]));
    expect(report.samples).toBe(4);
    expect(stdout).toContain('L0 0.20/0.30  L1 0.35/0.15  L2 0.40/0.05  L3 0.30/0.10');
  });

  it('writes quant_model_description.json byte-identical to msModelSlim (kv keys, C8 entries, norm biases)', () => {
    expect(readFileSync(join(out, 'quant_model_description.json'), 'utf8')).toBe(readFileSync(join(REF, 'quant_model_description.json'), 'utf8'));
    expect(statSync(join(out, 'quant_model_description.json')).mode & 0o777).toBe(0o600);
  });

  it('writes the same tensor names and shapes; smoothed, bias and KV tensors as F32', () => {
    expect([...ours.keys()].sort()).toEqual([...theirs.keys()].sort());
    for (const [name, t] of theirs) expect(ours.get(name)?.shape, name).toEqual(t.shape);
    const f32 = [...ours].filter(([n]) => /layernorm\.(weight|bias)$|norm\.bias$|kv_cache_|layers\.0\.(self_attn\.[qkv]|mlp\.(gate|up))_proj\.weight$/.test(n));
    expect(f32.length).toBe(4 * 4 + 1 + 4 * 4 + 5);
    for (const [name, t] of f32) expect(t.dtype, name).toBe('F32');
  });

  it(`int8 codes agree with msModelSlim's for >= ${MIN_CODE_AGREEMENT * 100}% of every linear, never by more than 1`, () => {
    let linears = 0;
    for (const [name, t] of theirs) {
      if (t.dtype !== 'I8') continue;
      const a = codes(ours.get(name) as LoadedTensor);
      const b = codes(t);
      let differ = 0;
      let worst = 0;
      for (let i = 0; i < b.length; i++) {
        const d = Math.abs(a[i] - b[i]);
        worst = Math.max(worst, d);
        if (d) differ++;
      }
      expect(worst, name).toBeLessThanOrEqual(1);
      expect(1 - differ / b.length, name).toBeGreaterThanOrEqual(MIN_CODE_AGREEMENT);
      linears++;
    }
    expect(linears).toBe(21);
  });

  it(`weight_scale within ${SMOOTHED_REL_TOL} relative, weight_offset within 1`, () => {
    for (const [name, t] of theirs) {
      if (name.endsWith('.weight_scale')) expect(maxRelError(tensorAsF32(ours.get(name) as LoadedTensor), tensorAsF32(t)), name).toBeLessThan(SMOOTHED_REL_TOL);
      if (name.endsWith('.weight_offset')) {
        const a = tensorAsF32(ours.get(name) as LoadedTensor);
        tensorAsF32(t).forEach((o, i) => expect(Math.abs(a[i] - o), name).toBeLessThanOrEqual(1));
      }
    }
  });

  it(`FLOAT tensors: untouched ones exact, smoothed ones within ${SMOOTHED_REL_TOL}, layer 0 q/k/v and γ bit-exact, norm biases zero`, () => {
    const floats = Object.entries(desc).filter(([, v]) => v === 'FLOAT').map(([k]) => k);
    expect(floats.length).toBe(27);
    const bitExact = ['model.layers.0.input_layernorm.weight', 'model.layers.0.self_attn.q_proj.weight', 'model.layers.0.self_attn.k_proj.weight', 'model.layers.0.self_attn.v_proj.weight'];
    const smoothed = /layers\.\d+\.(input_layernorm|post_attention_layernorm)\.weight$|layers\.0\.mlp\.(gate|up)_proj\.weight$/;
    for (const name of floats) {
      const a = tensorAsF32(ours.get(name) as LoadedTensor);
      const b = tensorAsF32(theirs.get(name) as LoadedTensor);
      if (name.endsWith('.bias')) expect(a.every((x) => x === 0), name).toBe(true);
      if (bitExact.includes(name) || !smoothed.test(name)) expect(Array.from(a), name).toEqual(Array.from(b));
      else expect(maxRelError(a, b), name).toBeLessThan(SMOOTHED_REL_TOL);
    }
  });

  it(`kv_cache_scale within ${KV_SCALE_REL_TOL} relative, kv_cache_offset all zero, for every layer`, () => {
    let n = 0;
    for (const [name, t] of theirs) {
      if (name.endsWith('.kv_cache_scale')) {
        expect(maxRelError(tensorAsF32(ours.get(name) as LoadedTensor), tensorAsF32(t)), name).toBeLessThan(KV_SCALE_REL_TOL);
        n++;
      }
      if (name.endsWith('.kv_cache_offset')) expect(tensorAsF32(ours.get(name) as LoadedTensor).every((x) => x === 0), name).toBe(true);
    }
    expect(n).toBe(8);
  });

  it('one thread and two threads write identical bytes', () => {
    const t1 = join(work, 'm3c8-t1');
    const r = runCli(['convert', '--model_path', SRC, '--save_directory', t1, ...RECIPE, '--calib_file', join(SRC, 'calib.jsonl'), ...DISABLED, '--threads', '1']);
    expect(r.status, r.stderr).toBe(0);
    const a = readFileSync(join(t1, 'quant_model_weight_w8a16.safetensors'));
    const b = readFileSync(join(out, 'quant_model_weight_w8a16.safetensors'));
    expect(Buffer.compare(a, b)).toBe(0);
  });
});

describe('C8 without m3', () => {
  it('leaves every weight as plain RTN writes it (bit-exact vs w8a16-rtn) and adds only the KV tensors', () => {
    const out = join(work, 'c8');
    const r = runCli(['convert', '--model_path', SRC, '--save_directory', out, '--w_sym', 'False', '--use_kvcache_quant', 'True', '--calib_file', join(SRC, 'calib.jsonl'), ...DISABLED]);
    expect(r.status, r.stderr).toBe(0);
    const ours = loadAllTensors(out);
    const rtn = loadAllTensors(RTN);
    const kvNames = [...ours.keys()].filter((n) => n.includes('kv_cache_'));
    expect(kvNames.length).toBe(16);
    expect([...ours.keys()].filter((n) => !n.includes('kv_cache_')).sort()).toEqual([...rtn.keys()].sort());
    for (const [name, t] of rtn) expect(Array.from(asF32OrCodes(ours.get(name) as LoadedTensor)), name).toEqual(Array.from(asF32OrCodes(t)));
    // Same statistics as the m3 run up to rounding: smoothing does not change k_proj / v_proj outputs mathematically.
    const ref = loadAllTensors(REF);
    for (const n of kvNames.filter((x) => x.endsWith('scale'))) expect(maxRelError(tensorAsF32(ours.get(n) as LoadedTensor), tensorAsF32(ref.get(n) as LoadedTensor)), n).toBeLessThan(KV_SCALE_REL_TOL);
    const description = readFileSync(join(out, 'quant_model_description.json'), 'utf8');
    expect(description).toMatch(/^\{\n {2}"version": "1\.0\.0",\n {2}"model_quant_type": "W8A16",\n {2}"kv_cache_type": "C8",\n {2}"kv_quant_type": "C8",\n/);
    expect(description).not.toContain('layernorm.bias');
  });

  it('--kv_sym False writes asymmetric scales with integral offsets', () => {
    const out = join(work, 'c8-asym');
    const r = runCli(['convert', '--model_path', SRC, '--save_directory', out, '--w_sym', 'False', '--use_kvcache_quant', 'True', '--kv_sym', 'False', '--calib_file', join(SRC, 'calib.jsonl')]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('asymmetric k/v scales');
    const offsets = [...loadAllTensors(out)].filter(([n]) => n.endsWith('kv_cache_offset')).flatMap(([, t]) => Array.from(tensorAsF32(t)));
    expect(offsets.every((o) => Number.isInteger(o) && o >= -128 && o <= 127)).toBe(true);
    expect(offsets.some((o) => o !== 0)).toBe(true);
  });
});

function asF32OrCodes(t: LoadedTensor): Float32Array | Int8Array {
  return t.dtype === 'I8' ? codes(t) : tensorAsF32(t);
}

describe('calibration data errors', () => {
  function expectFailure(args: string[], code: string, mention: RegExp): void {
    const out = join(work, `fail-${Math.random().toString(36).slice(2)}`);
    const r = runCli(['convert', '--model_path', SRC, '--save_directory', out, '--w_sym', 'False', '--anti_method', 'm3', ...args]);
    expect(r.status, r.stderr).not.toBe(0);
    expect(r.stderr).toContain(`error ${code}:`);
    expect(r.stderr).toMatch(mention);
  }

  it('m3 without calibration data', () => {
    expectFailure([], 'E_USAGE', /--anti_method m3 needs calibration data/);
  });

  it('a calibration line that is neither text nor ids names file:line', () => {
    const file = join(work, 'neither.jsonl');
    writeFileSync(file, '{"input_ids": [1, 5, 9]}\n{"label": true}\n');
    expectFailure(['--calib_file', file], 'E_CALIB_LINE', new RegExp(`neither\\.jsonl:2: expected an "inputs_pretokenized" string or an "input_ids" array`));
  });

  it('text lines (boolq.jsonl) and --calib_texts on a checkpoint without a tokenizer', () => {
    expectFailure(['--calib_file', join(FIXTURES, 'calib/boolq.jsonl')], 'E_NO_TOKENIZER', /boolq\.jsonl:1: has text but the checkpoint has no tokenizer\.json/);
    expectFailure(['--calib_texts', 'hello world'], 'E_NO_TOKENIZER', /--calib_texts\[0\]/);
  });
});

describe('calibration failures leave nothing behind', () => {
  it('a non-finite weight stops calibration with E_NONFINITE_WEIGHT naming the tensor and position', () => {
    const src = join(work, 'tiny-inf');
    const tensors = tinyTensors().map((t) => {
      if (t.name !== 'model.layers.0.self_attn.k_proj.weight') return t;
      const f = new Float32Array(t.data.slice().buffer);
      f[5] = Infinity;
      return { ...t, data: new Uint8Array(f.buffer) };
    });
    writeTinyModel(src, { tensors });
    const calib = join(work, 'ids5.jsonl');
    writeFileSync(calib, '{"input_ids": [1, 2, 3, 4, 5]}\n');
    const out = join(work, 'tiny-inf-out');
    const r = runCli(['convert', '--model_path', src, '--save_directory', out, '--w_sym', 'False', '--anti_method', 'm3', '--calib_file', calib]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/error E_NONFINITE_WEIGHT: .*'model\.layers\.0\.self_attn\.k_proj\.weight'.*\(Infinity\) at row 0, column 5/);
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(work).filter((f) => f.includes('.partial-'))).toEqual([]);
  });
});

describe('text calibration through the checkpoint tokenizer', () => {
  it('tokenizes each boolq.jsonl line alone (LLaMA-3 tokenizer, the recipe\'s --tokenizer_args) and calibrates', () => {
    // The tiny model with the LLaMA-3 vocabulary, so real text can be tokenized for it.
    const vocab = 128256;
    const src = join(work, 'tiny-llama3-vocab');
    const config = { ...TINY_CONFIG, vocab_size: vocab, bos_token_id: 128000, eos_token_id: 128001 };
    const tensors: RawTensor[] = tinyTensors().map((t) => {
      if (t.name !== 'model.embed_tokens.weight' && t.name !== 'lm_head.weight') return t;
      const f = new Float32Array(vocab * TINY_CONFIG.hidden_size).map((_, i) => ((i * 2654435761) % 1000) / 5000 - 0.1);
      return { ...t, shape: [vocab, TINY_CONFIG.hidden_size], data: new Uint8Array(f.buffer) };
    });
    writeTinyModel(src, { config, tensors });
    writeLlama3TokenizerFiles(src);
    const out = join(work, 'tiny-llama3-vocab-out');
    const reportPath = join(work, 'text-report.json');
    const boolq = join(FIXTURES, 'calib/boolq.jsonl');
    const r = runCli([
      'convert', '--model_path', src, '--save_directory', out, '--w_sym', 'False', '--anti_method', 'm3', '--use_kvcache_quant', 'True',
      '--calib_file', boolq, '--tokenizer_args', '{"padding_side":"left","pad_token":"<unk>"}', '--calib_report', reportPath,
    ]);
    expect(r.stderr).not.toMatch(/error|warning/);
    expect(r.status).toBe(0);
    const report = JSON.parse(readFileSync(reportPath, 'utf8')) as { samples: number; tokens: number };
    const tok = LlamaTokenizer.fromDir(src) as LlamaTokenizer;
    const lines = readFileSync(boolq, 'utf8').split('\n').filter((l) => l.trim() !== '');
    expect(report.samples).toBe(50);
    expect(report.tokens).toBe(lines.reduce((n, l) => n + tok.encode((JSON.parse(l) as { inputs_pretokenized: string }).inputs_pretokenized).length, 0));
  });
});
