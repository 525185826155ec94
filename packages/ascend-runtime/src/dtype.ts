// Host-side views of float weights: an f16 lookup table for the js kernels, and typed views of caller bytes.
// The conversions themselves come from quant-core.

import { f16ToF32 } from '@w8a16/quant-core';
import type { FloatHostData, FloatWeightDType } from './backend';
import { BackendError } from './errors';

let f16Table: Float32Array | undefined;

/** f32 value of every f16 bit pattern (256 KiB, built on first use): the js kernels index it directly. */
export function f16ToF32Table(): Float32Array {
  if (!f16Table) f16Table = Float32Array.from({ length: 65536 }, (_, h) => f16ToF32(h));
  return f16Table;
}

export function bytesPerElement(dtype: FloatWeightDType): number {
  return dtype === 'f32' ? 4 : 2;
}

/**
 * View host float data as the typed array of its dtype, without copying when the bytes are aligned
 * (a Uint8Array slice of a file at an odd offset is copied once). Checks the element count.
 */
export function asTypedWeight(
  data: FloatHostData,
  dtype: FloatWeightDType,
  count: number,
  what: string,
): Float32Array | Uint16Array {
  const bpe = bytesPerElement(dtype);
  let out: Float32Array | Uint16Array;
  if (data instanceof Uint8Array) {
    if (data.byteLength !== count * bpe) {
      throw new BackendError('E_SHAPE', `${what}: expected ${count * bpe} bytes of ${dtype}, found ${data.byteLength}`);
    }
    const aligned = data.byteOffset % bpe === 0 ? data : data.slice();
    out =
      bpe === 4
        ? new Float32Array(aligned.buffer, aligned.byteOffset, count)
        : new Uint16Array(aligned.buffer, aligned.byteOffset, count);
  } else {
    const want = dtype === 'f32' ? Float32Array : Uint16Array;
    if (!(data instanceof want)) {
      throw new BackendError('E_DTYPE', `${what}: dtype ${dtype} expects a ${want.name} (or raw bytes), found ${data.constructor.name}`);
    }
    out = data;
  }
  if (out.length !== count) {
    throw new BackendError('E_SHAPE', `${what}: expected ${count} elements of ${dtype}, found ${out.length}`);
  }
  return out;
}

/** quant-core's conversions under the names src/ascend imports (bits in, bits out). */
export { bf16ToF32, f32ToBf16 as f32ToBf16Bits, f32ToF16 as f32ToF16Bits } from '@w8a16/quant-core';
