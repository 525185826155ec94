import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DESCRIPTION_FILE_NAME, LEGACY_DESCRIPTION_FILE_NAME, readDescription, serializeDescription } from './description';
import { FormatError } from './errors';
import { REFERENCE_DIRS, makeTempDir, removeTempDirs } from './test-support';

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

describe('serializeDescription', () => {
  for (const dir of REFERENCE_DIRS) {
    it(`re-serializes ${path.relative(path.resolve(dir, '../../..'), dir)}/${DESCRIPTION_FILE_NAME} byte for byte`, () => {
      const file = path.join(dir, DESCRIPTION_FILE_NAME);
      const text = fs.readFileSync(file, 'utf8');
      const entries = Object.entries(JSON.parse(text) as Record<string, string | number>);
      expect(serializeDescription(entries)).toBe(text);
      // And through readDescription, which keeps the order itself.
      const read = readDescription(dir);
      expect(read.path).toBe(file);
      expect([...read.entries.keys()].slice(0, 2)).toEqual(['version', 'model_quant_type']);
      expect(serializeDescription([...read.entries])).toBe(text);
    });
  }

  it('writes numbers, escapes non-ASCII like Python and rejects duplicates and bad values', () => {
    expect(serializeDescription([['version', '1.0.0'], ['group_size', 64], ['t\u00e9', 'FLOAT']])).toBe(
      '{\n  "version": "1.0.0",\n  "group_size": 64,\n  "t\\u00e9": "FLOAT"\n}',
    );
    expect(serializeDescription([])).toBe('{}');
    expect(errorOf(() => serializeDescription([['a', 'X'], ['a', 'Y']]))).toMatchObject({ code: 'E_DESCRIPTION', tensor: 'a' });
    expect(errorOf(() => serializeDescription([['a', NaN]])).code).toBe('E_DESCRIPTION');
  });
});

describe('readDescription', () => {
  it(`falls back to ${LEGACY_DESCRIPTION_FILE_NAME}`, () => {
    const dir = makeTempDir();
    fs.writeFileSync(path.join(dir, LEGACY_DESCRIPTION_FILE_NAME), '{"model_quant_type": "W8A16", "x.weight": "W8A16"}');
    const d = readDescription(dir);
    expect(d.path).toBe(path.join(dir, LEGACY_DESCRIPTION_FILE_NAME));
    expect([...d.entries]).toEqual([['model_quant_type', 'W8A16'], ['x.weight', 'W8A16']]);
  });

  it('errors name the file: missing, bad JSON (line:column), duplicate key, non-scalar value', () => {
    const dir = makeTempDir();
    expect(errorOf(() => readDescription(dir)).code).toBe('E_DESCRIPTION_MISSING');
    const file = path.join(dir, DESCRIPTION_FILE_NAME);
    const cases: [string, string, string][] = [
      ['{\n  "a": "FLOAT"\n  "b": "FLOAT"\n}', 'E_DESCRIPTION_JSON', ':3:3'],
      ['{"a": "FLOAT", "a": "W8A16"}', 'E_DESCRIPTION_JSON', 'duplicate key "a"'],
      ['{"metadata": {}}', 'E_DESCRIPTION', '"metadata"'],
      ['["a"]', 'E_DESCRIPTION', 'top level'],
    ];
    for (const [text, code, fragment] of cases) {
      fs.writeFileSync(file, text);
      const err = errorOf(() => readDescription(dir));
      expect(err.code, text).toBe(code);
      expect(err.file).toBe(file);
      expect(err.message).toContain(fragment);
    }
  });
});
