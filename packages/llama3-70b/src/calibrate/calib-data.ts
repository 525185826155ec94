// Calibration data as msModelSlim reads it: JSON Lines, one sample per line. A line's
// `inputs_pretokenized` text is tokenized on its own (as quantifier.py does, batch 1), or its
// `input_ids` array is used as is (for checkpoints without a tokenizer). Also inline texts (--calib_texts).

import { readFileSync } from 'node:fs';
import { CliError } from '../cli/errors';

/** What calibration needs of a tokenizer: ids for one text, BOS included as the tokenizer adds it. */
export interface CalibTokenizer {
  encode(text: string): number[];
}

/** The subset of LlamaTokenizer that calibTokenizer wraps. */
export interface BaseTokenizer {
  encode(text: string): number[];
  readonly bosId: number | null;
  readonly eosId: number | null;
}

export interface CalibSample {
  /** 1-based line number in the file (0 for samples given inline). */
  readonly line: number;
  /** Where the sample came from, for messages (`file:line` or `--calib_texts[i]`). */
  readonly where: string;
  readonly ids: Int32Array;
}

/** A calibration sample longer than this is cut (with a warning by the caller): bounds activation memory. */
export const MAX_CALIB_TOKENS = 4096;

/**
 * `--tokenizer_args` keys that cannot change the ids of ONE unpadded sequence (msModelSlim tokenizes each line
 * separately, batch 1): padding and its token, truncation side (no max_length is passed), loader switches.
 */
export const TOKENIZER_ARGS_WITHOUT_EFFECT = ['padding_side', 'pad_token', 'truncation_side', 'use_fast', 'trust_remote_code', 'legacy', 'model_max_length'] as const;

/**
 * The checkpoint's tokenizer as msModelSlim's `AutoTokenizer.from_pretrained(path, **tokenizer_args)` would encode
 * one calibration text: `add_bos_token` / `add_eos_token` are honoured; the keys in TOKENIZER_ARGS_WITHOUT_EFFECT
 * are accepted silently; any other key is reported through `warn` and ignored.
 */
export function calibTokenizer(base: BaseTokenizer, tokenizerArgs: Readonly<Record<string, unknown>>, warn?: (m: string) => void): CalibTokenizer {
  let addBos = true;
  let addEos = false;
  for (const [key, value] of Object.entries(tokenizerArgs)) {
    if (key === 'add_bos_token' || key === 'add_eos_token') {
      if (typeof value !== 'boolean') throw new CliError('E_USAGE', `--tokenizer_args: "${key}" must be true or false, got ${JSON.stringify(value)}`);
      if (key === 'add_bos_token') addBos = value;
      else addEos = value;
    } else if (!(TOKENIZER_ARGS_WITHOUT_EFFECT as readonly string[]).includes(key)) {
      warn?.(`--tokenizer_args: "${key}" is not used by calibration (each text is tokenized alone, unpadded)`);
    }
  }
  return {
    encode(text: string): number[] {
      const ids = base.encode(text);
      if (!addBos && base.bosId !== null && ids[0] === base.bosId) ids.shift();
      if (addEos) {
        if (base.eosId === null) throw new CliError('E_TOKENIZER', '--tokenizer_args asks for add_eos_token, but the tokenizer has no eos token');
        ids.push(base.eosId);
      }
      return ids;
    },
  };
}

function idsFrom(value: unknown, where: string, vocabSize: number): Int32Array {
  if (!Array.isArray(value) || value.length === 0) throw new CliError('E_CALIB_LINE', `${where}: input_ids must be a non-empty array of token ids`);
  const ids = new Int32Array(value.length);
  value.forEach((v, i) => {
    if (!Number.isInteger(v) || v < 0 || v >= vocabSize) {
      throw new CliError('E_CALIB_LINE', `${where}: input_ids[${i}] = ${JSON.stringify(v)} is not a token id in [0, ${vocabSize})`);
    }
    ids[i] = v;
  });
  return ids;
}

function encodeText(text: string, where: string, vocabSize: number, tokenizer: CalibTokenizer | undefined, flag: string): Int32Array {
  if (!tokenizer) {
    throw new CliError('E_NO_TOKENIZER', `${where}: has text but the checkpoint has no tokenizer.json to tokenize it; give input_ids instead (${flag})`);
  }
  const ids = tokenizer.encode(text);
  if (ids.length === 0) throw new CliError('E_CALIB_LINE', `${where}: the text tokenizes to no tokens`);
  return idsFrom(ids, where, vocabSize);
}

/**
 * Reads a calibration file. `tokenizer` is needed only for lines with text; a text line without one is an
 * error naming the line. Blank lines are skipped, as Python's json-lines readers do.
 */
export function readCalibFile(path: string, vocabSize: number, tokenizer?: CalibTokenizer): CalibSample[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new CliError('E_CALIB_FILE', `--calib_file ${path}: cannot read it (${(err as Error).message})`);
  }
  const samples: CalibSample[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '') return;
    const where = `${path}:${i + 1}`;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (err) {
      throw new CliError('E_CALIB_LINE', `${where}: not a JSON object (${(err as Error).message})`);
    }
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new CliError('E_CALIB_LINE', `${where}: expected a JSON object`);
    const rec = obj as Record<string, unknown>;
    if (rec.input_ids !== undefined) {
      samples.push({ line: i + 1, where, ids: idsFrom(rec.input_ids, where, vocabSize) });
    } else if (typeof rec.inputs_pretokenized === 'string') {
      samples.push({ line: i + 1, where, ids: encodeText(rec.inputs_pretokenized, where, vocabSize, tokenizer, 'an "input_ids" array per line') });
    } else {
      throw new CliError('E_CALIB_LINE', `${where}: expected an "inputs_pretokenized" string or an "input_ids" array, found keys ${JSON.stringify(Object.keys(rec))}`);
    }
  });
  if (samples.length === 0) throw new CliError('E_CALIB_FILE', `--calib_file ${path}: no samples`);
  return samples;
}

/** Samples from `--calib_texts`, each tokenized alone (the checkpoint must have a tokenizer). */
export function calibSamplesFromTexts(texts: readonly string[], vocabSize: number, tokenizer?: CalibTokenizer): CalibSample[] {
  if (texts.length === 0) throw new CliError('E_USAGE', '--calib_texts expects at least one text');
  return texts.map((t, i) => {
    const where = `--calib_texts[${i}]`;
    return { line: 0, where, ids: encodeText(t, where, vocabSize, tokenizer, 'use --calib_file with input_ids lines') };
  });
}

/** Cuts samples longer than `maxTokens`, reporting each cut through `warn`. */
export function capCalibSamples(samples: readonly CalibSample[], warn?: (m: string) => void, maxTokens = MAX_CALIB_TOKENS): CalibSample[] {
  return samples.map((s) => {
    if (s.ids.length <= maxTokens) return s;
    warn?.(`${s.where}: ${s.ids.length} tokens, only the first ${maxTokens} are used for calibration`);
    return { ...s, ids: s.ids.slice(0, maxTokens) };
  });
}
