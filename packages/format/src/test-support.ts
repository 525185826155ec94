// Test-only helpers (not exported by the package): fixture paths, temp dirs and a raw safetensors builder
// for crafting malformed files.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The monorepo root (packages/format/src -> ../../..). */
export const REPO_ROOT = path.resolve(here, '../../..');
/** Reference fixtures live beside the repository, read in place. */
export const FIXTURES = path.resolve(REPO_ROOT, '../shared/fixtures');

export const TINY = path.join(FIXTURES, 'tiny-llama3-fp16');
export const STORIES = path.join(FIXTURES, 'stories260K');
export const REFERENCE_DIRS = [
  path.join(TINY, 'reference/w8a16-rtn'),
  path.join(TINY, 'reference/w8a16-m3-c8'),
  path.join(STORIES, 'reference/w8a16-rtn'),
];
export const WEIGHT_FILE = 'quant_model_weight_w8a16.safetensors';

const made: string[] = [];

export function makeTempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'w8a16-format-test-'));
  made.push(d);
  return d;
}

export function removeTempDirs(): void {
  for (const d of made.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}

/** 8-byte LE length (default: the header's own length) + header text + data bytes. */
export function rawSafetensors(header: string, data: Uint8Array | number = 0, declaredLength?: bigint): Uint8Array {
  const h = new TextEncoder().encode(header);
  const body = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + h.length + body.length);
  new DataView(out.buffer).setBigUint64(0, declaredLength ?? BigInt(h.length), true);
  out.set(h, 8);
  out.set(body, 8 + h.length);
  return out;
}

export function writeTemp(dir: string, name: string, bytes: Uint8Array | string): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, bytes);
  return p;
}

/** Deterministic bytes (LCG) so tests need no stored data. */
export function seededBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s >>> 24;
  }
  return out;
}
