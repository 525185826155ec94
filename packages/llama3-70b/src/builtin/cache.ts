// The on-disk cache of generated checkpoints (the built-in default model, benchmark models): generated on
// first use into a temporary directory, marked complete, renamed into place; reused while the marker matches.

import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { CliError } from '../cli/errors';
import { generateLlamaCheckpoint, GENERATOR_VERSION, type GenerateProgress, type PlantedOutliers } from './generate';
import { GENERATOR_SPECS, type LlamaCheckpointSpec } from './specs';

export const CACHE_DIR_ENV = 'W8A16_CACHE_DIR';
/** The cache's folder name under $XDG_CACHE_HOME or ~/.cache. */
export const CACHE_APP_DIR = 'w8a16';
/** Folder of the built-in model inside the cache directory. */
export const BUILTIN_MODEL_DIR = 'builtin';
/** The seed of the built-in model (changing it regenerates every user's cache). */
export const BUILTIN_SEED = 2024;
/** Written last, inside the directory, before it is renamed into place; a directory without it is never used. */
export const COMPLETE_MARKER_FILE = '.w8a16-cache-complete.json';
/**
 * Leftover temporary directories (from a killed run) older than this are removed; younger ones may belong
 * to a run still in progress in another process. Six hours is far above any generation time.
 */
export const STALE_PARTIAL_MS = 6 * 3600 * 1000;
const PARTIAL_INFIX = '.partial-';

/** $W8A16_CACHE_DIR, else $XDG_CACHE_HOME/w8a16, else ~/.cache/w8a16. */
export function resolveCacheDir(env: NodeJS.ProcessEnv = process.env, home: string = homedir()): string {
  if (env[CACHE_DIR_ENV]) return resolve(env[CACHE_DIR_ENV]);
  if (env.XDG_CACHE_HOME) return resolve(env.XDG_CACHE_HOME, CACHE_APP_DIR);
  return resolve(home, '.cache', CACHE_APP_DIR);
}

export interface CompleteMarker {
  readonly generatorVersion: number;
  readonly seed: number;
  readonly spec: LlamaCheckpointSpec;
  readonly files: { name: string; bytes: number }[];
  readonly createdAt: string;
  readonly seconds: number;
  readonly outliers: PlantedOutliers[];
}

export interface EnsureModelOptions {
  /** Default: resolveCacheDir(). */
  readonly cacheDir?: string;
  /** Folder name inside the cache directory. */
  readonly name: string;
  readonly spec: LlamaCheckpointSpec;
  readonly seed: number;
  readonly shardSizeBytes?: number;
  readonly signal?: AbortSignal;
  /** Called once, before generating (not when the cache is reused). */
  readonly onGenerate?: (dir: string) => void;
  readonly onProgress?: (p: GenerateProgress) => void;
}

export interface EnsuredModel {
  readonly dir: string;
  /** True when this call generated the model, false when a complete cached copy was reused. */
  readonly generated: boolean;
  readonly marker: CompleteMarker;
}

/** What decides the bytes: every spec field but the prose description. */
function specIdentity(spec: LlamaCheckpointSpec): string {
  return JSON.stringify({ ...spec, description: undefined });
}

/** The marker of a complete cached model matching (spec, seed, generator version), else undefined. */
export function readCompleteMarker(dir: string, spec: LlamaCheckpointSpec, seed: number): CompleteMarker | undefined {
  let marker: CompleteMarker;
  try {
    marker = JSON.parse(readFileSync(join(dir, COMPLETE_MARKER_FILE), 'utf8')) as CompleteMarker;
  } catch {
    return undefined;
  }
  if (typeof marker !== 'object' || marker === null) return undefined;
  if (marker.generatorVersion !== GENERATOR_VERSION || marker.seed !== seed || specIdentity(marker.spec) !== specIdentity(spec)) return undefined;
  if (!Array.isArray(marker.files)) return undefined;
  // Sizes catch a file truncated or replaced after the fact; contents are trusted (hashing 3 GB on every use would not pay).
  for (const f of marker.files) {
    try {
      if (statSync(join(dir, f.name)).size !== f.bytes) return undefined;
    } catch {
      return undefined;
    }
  }
  return marker;
}

function removeStalePartials(cacheDir: string, name: string): void {
  const prefix = `.${name}${PARTIAL_INFIX}`;
  for (const entry of readdirSync(cacheDir)) {
    if (!entry.startsWith(prefix)) continue;
    const p = join(cacheDir, entry);
    try {
      if (Date.now() - statSync(p).mtimeMs > STALE_PARTIAL_MS) rmSync(p, { recursive: true, force: true });
    } catch {
      // raced with another cleaner: fine
    }
  }
}

/**
 * Returns the cached model `<cacheDir>/<name>`, generating it first if it is absent, incomplete or made
 * from another spec/seed/generator version. Generation goes to `<cacheDir>/.<name>.partial-XXXX`, the
 * marker is written last, and the directory is renamed into place, so a half-written model is never used.
 */
export async function ensureGeneratedModel(opts: EnsureModelOptions): Promise<EnsuredModel> {
  const cacheDir = resolve(opts.cacheDir ?? resolveCacheDir());
  if (!/^[\w.-]+$/.test(opts.name) || opts.name.startsWith('.')) {
    throw new CliError('E_CACHE', `cache entry name must be a plain folder name, found ${JSON.stringify(opts.name)}`);
  }
  const dir = join(cacheDir, opts.name);
  const cached = readCompleteMarker(dir, opts.spec, opts.seed);
  if (cached) return { dir, generated: false, marker: cached };

  try {
    mkdirSync(cacheDir, { recursive: true });
  } catch (cause) {
    throw new CliError('E_CACHE', `cannot create the cache directory ${cacheDir} (set ${CACHE_DIR_ENV} to use another): ${(cause as Error).message}`);
  }
  removeStalePartials(cacheDir, opts.name);
  opts.onGenerate?.(dir);
  const tmp = mkdtempSync(join(cacheDir, `.${opts.name}${PARTIAL_INFIX}`));
  try {
    const summary = await generateLlamaCheckpoint(tmp, opts.spec, {
      seed: opts.seed,
      shardSizeBytes: opts.shardSizeBytes,
      signal: opts.signal,
      onProgress: opts.onProgress,
    });
    const marker: CompleteMarker = {
      generatorVersion: GENERATOR_VERSION,
      seed: opts.seed,
      spec: opts.spec,
      files: summary.files.map((name) => ({ name, bytes: statSync(join(tmp, name)).size })),
      createdAt: new Date().toISOString(),
      seconds: summary.seconds,
      outliers: summary.outliers,
    };
    writeFileSync(join(tmp, COMPLETE_MARKER_FILE), `${JSON.stringify(marker, null, 2)}\n`);

    // An outdated or incomplete copy is moved aside first and removed only after the new one is in place.
    let old: string | undefined;
    if (existsSync(dir)) {
      old = `${tmp}.old`;
      renameSync(dir, old);
    }
    try {
      renameSync(tmp, dir);
    } catch (e) {
      // Another process may have put a complete copy in place meanwhile: use it.
      const theirs = readCompleteMarker(dir, opts.spec, opts.seed);
      if (theirs) return { dir, generated: false, marker: theirs };
      throw new CliError('E_CACHE', `cannot move the generated model into ${dir}: ${(e as Error).message}`);
    } finally {
      if (old) rmSync(old, { recursive: true, force: true });
    }
    return { dir, generated: true, marker };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

export interface EnsureBuiltinOptions {
  readonly cacheDir?: string;
  readonly signal?: AbortSignal;
  readonly onGenerate?: (dir: string) => void;
  readonly onProgress?: (p: GenerateProgress) => void;
}

/** The built-in default model (GENERATOR_SPECS.builtin, BUILTIN_SEED) in `<cache>/builtin`, generated on first use. */
export async function ensureBuiltinModel(opts: EnsureBuiltinOptions = {}): Promise<EnsuredModel> {
  return ensureGeneratedModel({ ...opts, name: BUILTIN_MODEL_DIR, spec: GENERATOR_SPECS.builtin, seed: BUILTIN_SEED });
}
