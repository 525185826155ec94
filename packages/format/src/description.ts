// msModelSlim's quant_model_description.json: written exactly as Python json.dump(indent=2) writes it
// (key order kept, no trailing newline) and read back with key order and duplicate keys checked.
// Which keys and values belong in it is the caller's business (spec §4.2); this module only does the file.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { FormatError } from './errors';
import { parseJson, pythonJsonDumps } from './json';

export const DESCRIPTION_FILE_NAME = 'quant_model_description.json';
/** The legacy `safe_tensor` save type's name; MindIE falls back to it (spec §7). */
export const LEGACY_DESCRIPTION_FILE_NAME = 'quant_model_description_w8a16.json';

export function serializeDescription(entries: ReadonlyArray<readonly [string, string | number]>): string {
  const map = new Map<string, string | number>();
  for (const [key, value] of entries) {
    if (typeof key !== 'string') throw new FormatError('E_DESCRIPTION', `description key must be a string, found ${JSON.stringify(key)}`);
    if (map.has(key)) throw new FormatError('E_DESCRIPTION', `description key "${key}" appears twice (a Python dict cannot hold it twice)`, { tensor: key });
    if (typeof value !== 'string' && !(typeof value === 'number' && Number.isFinite(value))) {
      throw new FormatError('E_DESCRIPTION', `description value for "${key}" must be a string or a finite number, found ${JSON.stringify(value)}`, { tensor: key });
    }
    map.set(key, value);
  }
  return pythonJsonDumps(map, 2);
}

/** Reads quant_model_description.json, falling back to quant_model_description_w8a16.json. */
export function readDescription(dir: string): { path: string; entries: Map<string, string | number> } {
  const abs = path.resolve(dir);
  const candidates = [DESCRIPTION_FILE_NAME, LEGACY_DESCRIPTION_FILE_NAME].map((n) => path.join(abs, n));
  const file = candidates.find((p) => fs.existsSync(p));
  if (file === undefined) {
    throw new FormatError('E_DESCRIPTION_MISSING', `${abs}: expected ${DESCRIPTION_FILE_NAME} (or ${LEGACY_DESCRIPTION_FILE_NAME}), found neither`, { file: candidates[0] });
  }
  const text = fs.readFileSync(file, 'utf8');
  const parsed = parseJson(text, file, { maps: true, duplicateKeys: 'error', code: 'E_DESCRIPTION_JSON' });
  if (!(parsed instanceof Map)) {
    throw new FormatError('E_DESCRIPTION', `${file}: expected a JSON object at the top level, found ${Array.isArray(parsed) ? 'an array' : JSON.stringify(parsed)}`, { file });
  }
  const entries = new Map<string, string | number>();
  for (const [key, value] of parsed) {
    if (typeof value !== 'string' && !(typeof value === 'number' && Number.isFinite(value))) {
      throw new FormatError('E_DESCRIPTION', `${file}: value of "${key}" must be a string or a number, found ${value instanceof Map ? 'an object' : JSON.stringify(value)}`, { file, tensor: key });
    }
    entries.set(key, value);
  }
  return { path: file, entries };
}
