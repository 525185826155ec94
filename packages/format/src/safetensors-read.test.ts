import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FormatError } from './errors';
import { SAFETENSORS_LIMITS, SafetensorsFile } from './safetensors-read';
import { STORIES, TINY, WEIGHT_FILE, makeTempDir, rawSafetensors, removeTempDirs, writeTemp } from './test-support';

afterAll(removeTempDirs);

function openError(bytes: Uint8Array | string): FormatError {
  const file = writeTemp(makeTempDir(), 'bad.safetensors', bytes);
  try {
    SafetensorsFile.open(file).close();
  } catch (e) {
    expect(e).toBeInstanceOf(FormatError);
    const err = e as FormatError;
    expect(err.file).toBe(file);
    expect(err.message).toContain(file);
    return err;
  }
  throw new Error('expected SafetensorsFile.open to throw');
}

const entry = (dtype: string, shape: unknown, offsets: unknown) => ({ dtype, shape, data_offsets: offsets });
const header = (o: unknown) => JSON.stringify(o);

describe('SafetensorsFile on the fixtures', () => {
  const cases: [string, number, Record<string, number>, Record<string, string> | undefined][] = [
    [path.join(TINY, 'model.safetensors'), 39, { F16: 39 }, { format: 'pt' }],
    [path.join(STORIES, 'model.safetensors'), 47, { F32: 47 }, { format: 'pt' }],
    [path.join(TINY, 'reference/w8a16-rtn', WEIGHT_FILE), 81, { F32: 60, I8: 21 }, undefined],
    [path.join(TINY, 'reference/w8a16-m3-c8', WEIGHT_FILE), 106, { F32: 85, I8: 21 }, undefined],
    [path.join(STORIES, 'reference/w8a16-rtn', WEIGHT_FILE), 118, { F32: 83, I8: 35 }, undefined],
  ];
  for (const [file, count, dtypes, metadata] of cases) {
    it(`opens ${path.relative(path.dirname(path.dirname(file)), file)}: ${count} tensors tiling the data section`, () => {
      const f = SafetensorsFile.open(file);
      try {
        expect(f.tensors.length).toBe(count);
        expect(f.metadata).toEqual(metadata);
        const seen: Record<string, number> = {};
        for (const t of f.tensors) seen[t.dtype] = (seen[t.dtype] ?? 0) + 1;
        expect(seen).toEqual(dtypes);
        let at = f.dataStart;
        for (const t of f.tensors) {
          expect(t.file).toBe(file);
          expect(t.byteOffset).toBe(at);
          at += t.byteLength;
        }
        expect(at).toBe(fs.statSync(file).size);
        expect(f.dataStart % 8).toBe(0);
      } finally {
        f.close();
      }
    });
  }

  it('reads tensor bytes by position (model.norm.weight of the fp16 model)', () => {
    const f = SafetensorsFile.open(path.join(TINY, 'model.safetensors'));
    try {
      const t = f.get('model.norm.weight')!;
      expect(t).toMatchObject({ dtype: 'F16', shape: [128], byteLength: 256 });
      const out = new Uint8Array(4);
      f.readInto(t, out, 2);
      // fp16 values 0.97216796875 and 1.19140625 (elements 1 and 2, from Python struct '<e').
      const v = new DataView(out.buffer);
      expect([v.getUint16(0, true), v.getUint16(2, true)]).toEqual([0x3bc7, 0x3cc4]);
      expect(() => f.readInto(t, new Uint8Array(2), 255)).toThrow(expect.objectContaining({ code: 'E_BOUNDS', tensor: 'model.norm.weight' }));
      expect(f.get('nope')).toBeUndefined();
      // A copy of the info works; an info of another file or a forged range does not.
      f.readInto({ ...t }, new Uint8Array(2));
      expect(() => f.readInto({ ...t, byteOffset: t.byteOffset + 2 }, new Uint8Array(2))).toThrow(expect.objectContaining({ code: 'E_TENSOR_MISSING' }));
      expect(() => f.readInto({ ...t, file: '/elsewhere.safetensors' }, new Uint8Array(2))).toThrow(expect.objectContaining({ code: 'E_TENSOR_MISSING' }));
    } finally {
      f.close();
    }
    expect(() => f.readInto(f.tensors[0], new Uint8Array(1))).toThrow(expect.objectContaining({ code: 'E_CLOSED' }));
  });
});

describe('SafetensorsFile validation (one code per defect)', () => {
  const ok = header({ a: entry('F32', [2], [0, 8]) });

  it('accepts a minimal valid file and an empty one', () => {
    const dir = makeTempDir();
    const f = SafetensorsFile.open(writeTemp(dir, 'ok.safetensors', rawSafetensors(ok, 8)));
    expect(f.tensors.map((t) => t.name)).toEqual(['a']);
    f.close();
    const e = SafetensorsFile.open(writeTemp(dir, 'empty.safetensors', rawSafetensors('{}')));
    expect(e.tensors).toEqual([]);
    e.close();
  });

  it('E_TRUNCATED: file shorter than 8 bytes', () => {
    const err = openError(new Uint8Array(5));
    expect(err.code).toBe('E_TRUNCATED');
    expect(err.message).toContain('at least 8 bytes');
  });

  it('E_HEADER_JSON: header length 0', () => {
    expect(openError(rawSafetensors('', 0, 0n)).code).toBe('E_HEADER_JSON');
  });

  it('E_HEADER_TOO_LARGE: header length above MAX_HEADER_BYTES (checked before reading it)', () => {
    const err = openError(rawSafetensors(ok, 8, BigInt(SAFETENSORS_LIMITS.MAX_HEADER_BYTES) + 1n));
    expect(err.code).toBe('E_HEADER_TOO_LARGE');
    expect(openError(rawSafetensors(ok, 8, 2n ** 64n - 1n)).code).toBe('E_HEADER_TOO_LARGE');
  });

  it('E_TRUNCATED: header length beyond the end of the file', () => {
    const err = openError(rawSafetensors(ok, 0, 1000n));
    expect(err.code).toBe('E_TRUNCATED');
    expect(err.message).toContain('1000');
  });

  it('E_HEADER_JSON: not JSON, not UTF-8, not an object', () => {
    expect(openError(rawSafetensors('{"a": ', 0)).code).toBe('E_HEADER_JSON');
    expect(openError(rawSafetensors('[1, 2]  ', 0)).code).toBe('E_HEADER_JSON');
    expect(openError(rawSafetensors('null', 0)).code).toBe('E_HEADER_JSON');
    const badUtf8 = rawSafetensors('{"\u00e9": 1}');
    badUtf8[11] = 0xff;
    expect(openError(badUtf8).code).toBe('E_HEADER_JSON');
    expect(openError(rawSafetensors(header({ a: [1] }), 0)).tensor).toBe('a');
  });

  it('E_DTYPE: unknown dtype, naming the tensor', () => {
    const err = openError(rawSafetensors(header({ w: entry('F8_E4M3', [2], [0, 2]) }), 2));
    expect(err).toMatchObject({ code: 'E_DTYPE', tensor: 'w' });
    expect(err.message).toContain('"F8_E4M3"');
  });

  it('E_SHAPE: shape not an array of non-negative safe integers, or too deep', () => {
    for (const shape of ['2', [-1], [1.5], [2 ** 53], null, Array(SAFETENSORS_LIMITS.MAX_RANK + 1).fill(1)]) {
      expect(openError(rawSafetensors(header({ w: entry('U8', shape, [0, 2]) }), 2)), JSON.stringify(shape)).toMatchObject({ code: 'E_SHAPE', tensor: 'w' });
    }
    // Element count overflowing 2^53.
    expect(openError(rawSafetensors(header({ w: entry('F32', [2 ** 30, 2 ** 30, 2 ** 30], [0, 4]) }), 4)).code).toBe('E_SHAPE');
  });

  it('E_OFFSETS: data_offsets not [begin, end] with begin <= end', () => {
    for (const offs of [[0], [4, 0], [0, 4, 8], '0,4', [-4, 0], [0, 4.5], undefined]) {
      expect(openError(rawSafetensors(header({ w: entry('U8', [4], offs) }), 4)), JSON.stringify(offs)).toMatchObject({ code: 'E_OFFSETS', tensor: 'w' });
    }
  });

  it('E_SIZE_MISMATCH: span differs from prod(shape) * dtype bytes', () => {
    const err = openError(rawSafetensors(header({ w: entry('F32', [2, 3], [0, 20]) }), 20));
    expect(err).toMatchObject({ code: 'E_SIZE_MISMATCH', tensor: 'w' });
    expect(err.message).toContain('needs 24 bytes');
  });

  it('E_TRUNCATED: tensor data beyond the end of the file, naming the tensor', () => {
    const h = header({ a: entry('U8', [4], [0, 4]), b: entry('U8', [8], [4, 12]) });
    const err = openError(rawSafetensors(h, 10));
    expect(err).toMatchObject({ code: 'E_TRUNCATED', tensor: 'b' });
  });

  it('E_OVERLAP: overlapping tensors, a hole, or data not starting at 0 (the Rust crate rejects all three)', () => {
    const overlap = openError(rawSafetensors(header({ a: entry('U8', [4], [0, 4]), b: entry('U8', [4], [2, 6]) }), 6));
    expect(overlap).toMatchObject({ code: 'E_OVERLAP', tensor: 'b' });
    expect(overlap.message).toContain('overlaps tensor "a"');
    const hole = openError(rawSafetensors(header({ a: entry('U8', [4], [0, 4]), b: entry('U8', [4], [6, 10]) }), 10));
    expect(hole).toMatchObject({ code: 'E_OVERLAP', tensor: 'b' });
    expect(hole.message).toContain('hole of 2 bytes');
    expect(openError(rawSafetensors(header({ a: entry('U8', [4], [2, 6]) }), 6)).message).toContain('start of the data');
  });

  it('E_TRAILING_DATA: bytes after the last tensor (the crate requires the data to end at end of file)', () => {
    expect(openError(rawSafetensors(ok, 9)).code).toBe('E_TRAILING_DATA');
  });

  it('E_METADATA: __metadata__ not a string-to-string map', () => {
    for (const md of [{ a: 1 }, ['x'], 'x', { a: { b: 'c' } }]) {
      expect(openError(rawSafetensors(header({ __metadata__: md, a: entry('F32', [2], [0, 8]) }), 8)).code).toBe('E_METADATA');
    }
    // null is read as "no metadata", like serde's Option.
    const f = SafetensorsFile.open(writeTemp(makeTempDir(), 'n.safetensors', rawSafetensors(header({ __metadata__: null }))));
    expect(f.metadata).toBeUndefined();
    f.close();
  });

  it('E_FILE_MISSING: no such file', () => {
    expect(() => SafetensorsFile.open(path.join(makeTempDir(), 'none.safetensors'))).toThrow(expect.objectContaining({ code: 'E_FILE_MISSING' }));
  });
});
