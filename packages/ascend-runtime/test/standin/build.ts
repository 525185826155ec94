// Builds the C stand-in for the CANN libraries (ascend_standin.c) with gcc, for tests: one shared object in a temp
// directory, linked under the names the backend loads (libascendcl.so, libnnopbase.so, libopapi.so, libhccl.so).

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const STANDIN_SOURCE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'ascend_standin.c');
export const STANDIN_LIBRARY = 'libascend_standin.so';
/** Symlinks, not copies: the dynamic loader then maps one object, so all four names share the stand-in's state. */
export const STANDIN_NAMES = ['libascendcl.so', 'libnnopbase.so', 'libopapi.so', 'libhccl.so'] as const;

/**
 * Compiles the stand-in once per source version (`gcc -shared -fPIC -O2`) and returns the directory holding it.
 * Parallel test workers race safely: each builds in its own directory and renames it into place.
 */
export function buildStandin(): string {
  const source = readFileSync(STANDIN_SOURCE);
  const hash = createHash('sha256').update(source).digest('hex').slice(0, 16);
  const dir = path.join(tmpdir(), `w8a16-ascend-standin-${hash}`);
  if (STANDIN_NAMES.every((n) => existsSync(path.join(dir, n))) && existsSync(path.join(dir, STANDIN_LIBRARY))) return dir;
  const work = `${dir}.build-${process.pid}-${Math.random().toString(36).slice(2)}`;
  mkdirSync(work, { recursive: true });
  try {
    execFileSync('gcc', ['-shared', '-fPIC', '-O2', '-Wall', '-o', path.join(work, STANDIN_LIBRARY), STANDIN_SOURCE, '-lm'], { stdio: 'pipe' });
    for (const n of STANDIN_NAMES) symlinkSync(STANDIN_LIBRARY, path.join(work, n));
    try {
      renameSync(work, dir);
    } catch {
      // another worker finished first: use its build
    }
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string };
    throw new Error(`building the Ascend stand-in (gcc ${STANDIN_SOURCE}) failed:\n${err.stderr?.toString() ?? err.message}`);
  } finally {
    if (existsSync(work)) rmSync(work, { recursive: true, force: true });
  }
  return dir;
}
