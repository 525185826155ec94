import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { DType } from '@w8a16/quant-core';
import { afterAll, describe, expect, it } from 'vitest';
import { FormatError } from './errors';
import { SafetensorsFile } from './safetensors-read';
import { planSafetensors, SafetensorsWriter, type PlannedTensor } from './safetensors-write';
import { STORIES, TINY, WEIGHT_FILE, makeTempDir, removeTempDirs, seededBytes } from './test-support';

afterAll(removeTempDirs);

const FIXTURE_FILES = [
  path.join(TINY, 'reference/w8a16-rtn', WEIGHT_FILE),
  path.join(TINY, 'reference/w8a16-m3-c8', WEIGHT_FILE),
  path.join(STORIES, 'reference/w8a16-rtn', WEIGHT_FILE),
  path.join(TINY, 'model.safetensors'),
  path.join(STORIES, 'model.safetensors'),
];

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A fixed permutation (seeded) so emission order never equals the file's data order. */
function shuffled<T>(xs: readonly T[], seed: number): T[] {
  const out = [...xs];
  const r = seededBytes(out.length * 4, seed);
  for (let i = out.length - 1; i > 0; i--) {
    const j = new DataView(r.buffer).getUint32(4 * i, true) % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

function errorOf(f: () => unknown): FormatError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(FormatError);
    return e as FormatError;
  }
  throw new Error('expected a FormatError');
}

describe('planSafetensors reproduces safetensors.torch.save_file headers', () => {
  for (const file of FIXTURE_FILES) {
    it(`rebuilds the header of ${path.basename(path.dirname(file))}/${path.basename(file)} byte for byte`, () => {
      const f = SafetensorsFile.open(file);
      const list: PlannedTensor[] = shuffled(f.tensors, 7).map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape }));
      const plan = planSafetensors(list, { baseName: 'quant_model_weight_w8a16', metadata: f.metadata });
      f.close();
      expect(plan.files.length).toBe(1);
      expect(plan.indexFileName).toBeUndefined();
      const pf = plan.files[0];
      expect(pf.fileName).toBe('quant_model_weight_w8a16.safetensors');
      const bytes = fs.readFileSync(file);
      expect(pf.totalBytes).toBe(bytes.length);
      expect(Buffer.from(pf.header).equals(bytes.subarray(0, pf.header.length))).toBe(true);
    });
  }

  it('rewrites a fixture through SafetensorsWriter (chunks out of order) into an identical file', () => {
    const src = FIXTURE_FILES[1];
    const f = SafetensorsFile.open(src);
    const plan = planSafetensors(shuffled(f.tensors, 3).map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape })), { baseName: 'quant_model_weight_w8a16' });
    const dir = makeTempDir();
    const w = SafetensorsWriter.create(dir, plan);
    // Every tensor in up to three chunks, written last chunk first, tensors in reverse order.
    for (const t of [...f.tensors].reverse()) {
      const cuts = [0, Math.floor(t.byteLength / 3), Math.floor((2 * t.byteLength) / 3), t.byteLength];
      for (let k = 2; k >= 0; k--) {
        const chunk = new Uint8Array(cuts[k + 1] - cuts[k]);
        f.readInto(t, chunk, cuts[k]);
        w.write(t.name, chunk, cuts[k]);
      }
    }
    f.close();
    const res = w.finish();
    expect(res.files).toEqual([path.join(dir, 'quant_model_weight_w8a16.safetensors')]);
    expect(res.totalBytes).toBe(fs.statSync(src).size);
    expect(sha256(fs.readFileSync(res.files[0]))).toBe(sha256(fs.readFileSync(src)));
  });
});

describe('planSafetensors layout rules', () => {
  it('orders by dtype descending in the Rust Dtype enum order, then by UTF-8 bytes of the name', () => {
    const dtypes: DType[] = ['BOOL', 'U8', 'I8', 'I16', 'U16', 'F16', 'BF16', 'I32', 'U32', 'F32', 'F64', 'I64', 'U64'];
    const plan = planSafetensors(
      dtypes.map((d) => ({ name: `t_${d}`, dtype: d, shape: [3] })),
      { baseName: 'x' },
    );
    expect(plan.files[0].tensors.map((t) => t.dtype)).toEqual(['U64', 'I64', 'F64', 'F32', 'U32', 'I32', 'BF16', 'F16', 'U16', 'I16', 'I8', 'U8', 'BOOL']);
    // U+FFFF sorts before U+10000 in UTF-8 (EF.. < F0..) although JS string order (UTF-16) says otherwise.
    const names = planSafetensors(
      ['b', 'a\u{10000}', 'a\uffff', 'B', 'a'].map((name) => ({ name, dtype: 'F32' as const, shape: [1] })),
      { baseName: 'x' },
    ).files[0].tensors.map((t) => t.name);
    expect(names).toEqual(['B', 'a', 'a\uffff', 'a\u{10000}', 'b']);
  });

  it('writes compact JSON, __metadata__ first, escapes like serde_json, pads to a multiple of 8', () => {
    const plan = planSafetensors([{ name: 'w"\n\u00e9', dtype: 'I8', shape: [2, 0] }, { name: 's', dtype: 'F16', shape: [] }], {
      baseName: 'x',
      metadata: { format: 'pt' },
    });
    const pf = plan.files[0];
    const len = Number(new DataView(pf.header.buffer).getBigUint64(0, true));
    expect(pf.header.length).toBe(8 + len);
    expect(pf.header.length % 8).toBe(0);
    const text = new TextDecoder().decode(pf.header.subarray(8));
    expect(text.trimEnd()).toBe('{"__metadata__":{"format":"pt"},"s":{"dtype":"F16","shape":[],"data_offsets":[0,2]},"w\\"\\n\u00e9":{"dtype":"I8","shape":[2,0],"data_offsets":[2,2]}}');
    expect(text.slice(text.trimEnd().length)).toMatch(/^ {0,7}$/);
    // The crate's own test vector: {} padded to 8 bytes.
    expect([...planSafetensors([], { baseName: 'x' }).files[0].header]).toEqual([8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32]);
  });

  it('rejects duplicate names, bad dtypes, bad shapes and the reserved name', () => {
    const t = (name: string, dtype = 'F32', shape: unknown = [1]) => ({ name, dtype, shape }) as PlannedTensor;
    expect(errorOf(() => planSafetensors([t('a'), t('a')], { baseName: 'x' }))).toMatchObject({ code: 'E_DUPLICATE_TENSOR', tensor: 'a' });
    expect(errorOf(() => planSafetensors([t('a', 'F8')], { baseName: 'x' })).code).toBe('E_DTYPE');
    expect(errorOf(() => planSafetensors([t('a', 'F32', [-1])], { baseName: 'x' })).code).toBe('E_SHAPE');
    expect(errorOf(() => planSafetensors([t('__metadata__')], { baseName: 'x' })).code).toBe('E_NAME');
    expect(errorOf(() => planSafetensors([t('bad\ud800')], { baseName: 'x' })).code).toBe('E_NAME');
    expect(errorOf(() => planSafetensors([t('a')], { baseName: 'x', partFileSizeBytes: 0 })).code).toBe('E_PLAN');
    expect(errorOf(() => planSafetensors([t('a')], { baseName: '../x' })).code).toBe('E_PLAN');
  });
});

describe('sharding (msModelSlim BufferedSafetensorsWriter)', () => {
  const u8 = (name: string, n: number): PlannedTensor => ({ name, dtype: 'U8', shape: [n] });
  const groups = (sizes: number[], limit: number) =>
    planSafetensors(sizes.map((n, i) => u8(`t${i}`, n)), { baseName: 'm', partFileSizeBytes: limit }).files.map((f) =>
      f.tensors.map((t) => t.name).sort(),
    );

  it('starts a new shard when the next tensor would make the shard reach or exceed the limit', () => {
    expect(groups([10, 10, 10], 25)).toEqual([['t0', 't1'], ['t2']]);
    expect(groups([10, 10, 10], 20)).toEqual([['t0'], ['t1'], ['t2']]);
    expect(groups([10, 10, 10], 21)).toEqual([['t0', 't1'], ['t2']]);
    // A tensor at or above the limit sits alone.
    expect(groups([5, 50, 5], 20)).toEqual([['t0'], ['t1'], ['t2']]);
    expect(groups([50, 1], 50)).toEqual([['t0'], ['t1']]);
    expect(groups([3, 3, 3], 100)).toEqual([['t0', 't1', 't2']]);
  });

  it('names shards -0000i-of-0000N, lays each out like save_file, and indexes in emission order', () => {
    const tensors: PlannedTensor[] = [
      { name: 'z.weight', dtype: 'I8', shape: [4, 4] },
      { name: 'z.weight_scale', dtype: 'F32', shape: [4, 1] },
      { name: 'a.weight', dtype: 'F32', shape: [4, 4] },
      { name: 'b.weight', dtype: 'F16', shape: [8] },
    ];
    const plan = planSafetensors(tensors, { baseName: 'quant_model_weight_w8a16', partFileSizeBytes: 40 });
    expect(plan.files.map((f) => f.fileName)).toEqual([
      'quant_model_weight_w8a16-00001-of-00003.safetensors',
      'quant_model_weight_w8a16-00002-of-00003.safetensors',
      'quant_model_weight_w8a16-00003-of-00003.safetensors',
    ]);
    expect(plan.files[0].tensors.map((t) => t.name)).toEqual(['z.weight_scale', 'z.weight']);
    expect(plan.totalTensorBytes).toBe(16 + 16 + 64 + 16);
    expect(plan.indexFileName).toBe('quant_model_weight_w8a16.safetensors.index.json');
    expect(plan.indexJson).toBe(
      '{\n  "metadata": {\n    "total_size": 112\n  },\n  "weight_map": {\n' +
        '    "z.weight": "quant_model_weight_w8a16-00001-of-00003.safetensors",\n' +
        '    "z.weight_scale": "quant_model_weight_w8a16-00001-of-00003.safetensors",\n' +
        '    "a.weight": "quant_model_weight_w8a16-00002-of-00003.safetensors",\n' +
        '    "b.weight": "quant_model_weight_w8a16-00003-of-00003.safetensors"\n  }\n}',
    );
    expect(plan.locate('a.weight')).toEqual({ fileName: plan.files[1].fileName, byteOffset: plan.files[1].header.length, byteLength: 64 });
    expect(errorOf(() => plan.locate('nope')).code).toBe('E_TENSOR_MISSING');
  });

  it('writes shards and the index; every shard reads back with the right bytes', () => {
    const tensors: PlannedTensor[] = [
      { name: 'l.0.w', dtype: 'I8', shape: [16, 8] },
      { name: 'l.0.s', dtype: 'F32', shape: [16, 1] },
      { name: 'l.1.w', dtype: 'I8', shape: [16, 8] },
      { name: 'l.1.s', dtype: 'F32', shape: [16, 1] },
      { name: 'norm', dtype: 'BF16', shape: [8] },
    ];
    const plan = planSafetensors(tensors, { baseName: 'q', partFileSizeBytes: 150 });
    const dir = makeTempDir();
    const w = SafetensorsWriter.create(dir, plan);
    const data = new Map(tensors.map((t, i) => [t.name, seededBytes(plan.locate(t.name).byteLength, 100 + i)]));
    for (const [name, bytes] of data) w.write(name, bytes);
    const res = w.finish();
    expect(res.files.map((p) => path.basename(p))).toEqual([...plan.files.map((f) => f.fileName), 'q.safetensors.index.json']);
    expect(fs.readFileSync(path.join(dir, 'q.safetensors.index.json'), 'utf8')).toBe(plan.indexJson);
    for (const pf of plan.files) {
      const f = SafetensorsFile.open(path.join(dir, pf.fileName));
      expect(f.tensors.map((t) => t.name)).toEqual(pf.tensors.map((t) => t.name));
      for (const t of f.tensors) {
        const back = new Uint8Array(t.byteLength);
        f.readInto(t, back);
        expect(sha256(back)).toBe(sha256(data.get(t.name)!));
      }
      f.close();
    }
  });
});

describe('SafetensorsWriter', () => {
  const tensors: PlannedTensor[] = [
    { name: 'big', dtype: 'F32', shape: [64, 32] },
    { name: 'small', dtype: 'I8', shape: [5] },
    { name: 'empty', dtype: 'F16', shape: [0, 4] },
  ];

  it('accepts chunks at any offset in any order, including bytes a "worker" wrote via locate + markWritten', () => {
    const plan = planSafetensors(tensors, { baseName: 'w' });
    const dir = makeTempDir();
    const w = SafetensorsWriter.create(dir, plan);
    const big = seededBytes(64 * 32 * 4, 1);
    const rowBytes = 32 * 4;
    const order = shuffled([...Array(64).keys()], 9);
    // Half the rows by write(), half written directly into the file like a worker thread would.
    const loc = w.locate('big');
    const fd = fs.openSync(loc.path, 'r+');
    for (const r of order) {
      const chunk = big.subarray(r * rowBytes, (r + 1) * rowBytes);
      if (r % 2 === 0) w.write('big', chunk, r * rowBytes);
      else {
        fs.writeSync(fd, chunk, 0, chunk.length, loc.byteOffset + r * rowBytes);
        w.markWritten('big', r * rowBytes, rowBytes);
      }
    }
    fs.closeSync(fd);
    w.write('small', new Uint8Array([1, 2, 3]), 2);
    expect(w.missing('small')).toEqual([[0, 2]]);
    w.write('small', new Uint8Array([9, 8]), 0);
    w.finish();
    const f = SafetensorsFile.open(path.join(dir, 'w.safetensors'));
    const back = new Uint8Array(big.length);
    f.readInto(f.get('big')!, back);
    expect(sha256(back)).toBe(sha256(big));
    const small = new Uint8Array(5);
    f.readInto(f.get('small')!, small);
    expect([...small]).toEqual([9, 8, 1, 2, 3]);
    f.close();
  });

  it('E_INCOMPLETE names the tensor and the first missing range; the writer stays usable', () => {
    const plan = planSafetensors(tensors, { baseName: 'w' });
    const dir = makeTempDir();
    const w = SafetensorsWriter.create(dir, plan);
    w.write('big', new Uint8Array(100), 0);
    w.write('big', new Uint8Array(8000), 192);
    w.write('small', new Uint8Array(5));
    const err = errorOf(() => w.finish());
    expect(err).toMatchObject({ code: 'E_INCOMPLETE', tensor: 'big', file: path.join(dir, 'w.safetensors') });
    expect(err.message).toContain('bytes [100, 192) of 8192');
    w.write('big', new Uint8Array(92), 100);
    expect(w.finish().files).toEqual([path.join(dir, 'w.safetensors')]);
    expect(errorOf(() => w.write('small', new Uint8Array(1))).code).toBe('E_CLOSED');
  });

  it('E_BOUNDS for writes outside the tensor, E_TENSOR_MISSING for unplanned names', () => {
    const w = SafetensorsWriter.create(makeTempDir(), planSafetensors(tensors, { baseName: 'w' }));
    expect(errorOf(() => w.write('small', new Uint8Array(2), 4))).toMatchObject({ code: 'E_BOUNDS', tensor: 'small' });
    expect(errorOf(() => w.markWritten('small', -1, 1)).code).toBe('E_BOUNDS');
    expect(errorOf(() => w.write('nope', new Uint8Array(1))).code).toBe('E_TENSOR_MISSING');
    w.abort();
    expect(errorOf(() => w.write('small', new Uint8Array(1))).code).toBe('E_CLOSED');
  });

  it('never overwrites: E_EXISTS when a planned file or the index exists, creating nothing', () => {
    const dir = makeTempDir();
    const plan = planSafetensors(tensors, { baseName: 'w', partFileSizeBytes: 10 });
    fs.writeFileSync(path.join(dir, plan.files[1].fileName), 'x');
    expect(errorOf(() => SafetensorsWriter.create(dir, plan)).code).toBe('E_EXISTS');
    expect(fs.readdirSync(dir)).toEqual([plan.files[1].fileName]);
    const dir2 = makeTempDir();
    fs.writeFileSync(path.join(dir2, plan.indexFileName!), 'x');
    expect(errorOf(() => SafetensorsWriter.create(dir2, plan)).code).toBe('E_EXISTS');
  });

  it('sets each file to its final length at create time and applies finalMode at finish', () => {
    const dir = makeTempDir();
    const plan = planSafetensors([{ name: 'x', dtype: 'U8', shape: [3] }], { baseName: 'w' });
    const w = SafetensorsWriter.create(dir, plan, { finalMode: 0o400 });
    const p = path.join(dir, 'w.safetensors');
    expect(fs.statSync(p).size).toBe(plan.files[0].totalBytes);
    w.write('x', new Uint8Array([1, 2, 3]));
    w.finish();
    expect(fs.statSync(p).mode & 0o777).toBe(0o400);
  });
});
