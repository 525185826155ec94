// Tensor dtypes (safetensors names) and exact fp16/bf16 <-> f32 conversion, scalar and bulk.
// Rounding follows PyTorch CPU (c10::Half / c10::BFloat16): round-to-nearest-even from float32.
// Not here: integer dtypes' decoding (callers view those bytes as typed arrays themselves).

import { QuantError } from './errors';

/** safetensors dtype names (the `dtype` field of a header entry). */
export type DType = 'BOOL' | 'U8' | 'I8' | 'I16' | 'U16' | 'F16' | 'BF16' | 'I32' | 'U32' | 'F32' | 'F64' | 'I64' | 'U64';

export interface DTypeTraits {
  readonly bytes: number;
  readonly kind: 'float' | 'int' | 'bool';
}

export const DTYPE_TRAITS = {
  BOOL: { bytes: 1, kind: 'bool' },
  U8: { bytes: 1, kind: 'int' },
  I8: { bytes: 1, kind: 'int' },
  I16: { bytes: 2, kind: 'int' },
  U16: { bytes: 2, kind: 'int' },
  F16: { bytes: 2, kind: 'float' },
  BF16: { bytes: 2, kind: 'float' },
  I32: { bytes: 4, kind: 'int' },
  U32: { bytes: 4, kind: 'int' },
  F32: { bytes: 4, kind: 'float' },
  F64: { bytes: 8, kind: 'float' },
  I64: { bytes: 8, kind: 'int' },
  U64: { bytes: 8, kind: 'int' },
} as const satisfies Record<DType, DTypeTraits>;

export function isDType(s: string): s is DType {
  return Object.prototype.hasOwnProperty.call(DTYPE_TRAITS, s);
}

/** The float dtypes a checkpoint weight may have and that this package decodes/encodes. */
export type FloatDType = 'F32' | 'F16' | 'BF16';

export function isFloatDType(d: DType): d is FloatDType {
  return d === 'F32' || d === 'F16' || d === 'BF16';
}

/** Arithmetic dtype of the quantizer (msModelSlim computes in the dtype the model was loaded in). */
export type ComputeDType = 'f32' | 'f16' | 'bf16';

export function computeDTypeOf(d: FloatDType): ComputeDType {
  return d === 'F32' ? 'f32' : d === 'F16' ? 'f16' : 'bf16';
}

export type QuantScheme = 'asym' | 'sym';

// ---------------------------------------------------------------------------------------------
// Scalar conversions. One-element scratch views give the float32 bit pattern of a number.

const SCRATCH_F32 = new Float32Array(1);
const SCRATCH_U32 = new Uint32Array(SCRATCH_F32.buffer);

/** Adding then subtracting 1.5*2^52 rounds any |x| < 2^51 to an integer, ties to even (f64 addition is RNE). */
export const RNE_MAGIC = 6755399441055744;

/** fp16 bits -> value, computed (the table below is built from this). */
function f16BitsToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * POW2_M24;
  if (e === 31) return m === 0 ? sign * Infinity : NaN;
  return sign * (1024 + m) * pow2(e - 25);
}

const POW2_M24 = 1 / 16777216;

/** Exact 2^k for small integer k (repeated doubling/halving is exact; Math.pow need not be). */
function pow2(k: number): number {
  let v = 1;
  for (let i = 0; i < k; i++) v *= 2;
  for (let i = 0; i > k; i--) v /= 2;
  return v;
}

let f16Table: Float32Array | undefined;

/** All 65536 fp16 values as f32 (256 KiB, built on first use). */
function f16TableGet(): Float32Array {
  if (f16Table === undefined) {
    const t = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) t[h] = f16BitsToNumber(h);
    f16Table = t;
  }
  return f16Table;
}

/** fp16 bits (0..65535) -> exact value. */
export function f16ToF32(bits: number): number {
  return f16TableGet()[bits & 0xffff];
}

/**
 * float32 bit pattern -> fp16 bits, RNE; NaN -> sign|0x7e00 (as c10::Half does), overflow -> +-Inf.
 * Integer-only and with literal constants (it is the encodeFloats inner loop): 0x477ff000 = bits
 * of 65520 (rounds to Inf), 0x38800000 = bits of 2^-14 (smallest normal fp16).
 */
function f32BitsToF16Bits(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const a = b & 0x7fffffff;
  if (a >= 0x477ff000) return a > 0x7f800000 ? sign | 0x7e00 : sign | 0x7c00;
  if (a >= 0x38800000) {
    // Round the 23-bit mantissa to 10 bits at bit 13, ties to even; a carry correctly bumps the
    // exponent. Then rebias the exponent from 127 to 15 (112 << 10).
    const r = a + 0xfff + ((a >>> 13) & 1);
    return sign | ((r >>> 13) - (112 << 10));
  }
  // fp16 subnormal: units of 2^-24. The f32 value is m * 2^(e - 150) with a 24-bit m, i.e.
  // m >> (126 - e) units; below 2^-25 (e < 102) everything rounds to 0 (2^-25 itself is a tie -> 0).
  const e = a >>> 23;
  if (e < 102) return sign;
  const m = (a & 0x7fffff) | 0x800000;
  const shift = 126 - e;
  const half = 1 << (shift - 1);
  const rest = m & ((half << 1) - 1);
  let units = m >>> shift;
  if (rest > half || (rest === half && (units & 1) === 1)) units++;
  return sign | units;
}

/**
 * Number -> fp16 bits (uint16), round-to-nearest-even. The number is first rounded to float32
 * (what torch does for `tensor.half()`; for the result of one +,-,*,/ on fp16 operands this double
 * rounding is exact, since 24 >= 2*11+2).
 */
export function f32ToF16(x: number): number {
  SCRATCH_F32[0] = x;
  return f32BitsToF16Bits(SCRATCH_U32[0]);
}

/** bf16 bits (0..65535) -> exact value. */
export function bf16ToF32(bits: number): number {
  SCRATCH_U32[0] = (bits & 0xffff) << 16;
  return SCRATCH_F32[0];
}

/** float32 bit pattern -> bf16 bits: c10::BFloat16 round_to_nearest_even, NaN -> 0x7fc0. */
function f32BitsToBf16Bits(b: number): number {
  if ((b & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Number -> bf16 bits, via float32 like torch (`x.float().bfloat16()`), RNE; NaN stays NaN (0x7fc0). */
export function f32ToBf16(x: number): number {
  SCRATCH_F32[0] = x;
  return f32BitsToBf16Bits(SCRATCH_U32[0]);
}

/** x rounded to the compute dtype (value returned as a number). f32 = Math.fround. */
export function roundTo(x: number, c: ComputeDType): number {
  if (c === 'f32') return Math.fround(x);
  if (c === 'f16') return f16ToF32(f32ToF16(x));
  return bf16ToF32(f32ToBf16(x));
}

// ---------------------------------------------------------------------------------------------
// Hot-loop rounding: pure f64 arithmetic, no memory round trip (a shared scratch view serialises
// every call through one address: 3-4x slower). Equal to roundTo for every input (tested over all
// ties, f32 subnormals, the fp16 subnormal and overflow boundaries and random bit patterns).
// Normal range: Veltkamp splitting of v = fround(x) with C = 2^(53-p) + 1 gives v rounded to p
// significant bits, ties to even, in f64 round-to-nearest-even arithmetic. Constants are literals:
// V8 re-reads a module-level binding (with a TDZ check) on every access in a hot loop.

/**
 * = roundTo(x, 'f16'), but a tiny negative value gives +0 instead of -0 (equal as numbers).
 * 6.103515625e-5 = 2^-14, the smallest normal fp16: below it the grid is 2^-24, the f64 ulp of
 * 402653184 = 1.5*2^28 (add-subtract rounds onto it). 65520 = 65504 + half an ulp rounds to Inf.
 * 4398046511105 = 2^42 + 1 (p = 11).
 */
export function roundF16Fast(x: number): number {
  const v = Math.fround(x);
  const a = Math.abs(v);
  if (a < 6.103515625e-5) return v + 402653184 - 402653184;
  if (a >= 65520) return v > 0 ? Infinity : -Infinity;
  const g = v * 4398046511105;
  return g + (v - g);
}

/**
 * = roundTo(x, 'bf16'), but a tiny negative value gives +0 instead of -0.
 * 1.1754943508222875e-38 = 2^-126: below it bf16 is subnormal with grid 2^-133, the f64 ulp of
 * 1.5*2^-81 = 6.203854594147708e-25. 3.39617752923046e38 = 2^128 - 2^119 = max bf16 + half an
 * ulp, which rounds to Inf. 35184372088833 = 2^45 + 1 (p = 8).
 */
export function roundBf16Fast(x: number): number {
  const v = Math.fround(x);
  const a = Math.abs(v);
  if (a < 1.1754943508222875e-38) return v + 6.203854594147708e-25 - 6.203854594147708e-25;
  if (a >= 3.39617752923046e38) return v > 0 ? Infinity : -Infinity;
  const g = v * 35184372088833;
  return g + (v - g);
}

// ---------------------------------------------------------------------------------------------
// Bulk decode/encode of little-endian tensor bytes.

/** True on little-endian hosts: typed-array views then read little-endian tensor bytes as they are. */
export const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function checkDecodeSize(what: string, bytes: number, elements: number, dtype: FloatDType): void {
  const expected = elements * DTYPE_TRAITS[dtype].bytes;
  if (bytes !== expected) {
    throw new QuantError(
      'E_SIZE',
      `${what}: expected ${expected} bytes (${elements} x ${dtype}), found ${bytes}`,
    );
  }
}

function checkFloatDType(what: string, dtype: string): void {
  if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16') {
    throw new QuantError('E_DTYPE', `${what}: expected dtype F32, F16 or BF16, found '${dtype}'`);
  }
}

/**
 * Little-endian bytes -> f32 values. `src` may start at any byteOffset; it must not share memory
 * with `out` (a source not 4-byte aligned is staged in the upper part of `out`'s own bytes).
 */
export function decodeFloats(out: Float32Array, src: Uint8Array, dtype: FloatDType): void {
  checkFloatDType('decodeFloats', dtype);
  const n = out.length;
  checkDecodeSize('decodeFloats', src.byteLength, n, dtype);
  if (!LITTLE_ENDIAN_HOST) {
    decodeFloatsRef(out, src, dtype);
    return;
  }
  if (dtype === 'F32') {
    if (src.byteOffset % 4 === 0) out.set(new Float32Array(src.buffer, src.byteOffset, n));
    else new Uint8Array(out.buffer, out.byteOffset, 4 * n).set(src);
    return;
  }
  // Read 16-bit values two at a time through a Uint32Array (1.4x faster than one at a time);
  // an odd last element is read up front, before staging may overwrite anything.
  const pairs = n >>> 1;
  const tail = n & 1 ? src[2 * n - 2] | (src[2 * n - 1] << 8) : 0;
  let words: Uint32Array;
  if (src.byteOffset % 4 === 0) {
    words = new Uint32Array(src.buffer, src.byteOffset, pairs);
  } else {
    // Stage the pairs at the end of out (4-aligned: 4n - 4*pairs is 2n or 2n + 2) and widen forward
    // in place: pair i lives at >= 2n + 4i and writing it touches bytes [8i, 8i + 8), which never
    // reaches a pair not yet read.
    const at = out.byteOffset + 4 * n - 4 * pairs;
    new Uint8Array(out.buffer, at, 4 * pairs).set(src.subarray(0, 4 * pairs));
    words = new Uint32Array(out.buffer, at, pairs);
  }
  if (dtype === 'F16') {
    const t = f16TableGet();
    for (let i = 0; i < pairs; i++) {
      const v = words[i];
      out[2 * i] = t[v & 0xffff];
      out[2 * i + 1] = t[v >>> 16];
    }
    if (n & 1) out[n - 1] = t[tail];
  } else {
    const o = new Uint32Array(out.buffer, out.byteOffset, n);
    for (let i = 0; i < pairs; i++) {
      const v = words[i];
      o[2 * i] = v << 16;
      o[2 * i + 1] = v & 0xffff0000;
    }
    if (n & 1) o[n - 1] = tail << 16;
  }
}

/** Plain byte-by-byte twin of decodeFloats (endianness-independent oracle). */
export function decodeFloatsRef(out: Float32Array, src: Uint8Array, dtype: FloatDType): void {
  checkFloatDType('decodeFloatsRef', dtype);
  const n = out.length;
  checkDecodeSize('decodeFloatsRef', src.byteLength, n, dtype);
  const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
  for (let i = 0; i < n; i++) {
    if (dtype === 'F32') out[i] = dv.getFloat32(4 * i, true);
    else if (dtype === 'F16') out[i] = f16ToF32(dv.getUint16(2 * i, true));
    else out[i] = bf16ToF32(dv.getUint16(2 * i, true));
  }
}

/** f32 values -> little-endian bytes of dtype (RNE, as torch casts). `out` may have any byteOffset. */
export function encodeFloats(out: Uint8Array, src: Float32Array, dtype: FloatDType): void {
  checkFloatDType('encodeFloats', dtype);
  const n = src.length;
  checkDecodeSize('encodeFloats', out.byteLength, n, dtype);
  if (!LITTLE_ENDIAN_HOST) {
    encodeFloatsRef(out, src, dtype);
    return;
  }
  if (dtype === 'F32') {
    out.set(new Uint8Array(src.buffer, src.byteOffset, 4 * n));
    return;
  }
  const b = new Uint32Array(src.buffer, src.byteOffset, n);
  if (out.byteOffset % 2 === 0) {
    const h = new Uint16Array(out.buffer, out.byteOffset, n);
    if (dtype === 'F16') for (let i = 0; i < n; i++) h[i] = f32BitsToF16Bits(b[i]);
    else for (let i = 0; i < n; i++) h[i] = f32BitsToBf16Bits(b[i]);
    return;
  }
  for (let i = 0; i < n; i++) {
    const v = dtype === 'F16' ? f32BitsToF16Bits(b[i]) : f32BitsToBf16Bits(b[i]);
    out[2 * i] = v & 0xff;
    out[2 * i + 1] = v >>> 8;
  }
}

/** Plain twin of encodeFloats (DataView, scalar conversions). */
export function encodeFloatsRef(out: Uint8Array, src: Float32Array, dtype: FloatDType): void {
  checkFloatDType('encodeFloatsRef', dtype);
  const n = src.length;
  checkDecodeSize('encodeFloatsRef', out.byteLength, n, dtype);
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (let i = 0; i < n; i++) {
    if (dtype === 'F32') dv.setFloat32(4 * i, src[i], true);
    else if (dtype === 'F16') dv.setUint16(2 * i, f32ToF16(src[i]), true);
    else dv.setUint16(2 * i, f32ToBf16(src[i]), true);
  }
}
