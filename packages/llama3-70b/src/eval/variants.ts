// What a converted directory is, read from its quant_model_description.json: RTN or m3 weights, with or without
// the C8 KV cache; and the runs `eval` makes of it (a C8 directory runs twice: int8 KV, and f32 KV for weights only).

import { FormatError, readDescription } from '@w8a16/format';
import type { KvCacheChoice } from '../model/load';

export interface QuantScheme {
  /** `float`: no description (a plain checkpoint, e.g. the float source itself). */
  weights: 'float' | 'rtn' | 'm3';
  /** The description says `kv_cache_type: C8`. */
  c8: boolean;
  /** Linears described W8A16. */
  w8a16Linears: number;
  /** Short name: FLOAT, RTN, m3, RTN+C8, m3+C8. */
  label: string;
}

/**
 * Reads the scheme of `dir`. m3 leaves a zero `<norm>.bias` beside every RMSNorm (msModelSlim's NormBias wrapper,
 * spec §2.2), RTN never does; C8 writes the top-level `kv_cache_type: "C8"`.
 */
export function describeQuantDir(dir: string): QuantScheme {
  let entries: Map<string, string | number>;
  try {
    entries = readDescription(dir).entries;
  } catch (e) {
    if (e instanceof FormatError && e.code === 'E_DESCRIPTION_MISSING') return { weights: 'float', c8: false, w8a16Linears: 0, label: 'FLOAT' };
    throw e;
  }
  let m3 = false;
  let w8a16Linears = 0;
  for (const [name, value] of entries) {
    if (/(^|\.)(input_layernorm|post_attention_layernorm|norm)\.bias$/.test(name)) m3 = true;
    if (value === 'W8A16' && name.endsWith('.weight')) w8a16Linears++;
  }
  const c8 = entries.get('kv_cache_type') === 'C8';
  const weights = m3 ? 'm3' : 'rtn';
  return { weights, c8, w8a16Linears, label: `${m3 ? 'm3' : 'RTN'}${c8 ? '+C8' : ''}` };
}

/** One model run compared with the float source. */
export interface VariantRun {
  /** Table label, e.g. `m3+C8` or `m3+C8 [f32 KV]`. */
  label: string;
  dir: string;
  scheme: QuantScheme;
  /** The load option: `auto` uses the C8 int8 cache when the directory has one. */
  kvCache: KvCacheChoice;
}

/** Label suffix of a C8 directory run with the float KV cache: the weight error alone. */
export const F32_KV_SUFFIX = ' [f32 KV]';

/**
 * The runs for the given directories, in order. A C8 directory gives two: with the float KV cache first (its
 * weight error alone, what forward-w8a16.json measured) and then as it ships (weights + int8 KV).
 */
export function planVariantRuns(dirs: readonly string[]): VariantRun[] {
  const runs: VariantRun[] = [];
  for (const dir of dirs) {
    const scheme = describeQuantDir(dir);
    if (scheme.c8) runs.push({ label: `${scheme.label}${F32_KV_SUFFIX}`, dir, scheme, kvCache: 'f32' });
    runs.push({ label: scheme.label, dir, scheme, kvCache: 'auto' });
  }
  return runs;
}
