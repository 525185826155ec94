import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Checkpoint } from './checkpoint';
import { FormatError } from './errors';
import { planSafetensors, SafetensorsWriter, type PlannedTensor } from './safetensors-write';
import { STORIES, TINY, makeTempDir, removeTempDirs, seededBytes } from './test-support';

afterAll(removeTempDirs);

function errorOf(f: () => unknown): FormatError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(FormatError);
    return e as FormatError;
  }
  throw new Error('expected a FormatError');
}

/** Writes a sharded checkpoint of seeded tensors; returns its dir, plan and data. */
function writeSharded(tensors: PlannedTensor[], limit: number, baseName = 'model') {
  const plan = planSafetensors(tensors, { baseName, partFileSizeBytes: limit });
  const dir = makeTempDir();
  const w = SafetensorsWriter.create(dir, plan);
  const data = new Map(tensors.map((t, i) => [t.name, seededBytes(plan.locate(t.name).byteLength, 50 + i)]));
  for (const [n, b] of data) w.write(n, b);
  w.finish();
  return { dir, plan, data };
}

describe('Checkpoint on the fixtures', () => {
  it('opens model.safetensors and decodes F16 exactly as msModelSlim saved it in F32', () => {
    // The rtn reference stores the untouched embedding as F32 = the fp16 checkpoint values cast to float32.
    const src = Checkpoint.open(TINY);
    const ref = Checkpoint.open(path.join(TINY, 'reference/w8a16-rtn'));
    try {
      expect(src.tensors.length).toBe(39);
      expect(src.get('model.embed_tokens.weight').dtype).toBe('F16');
      expect(ref.get('model.embed_tokens.weight').dtype).toBe('F32');
      for (const name of ['model.embed_tokens.weight', 'model.norm.weight', 'lm_head.weight', 'model.layers.0.mlp.down_proj.weight']) {
        const a = src.readFloat32(name);
        const b = ref.readFloat32(name);
        expect(a.length).toBe(b.length);
        expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer)), name).toBe(true);
      }
      expect(errorOf(() => ref.readFloat32('model.layers.1.self_attn.q_proj.weight'))).toMatchObject({ code: 'E_DTYPE', tensor: 'model.layers.1.self_attn.q_proj.weight' });
    } finally {
      src.close();
      ref.close();
    }
  });

  it('reads rows and row chunks of an int8 weight', () => {
    const ck = Checkpoint.open(path.join(TINY, 'reference/w8a16-rtn'));
    try {
      const name = 'model.layers.1.self_attn.q_proj.weight';
      expect(ck.get(name).shape).toEqual([128, 128]);
      expect(ck.rowBytes(name)).toBe(128);
      expect(ck.rowBytes('model.layers.1.self_attn.q_proj.weight_scale')).toBe(4);
      const row3 = ck.readRows(name, 3, 1);
      // First codes of row 3 (read with Python struct).
      expect([...new Int8Array(row3.buffer, 0, 8)]).toEqual([74, -32, -27, -91, 65, -23, 22, -84]);
      const whole = ck.readRows(name, 0, 128);
      expect(Buffer.from(whole.subarray(3 * 128, 4 * 128)).equals(Buffer.from(row3))).toBe(true);
      const chunks = [...ck.rowChunks(name, 1000)];
      expect(chunks[0]).toEqual({ rowStart: 0, rowCount: 7 });
      expect(chunks.reduce((s, c) => s + c.rowCount, 0)).toBe(128);
      const buf = new Uint8Array(7 * 128 + 5);
      const got = ck.readRows(name, 7, 7, buf);
      expect(got.buffer).toBe(buf.buffer);
      expect(Buffer.from(got).equals(Buffer.from(whole.subarray(7 * 128, 14 * 128)))).toBe(true);
      // A chunk limit below one row still yields one row per chunk.
      expect([...ck.rowChunks(name, 1)].length).toBe(128);
      expect(errorOf(() => ck.readRows(name, 127, 2)).code).toBe('E_BOUNDS');
      expect(errorOf(() => ck.readRows(name, 0, 2, new Uint8Array(10))).code).toBe('E_BOUNDS');
      const missing = errorOf(() => ck.get('model.layers.9.self_attn.q_proj.weight'));
      expect(missing.code).toBe('E_TENSOR_MISSING');
      expect(missing.message).toContain(path.join(TINY, 'reference/w8a16-rtn'));
      expect(ck.has(name)).toBe(true);
    } finally {
      ck.close();
    }
  });

  it('stories260K (tied) has no lm_head.weight in model.safetensors', () => {
    const ck = Checkpoint.open(STORIES);
    expect(ck.has('lm_head.weight')).toBe(false);
    expect(ck.tensors.every((t) => t.dtype === 'F32')).toBe(true);
    ck.close();
  });
});

describe('Checkpoint with an index', () => {
  const tensors: PlannedTensor[] = [
    { name: 'model.embed_tokens.weight', dtype: 'F16', shape: [16, 8] },
    { name: 'model.layers.0.w', dtype: 'I8', shape: [8, 8] },
    { name: 'model.layers.0.s', dtype: 'F32', shape: [8, 1] },
    { name: 'model.norm.weight', dtype: 'BF16', shape: [8] },
  ];

  it('opens the shards named by *.safetensors.index.json and reads across them', () => {
    const { dir, plan, data } = writeSharded(tensors, 100, 'quant_model_weight_w8a16');
    expect(plan.files.length).toBe(3);
    const ck = Checkpoint.open(dir);
    try {
      expect(ck.indexPath).toBe(path.join(dir, 'quant_model_weight_w8a16.safetensors.index.json'));
      expect(ck.tensors.map((t) => t.name).sort()).toEqual(tensors.map((t) => t.name).sort());
      for (const t of tensors) {
        expect(ck.get(t.name).file).toBe(path.join(dir, plan.locate(t.name).fileName));
        const rows = ck.get(t.name).shape[0];
        expect(Buffer.from(ck.readRows(t.name, 0, rows)).equals(Buffer.from(data.get(t.name)!))).toBe(true);
      }
      // BF16 bits 0xABCD decode to float32 bits 0xABCD0000.
      const norm = ck.readFloat32('model.norm.weight');
      const raw = data.get('model.norm.weight')!;
      expect(new Uint32Array(norm.buffer)[0]).toBe(((raw[1] << 8) | raw[0]) * 65536);
    } finally {
      ck.close();
    }
  });

  it('E_SHARD_MISSING names the index and the shard', () => {
    const { dir, plan } = writeSharded(tensors, 100);
    fs.rmSync(path.join(dir, plan.files[1].fileName));
    const err = errorOf(() => Checkpoint.open(dir));
    expect(err.code).toBe('E_SHARD_MISSING');
    expect(err.message).toContain('model.safetensors.index.json');
    expect(err.message).toContain(plan.files[1].fileName);
  });

  it('E_TENSOR_MISSING names the tensor and the shard the index puts it in', () => {
    const { dir, plan } = writeSharded(tensors, 100);
    const indexPath = path.join(dir, plan.indexFileName!);
    const index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
    index.weight_map['model.layers.0.w'] = plan.files[2].fileName;
    fs.writeFileSync(indexPath, JSON.stringify(index));
    const err = errorOf(() => Checkpoint.open(dir));
    expect(err).toMatchObject({ code: 'E_TENSOR_MISSING', tensor: 'model.layers.0.w' });
    expect(err.message).toContain(plan.files[2].fileName);
  });

  it('rejects malformed indexes: bad JSON (with line:column), no weight_map, shard outside the dir', () => {
    const { dir, plan } = writeSharded(tensors, 100);
    const indexPath = path.join(dir, plan.indexFileName!);
    fs.writeFileSync(indexPath, '{\n  "weight_map": {\n    "a": "b",\n  }\n}');
    const bad = errorOf(() => Checkpoint.open(dir));
    expect(bad.code).toBe('E_INDEX_JSON');
    expect(bad.message).toContain(':4:3');
    fs.writeFileSync(indexPath, '{"metadata": {}}');
    expect(errorOf(() => Checkpoint.open(dir)).code).toBe('E_INDEX');
    fs.writeFileSync(indexPath, '{"weight_map": {"a": "../x.safetensors"}}');
    expect(errorOf(() => Checkpoint.open(dir))).toMatchObject({ code: 'E_INDEX', tensor: 'a' });
  });

  it('resolves which file to open: model.safetensors first, otherwise one candidate only', () => {
    const empty = makeTempDir();
    expect(errorOf(() => Checkpoint.open(empty)).code).toBe('E_NO_WEIGHTS');
    expect(errorOf(() => Checkpoint.open(path.join(empty, 'none'))).code).toBe('E_DIR_MISSING');
    const two = makeTempDir();
    for (const n of ['a.safetensors', 'b.safetensors']) fs.copyFileSync(path.join(STORIES, 'model.safetensors'), path.join(two, n));
    expect(errorOf(() => Checkpoint.open(two)).code).toBe('E_AMBIGUOUS');
    fs.copyFileSync(path.join(STORIES, 'model.safetensors'), path.join(two, 'model.safetensors'));
    const ck = Checkpoint.open(two);
    expect(ck.files.map((f) => path.basename(f.path))).toEqual(['model.safetensors']);
    ck.close();
  });
});
