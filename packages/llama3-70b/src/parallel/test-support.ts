// Test support: compiles worker scripts from the TypeScript sources with esbuild (tests run on the sources, where no
// parallel-worker.js exists), into node_modules/.cache so their npm imports resolve. Not shipped.

import { buildSync } from 'esbuild';
import { mkdirSync, renameSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const APP_ROOT = resolve(HERE, '../..');
const PACKAGES = resolve(APP_ROOT, '..');
const SIBLINGS = ['quant-core', 'format', 'anti-outlier', 'kvcache-int8', 'ascend-runtime'];
const OUT_DIR = join(APP_ROOT, 'node_modules/.cache/parallel-test');

/** The host kernels addon of the sources, for workers whose bundle sits elsewhere (set as W8A16_HOST_ADDON). */
export const HOST_ADDON_PATH = join(PACKAGES, 'ascend-runtime/build/Release/ascend_host.node');

function bundle(name: string, input: { entry: string } | { source: string }): string {
  mkdirSync(OUT_DIR, { recursive: true });
  // One file per script, replaced atomically: test files running at once write the same bytes from the same sources.
  const target = join(OUT_DIR, `${name}.mjs`);
  const outfile = join(OUT_DIR, `${name}-${process.pid}.tmp.mjs`);
  buildSync({
    ...('entry' in input ? { entryPoints: [input.entry] } : { stdin: { contents: input.source, resolveDir: HERE, loader: 'ts', sourcefile: `${name}.ts` } }),
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outfile,
    packages: 'external',
    alias: Object.fromEntries(SIBLINGS.map((p) => [`@w8a16/${p}`, join(PACKAGES, p, 'src/index.ts')])),
    logLevel: 'silent',
  });
  renameSync(outfile, target);
  return target;
}

/** src/parallel/worker.ts (with the sibling packages' sources) as a runnable script; returns its path. */
export function buildWorkerForTests(): string {
  return bundle('parallel-worker', { entry: join(HERE, 'worker.ts') });
}

/** A worker script from TypeScript `source`, whose relative imports resolve from src/parallel/. */
export function buildScriptForTests(name: string, source: string): string {
  return bundle(name, { source });
}
