// The inner kernel of the m3 search (Σ over tokens t and weight rows r of (x_t · e_r)², anti-outlier's
// M3ErrorKernelF32) on the host addon's float32 linear: Y = X·Eᵀ with SIMD FMAs on one thread, then Σ Y² in
// float64 here. Not a search: searchM3Scales calls it once per block of rows and grid point.

import type { M3ErrorKernelF32 } from '@w8a16/anti-outlier';
import type { HostAddon } from '@w8a16/ascend-runtime';

/** floatLinear's weight element code for float32 (ascend-runtime's NATIVE_WTYPE.f32). */
const WTYPE_F32 = 0;
/**
 * One thread per call: the search calls this for 16 rows at a time (M3_ROW_BLOCK), too little work to split,
 * and the app runs several searches side by side on worker threads instead.
 */
const KERNEL_THREADS = 1;

/** The addon's floatLinear as an M3ErrorKernelF32 (float32 dot products, float64 sum of their squares). */
export function addonM3Kernel(addon: Pick<HostAddon, 'floatLinear' | 'bestIsa'>, isa = addon.bestIsa()): M3ErrorKernelF32 {
  let y = new Float32Array(0); // (tokens, rows) X·Eᵀ, grown on demand
  return (x, e, tokens, rows, channels) => {
    const n = tokens * rows;
    if (y.length < n) y = new Float32Array(n);
    const out = y.length === n ? y : y.subarray(0, n);
    addon.floatLinear(out, x, tokens, e, WTYPE_F32, null, rows, channels, KERNEL_THREADS, isa);
    let total = 0;
    for (let i = 0; i < n; i++) total += out[i] * out[i];
    return total;
  };
}
