// Calibration data: JSON Lines as msModelSlim reads them, inline texts, --tokenizer_args, and the errors
// that name the file and line.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { calibSamplesFromTexts, calibTokenizer, capCalibSamples, readCalibFile, type BaseTokenizer } from './calib-data';

const dir = mkdtempSync(join(tmpdir(), 'w8a16-calib-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

/** A stand-in tokenizer: BOS 1, then one id per character (its code mod 50, plus 3); EOS 2. */
const toy: BaseTokenizer = {
  bosId: 1,
  eosId: 2,
  encode: (text) => [1, ...[...text].map((ch) => 3 + (ch.charCodeAt(0) % 50))],
};

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return (e as Error).message;
  }
  return '';
}

describe('readCalibFile', () => {
  it('reads input_ids lines as they are and tokenizes text lines, skipping blank lines', () => {
    const p = file('mixed.jsonl', '{"input_ids": [1, 5, 9]}\n\n{"id": 3, "inputs_pretokenized": "ab"}\n');
    const s = readCalibFile(p, 100, toy);
    expect(s.map((x) => Array.from(x.ids))).toEqual([[1, 5, 9], [1, 3 + 97 % 50, 3 + 98 % 50]]);
    expect(s.map((x) => x.line)).toEqual([1, 3]);
    expect(s[1].where).toBe(`${p}:3`);
  });

  it('names file:line for a line that is neither text nor ids', () => {
    const p = file('neither.jsonl', '{"input_ids": [1]}\n{"text": "hello"}\n');
    expect(codeOf(() => readCalibFile(p, 100, toy))).toBe('E_CALIB_LINE');
    expect(messageOf(() => readCalibFile(p, 100, toy))).toContain(`${p}:2`);
  });

  it('names file:line for a text line when the checkpoint has no tokenizer', () => {
    const p = file('text.jsonl', '{"input_ids": [1, 2]}\n{"inputs_pretokenized": "hi"}\n');
    expect(codeOf(() => readCalibFile(p, 100))).toBe('E_NO_TOKENIZER');
    expect(messageOf(() => readCalibFile(p, 100))).toContain(`${p}:2`);
  });

  it('rejects ids outside the vocabulary, non-JSON lines, an empty file and a missing file', () => {
    expect(codeOf(() => readCalibFile(file('big.jsonl', '{"input_ids": [1, 100]}\n'), 100))).toBe('E_CALIB_LINE');
    expect(messageOf(() => readCalibFile(file('big2.jsonl', '{"input_ids": [1, 100]}\n'), 100))).toMatch(/input_ids\[1\] = 100/);
    expect(codeOf(() => readCalibFile(file('bad.jsonl', '{"input_ids": [1]\n'), 100))).toBe('E_CALIB_LINE');
    expect(codeOf(() => readCalibFile(file('empty.jsonl', '\n\n'), 100))).toBe('E_CALIB_FILE');
    expect(codeOf(() => readCalibFile(join(dir, 'absent.jsonl'), 100))).toBe('E_CALIB_FILE');
  });
});

describe('--tokenizer_args and inline texts', () => {
  it('honours add_bos_token and add_eos_token; padding keys change nothing for one unpadded text', () => {
    const warnings: string[] = [];
    const plain = calibTokenizer(toy, { padding_side: 'left', pad_token: '<unk>' }, (m) => warnings.push(m));
    expect(plain.encode('a')).toEqual([1, 3 + 97 % 50]);
    expect(calibTokenizer(toy, { add_bos_token: false }).encode('a')).toEqual([3 + 97 % 50]);
    expect(calibTokenizer(toy, { add_eos_token: true }).encode('a')).toEqual([1, 3 + 97 % 50, 2]);
    expect(warnings).toEqual([]);
  });

  it('warns about keys calibration does not use and rejects non-boolean switches', () => {
    const warnings: string[] = [];
    calibTokenizer(toy, { max_length: 8 }, (m) => warnings.push(m));
    expect(warnings.join('\n')).toContain('max_length');
    expect(codeOf(() => calibTokenizer(toy, { add_bos_token: 'no' }))).toBe('E_USAGE');
  });

  it('tokenizes --calib_texts one by one, and needs a tokenizer', () => {
    const s = calibSamplesFromTexts(['ab', 'c'], 100, toy);
    expect(s.map((x) => x.ids.length)).toEqual([3, 2]);
    expect(s[1].where).toBe('--calib_texts[1]');
    expect(codeOf(() => calibSamplesFromTexts(['ab'], 100))).toBe('E_NO_TOKENIZER');
  });

  it('cuts a sample above the token limit and says so', () => {
    const warnings: string[] = [];
    const s = capCalibSamples([{ line: 4, where: 'f:4', ids: new Int32Array(10) }], (m) => warnings.push(m), 6);
    expect(s[0].ids.length).toBe(6);
    expect(warnings[0]).toContain('f:4');
  });
});
