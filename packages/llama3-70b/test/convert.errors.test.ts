// Bad input: every case fails with its error code, names what was wrong, and writes nothing at the target.

import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, scratchDir, TINY_CONFIG, tinyTensors, writeRawSafetensors, writeTinyModel, type RawTensor } from './helpers';

let work: string;
beforeAll(() => {
  work = scratchDir();
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

let n = 0;
function freshDirs(): { src: string; out: string } {
  n++;
  return { src: join(work, `src${n}`), out: join(work, `out${n}`) };
}

/** Runs convert and asserts failure with `code`, a message matching `mention`, and an untouched target. */
function expectFailure(src: string, out: string, code: string, mention: RegExp, extra: string[] = []): void {
  const r = runCli(['convert', '--model_path', src, '--save_directory', out, '--w_sym', 'False', ...extra]);
  expect(r.status, r.stderr).not.toBe(0);
  expect(r.stderr).toContain(`error ${code}:`);
  expect(r.stderr).toMatch(mention);
  expect(existsSync(out)).toBe(false);
  // No temporary directory is left beside the target either.
  expect(readdirSync(work).filter((f) => f.includes('.partial-'))).toEqual([]);
}

function withTensor(name: string, change: (t: RawTensor) => RawTensor): RawTensor[] {
  return tinyTensors().map((t) => (t.name === name ? change(t) : t));
}

describe('convert rejects bad input', () => {
  it('converts the well-formed tiny model (control case)', () => {
    const { src, out } = freshDirs();
    writeTinyModel(src);
    const r = runCli(['convert', '--model_path', src, '--save_directory', out, '--w_sym', 'False']);
    expect(r.status, r.stderr).toBe(0);
    expect(existsSync(join(out, 'quant_model_weight_w8a16.safetensors'))).toBe(true);
  });

  it('missing config.json', () => {
    const { src, out } = freshDirs();
    writeTinyModel(src);
    rmSync(join(src, 'config.json'));
    expectFailure(src, out, 'E_CONFIG_MISSING', /config\.json/);
  });

  it('malformed config.json', () => {
    const { src, out } = freshDirs();
    writeTinyModel(src);
    writeFileSync(join(src, 'config.json'), '{"hidden_size": 8,, }');
    expectFailure(src, out, 'E_CONFIG_JSON', /config\.json/);
  });

  it('config without hidden_size', () => {
    const { src, out } = freshDirs();
    const { hidden_size: _drop, ...cfg } = TINY_CONFIG;
    writeTinyModel(src, { config: cfg });
    expectFailure(src, out, 'E_CONFIG', /hidden_size/);
  });

  it('a weight dtype other than F16/BF16/F32', () => {
    const { src, out } = freshDirs();
    writeTinyModel(src, { tensors: withTensor('model.layers.0.mlp.up_proj.weight', (t) => ({ ...t, dtype: 'I32' })) });
    expectFailure(src, out, 'E_DTYPE', /up_proj\.weight.*I32/);
  });

  it('a truncated file', () => {
    const { src, out } = freshDirs();
    writeTinyModel(src, { truncateBy: 100 });
    expectFailure(src, out, 'E_TRUNCATED', /model\.safetensors/);
  });

  it('an oversized header length', () => {
    const { src, out } = freshDirs();
    writeTinyModel(src);
    const p = join(src, 'model.safetensors');
    const b = readFileSync(p);
    b.writeBigUInt64LE(BigInt(200 * 1024 * 1024), 0);
    writeFileSync(p, b);
    expectFailure(src, out, 'E_HEADER_TOO_LARGE', /model\.safetensors/);
  });

  it('a header that is not JSON', () => {
    const { src, out } = freshDirs();
    writeTinyModel(src, { headerText: (j) => j.replace('{', '[') });
    expectFailure(src, out, 'E_HEADER_JSON', /model\.safetensors/);
  });

  it('offsets beyond the end of the file', () => {
    const { src, out } = freshDirs();
    writeTinyModel(src, {
      mutateHeader: (h) => {
        const e = h['lm_head.weight'] as { data_offsets: number[] };
        e.data_offsets = [e.data_offsets[0] + 4096, e.data_offsets[1] + 4096];
      },
    });
    const r = runCli(['convert', '--model_path', src, '--save_directory', out, '--w_sym', 'False']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/error E_(TRUNCATED|OFFSETS|OVERLAP):.*lm_head\.weight/);
    expect(existsSync(out)).toBe(false);
  });

  it('overlapping tensors', () => {
    const { src, out } = freshDirs();
    writeTinyModel(src, {
      mutateHeader: (h) => {
        const a = h['model.norm.weight'] as { data_offsets: number[] };
        const b = h['model.layers.0.post_attention_layernorm.weight'] as { data_offsets: number[] };
        a.data_offsets = [...b.data_offsets];
      },
    });
    expectFailure(src, out, 'E_OVERLAP', /model\.safetensors/);
  });

  it('a shape that contradicts the config', () => {
    const { src, out } = freshDirs();
    writeTinyModel(src, {
      tensors: withTensor('model.layers.0.self_attn.k_proj.weight', (t) => ({ ...t, shape: [8, 4] })),
    });
    expectFailure(src, out, 'E_SHAPE', /k_proj\.weight/);
  });

  it('a tensor missing from the checkpoint', () => {
    const { src, out } = freshDirs();
    writeTinyModel(src, { tensors: tinyTensors().filter((t) => t.name !== 'model.layers.0.mlp.gate_proj.weight') });
    expectFailure(src, out, 'E_TENSOR_MISSING', /gate_proj\.weight/);
  });

  it('a shard named by the index is missing', () => {
    const { src, out } = freshDirs();
    mkdirSync(src, { recursive: true });
    writeFileSync(join(src, 'config.json'), JSON.stringify(TINY_CONFIG));
    const ts = tinyTensors();
    writeRawSafetensors(join(src, 'model-00001-of-00002.safetensors'), ts.slice(0, 6));
    const weightMap: Record<string, string> = {};
    ts.forEach((t, i) => (weightMap[t.name] = i < 6 ? 'model-00001-of-00002.safetensors' : 'model-00002-of-00002.safetensors'));
    writeFileSync(join(src, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    expectFailure(src, out, 'E_SHARD_MISSING', /model-00002-of-00002\.safetensors/);
  });

  it('a tensor the index maps to a shard that does not hold it', () => {
    const { src, out } = freshDirs();
    mkdirSync(src, { recursive: true });
    writeFileSync(join(src, 'config.json'), JSON.stringify(TINY_CONFIG));
    const ts = tinyTensors();
    writeRawSafetensors(join(src, 'model-00001-of-00002.safetensors'), ts.slice(0, 6));
    writeRawSafetensors(join(src, 'model-00002-of-00002.safetensors'), ts.slice(6, 11));
    const weightMap: Record<string, string> = {};
    ts.forEach((t, i) => (weightMap[t.name] = i < 6 ? 'model-00001-of-00002.safetensors' : 'model-00002-of-00002.safetensors'));
    writeFileSync(join(src, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    expectFailure(src, out, 'E_TENSOR_MISSING', /lm_head\.weight/);
  });

  it('NaN in a quantized weight names the tensor, row and column', () => {
    const { src, out } = freshDirs();
    writeTinyModel(src, {
      tensors: withTensor('model.layers.0.self_attn.o_proj.weight', (t) => {
        const f = new Float32Array(t.data.slice().buffer);
        f[3 * 8 + 5] = NaN;
        return { ...t, data: new Uint8Array(f.buffer) };
      }),
    });
    expectFailure(src, out, 'E_NONFINITE_WEIGHT', /o_proj\.weight.*row 3, column 5/);
  });

  it('Inf in a weight kept in float', () => {
    const { src, out } = freshDirs();
    writeTinyModel(src, {
      tensors: withTensor('lm_head.weight', (t) => {
        const f = new Float32Array(t.data.slice().buffer);
        f[9] = Infinity;
        return { ...t, data: new Uint8Array(f.buffer) };
      }),
    });
    expectFailure(src, out, 'E_NONFINITE_WEIGHT', /lm_head\.weight.*row 1, column 1/);
  });

  it('an unknown flag', () => {
    const { src, out } = freshDirs();
    writeTinyModel(src);
    const r = runCli(['convert', '--model_path', src, '--save_directory', out, '--w_symm', 'False']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/error E_USAGE: unknown flag --w_symm \(did you mean --w_sym\?\)/);
    expect(existsSync(out)).toBe(false);
  });

  it('combinations this build cannot do fail at once', () => {
    const { src, out } = freshDirs();
    writeTinyModel(src);
    for (const extra of [['--anti_method', 'm1'], ['--a_bit', '8'], ['--w_bit', '4'], ['--use_fa_quant', 'True']]) {
      expectFailure(src, out, 'E_UNSUPPORTED', new RegExp(extra[0]), extra);
    }
  });

  it('m3 and C8 without calibration data are usage errors that say what to add', () => {
    const { src, out } = freshDirs();
    writeTinyModel(src);
    for (const extra of [['--anti_method', 'm3'], ['--use_kvcache_quant', 'True']]) {
      expectFailure(src, out, 'E_USAGE', new RegExp(`${extra[0]}.*--calib_file.*--calib_texts`), extra);
    }
    expectFailure(src, out, 'E_USAGE', /--kv_sym only applies with --use_kvcache_quant True/, ['--kv_sym', 'False']);
  });

  it('a --disable_names entry that matches nothing is a warning, not an error', () => {
    const { src, out } = freshDirs();
    writeTinyModel(src);
    const r = runCli(['convert', '--model_path', src, '--save_directory', out, '--w_sym', 'False', '--disable_names', 'model.layers.7.mlp.up_proj']);
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/warning: --disable_names entry 'model\.layers\.7\.mlp\.up_proj' matches no linear layer/);
  });

  it('a non-empty target is refused without --force and kept intact', () => {
    const { src, out } = freshDirs();
    writeTinyModel(src);
    mkdirSync(out);
    writeFileSync(join(out, 'precious.txt'), 'keep me');
    const r = runCli(['convert', '--model_path', src, '--save_directory', out, '--w_sym', 'False']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/error E_TARGET_NOT_EMPTY:.*--force/);
    expect(readdirSync(out)).toEqual(['precious.txt']);
    expect(readFileSync(join(out, 'precious.txt'), 'utf8')).toBe('keep me');
    const forced = runCli(['convert', '--model_path', src, '--save_directory', out, '--w_sym', 'False', '--force']);
    expect(forced.status, forced.stderr).toBe(0);
    expect(existsSync(join(out, 'precious.txt'))).toBe(false);
    expect(existsSync(join(out, 'quant_model_description.json'))).toBe(true);
  });

  it('the output never goes inside the input', () => {
    const { src } = freshDirs();
    writeTinyModel(src);
    const before = readdirSync(src).sort();
    const r = runCli(['convert', '--model_path', src, '--save_directory', join(src, 'quant'), '--w_sym', 'False']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('error E_TARGET_IS_SOURCE:');
    expect(readdirSync(src).sort()).toEqual(before);
  });
});
