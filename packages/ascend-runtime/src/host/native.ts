// Lazy loader of the host kernels addon (build/Release/ascend_host.node) and every native signature in one place.
// Nothing here runs at import time: loadHostAddon() is called by createHostBackend when native kernels are wanted.

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BackendError } from '../errors';

/** Instruction-set levels of the native kernels, in the addon's numbering. */
export const NATIVE_ISA = { scalar: 0, avx2: 1, avx512: 2 } as const;
export type NativeIsa = keyof typeof NATIVE_ISA;

/** KV cache element codes of `pagedAttention`. */
export const NATIVE_KV_DTYPE = { f32: 0, f16: 1, int8: 2 } as const;

/** Weight element codes of `floatLinear`. */
export const NATIVE_WTYPE = { f32: 0, f16: 1, bf16: 2 } as const;

/** Environment variable naming an addon file to load instead of the package's own build. */
export const HOST_ADDON_ENV = 'W8A16_HOST_ADDON';
/** What builds the addon, for error messages. */
export const HOST_ADDON_BUILD_COMMAND = 'npx node-gyp rebuild (run in packages/ascend-runtime)';

export interface HostAddon {
  /** Best ISA the CPU supports (a NATIVE_ISA value). */
  bestIsa(): number;
  /** out[T,n] = x[T,k]·((q − offset)·scale)ᵀ + bias; see src/native/kernels.c for the integer scheme. */
  w8a16Linear(
    out: Float32Array,
    x: Float32Array,
    T: number,
    q: Int8Array,
    scale: Float32Array,
    offset: Float32Array,
    bias: Float32Array | null,
    n: number,
    k: number,
    threads: number,
    isa: number,
  ): void;
  /** out[T,n] = x[T,k]·Wᵀ + bias, W f32 (Float32Array) or f16/bf16 bits (Uint16Array). */
  floatLinear(
    out: Float32Array,
    x: Float32Array,
    T: number,
    w: Float32Array | Uint16Array,
    wtype: number,
    bias: Float32Array | null,
    n: number,
    k: number,
    threads: number,
    isa: number,
  ): void;
  /**
   * Paged causal GQA attention (see Backend.pagedAttention); cache dtype 0 f32, 1 f16 bits, 2 int8 (then the four
   * scale/offset arrays are required). Block ids, positions and contexts must already be validated.
   */
  pagedAttention(
    out: Float32Array,
    q: Float32Array,
    T: number,
    nHeads: number,
    k: Float32Array | Uint16Array | Int8Array,
    v: Float32Array | Uint16Array | Int8Array,
    dtype: number,
    kScale: Float32Array | null,
    kOffset: Float32Array | null,
    vScale: Float32Array | null,
    vOffset: Float32Array | null,
    nKvHeads: number,
    headDim: number,
    blockSize: number,
    maxBlocksPerSeq: number,
    positions: Int32Array,
    rowSeq: Int32Array,
    blockTables: Int32Array,
    maxContext: number,
    scale: number,
    threads: number,
    isa: number,
  ): void;
  /**
   * The m3 (AWQ) grid losses of `n` weight rows `w [n, C]` for activation `x [T, C]` and `nGrid` scale vectors
   * `scales [nGrid, C]`: out[g] = Σ_t Σ_r (x_t · e_r)², e_r = w_r − fround(Q(fround(w_r·s_g)) / s_g) with
   * quant-core's float32 per-row fake quantizer Q (asym, or sym when `sym` is 1) bit for bit; float32 dot products,
   * float64 sum of their squares (src/native/m3.c). Rows are split over `threads` (1: inline, no pool lock).
   * Returns the first row whose W⊙s holds a non-finite value (its losses are then meaningless), or −1.
   * `isa` (default: the best) is for tests of the scalar path.
   */
  m3GridLosses(
    out: Float64Array,
    x: Float32Array,
    T: number,
    C: number,
    w: Float32Array,
    n: number,
    scales: Float32Array,
    nGrid: number,
    sym: 0 | 1,
    threads: number,
    isa?: number,
  ): number;
  /** Sum of the buffer's 64-bit words (low 52 bits): a read-bandwidth probe. */
  readSum(buffer: ArrayBufferView, threads: number, isa: number): number;
}

/**
 * Paths tried, in order: only $W8A16_HOST_ADDON when it is set; otherwise build/Release of this package,
 * seen from dist/ (the built package) and from src/host/ (tests on the sources).
 */
export function hostAddonCandidates(): string[] {
  const fromEnv = process.env[HOST_ADDON_ENV];
  if (fromEnv) return [path.resolve(fromEnv)];
  const here = path.dirname(fileURLToPath(import.meta.url));
  return [...new Set(['..', '../..'].map((up) => path.resolve(here, up, 'build/Release/ascend_host.node')))];
}

const loaded = new Map<string, HostAddon>();

/** Load the addon (once per path). Throws `E_NATIVE_MISSING` naming the paths tried and the build command. */
export function loadHostAddon(): HostAddon {
  const tried = hostAddonCandidates();
  const found = tried.find((p) => existsSync(p));
  if (!found) {
    throw new BackendError(
      'E_NATIVE_MISSING',
      `host kernels addon not found; tried ${tried.join(', ')}. Build it with: ${HOST_ADDON_BUILD_COMMAND}, ` +
        `or set ${HOST_ADDON_ENV} to its path`,
    );
  }
  let addon = loaded.get(found);
  if (addon) return addon;
  try {
    addon = createRequire(import.meta.url)(found) as HostAddon;
  } catch (e) {
    throw new BackendError('E_NATIVE_MISSING', `host kernels addon at ${found} failed to load: ${(e as Error).message}`);
  }
  loaded.set(found, addon);
  return addon;
}
