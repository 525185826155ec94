// dtype traits and fp16/bf16 conversions: exhaustive over all 16-bit patterns, RNE ties checked
// against independent oracles, bulk decode/encode held to their byte-by-byte twins.

import { describe, expect, it } from 'vitest';
import {
  DTYPE_TRAITS,
  bf16ToF32,
  computeDTypeOf,
  decodeFloats,
  decodeFloatsRef,
  encodeFloats,
  encodeFloatsRef,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  isDType,
  isFloatDType,
  roundBf16Fast,
  roundF16Fast,
  roundTo,
  type FloatDType,
} from './dtype';
import { QuantError } from './errors';
import { f32FromBits, firstDifference, mulberry32, randomU32 } from './test-helpers';

/** fp16 value from its fields, written independently of the implementation. */
function f16Oracle(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 31;
  const m = h & 1023;
  if (e === 31) return m ? NaN : sign * Infinity;
  if (e === 0) return sign * m * 2 ** -24;
  return sign * (1024 + m) * 2 ** (e - 25);
}

/**
 * All finite non-negative fp16 values in increasing order (index = bits), then 65536 at index
 * 0x7c00: the value where Inf "sits" for rounding (65504 + half an ulp ties to it, as 0x7c00 is even).
 */
const F16_POSITIVE: number[] = [...Array.from({ length: 0x7c00 }, (_, h) => f16Oracle(h)), 65536];

/** Round-to-nearest-even to fp16 by searching the value list (no bit tricks). */
function f16NearestOracle(x: number): number {
  const a = Math.abs(x);
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  if (a >= 65536) return sign | 0x7c00;
  let lo = 0;
  let hi = F16_POSITIVE.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (F16_POSITIVE[mid] <= a) lo = mid;
    else hi = mid;
  }
  const dLo = a - F16_POSITIVE[lo];
  const dHi = F16_POSITIVE[lo + 1] - a;
  const pick = dLo < dHi ? lo : dLo > dHi ? lo + 1 : lo % 2 === 0 ? lo : lo + 1;
  return sign | pick;
}

function isNaNBits16F16(h: number): boolean {
  return (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
}
function isNaNBits16Bf16(h: number): boolean {
  return (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;
}

describe('dtype traits', () => {
  it('gives the safetensors byte widths and kinds', () => {
    expect(DTYPE_TRAITS.F16).toEqual({ bytes: 2, kind: 'float' });
    expect(DTYPE_TRAITS.BF16.bytes).toBe(2);
    expect(DTYPE_TRAITS.F64.bytes).toBe(8);
    expect(DTYPE_TRAITS.I8).toEqual({ bytes: 1, kind: 'int' });
    expect(DTYPE_TRAITS.BOOL.kind).toBe('bool');
    expect(Object.keys(DTYPE_TRAITS)).toHaveLength(13);
  });

  it('recognises dtype names and float dtypes', () => {
    expect(isDType('BF16')).toBe(true);
    expect(isDType('bf16')).toBe(false);
    expect(isDType('toString')).toBe(false);
    expect(isDType('F8_E4M3')).toBe(false);
    expect(isFloatDType('F32')).toBe(true);
    expect(isFloatDType('F64')).toBe(false);
    expect(isFloatDType('I8')).toBe(false);
    expect(computeDTypeOf('F32')).toBe('f32');
    expect(computeDTypeOf('F16')).toBe('f16');
    expect(computeDTypeOf('BF16')).toBe('bf16');
  });
});

describe('fp16', () => {
  it('decodes all 65536 patterns exactly', () => {
    for (let h = 0; h < 65536; h++) {
      const v = f16ToF32(h);
      const want = f16Oracle(h);
      if (!Object.is(v, want)) throw new Error(`f16ToF32(0x${h.toString(16)}) = ${v}, expected ${want}`);
    }
  });

  it('round-trips every non-NaN pattern and keeps NaN a NaN', () => {
    let nans = 0;
    for (let h = 0; h < 65536; h++) {
      const back = f32ToF16(f16ToF32(h));
      if (isNaNBits16F16(h)) {
        nans++;
        expect(isNaNBits16F16(back)).toBe(true);
      } else if (back !== h) {
        throw new Error(`f32ToF16(f16ToF32(0x${h.toString(16)})) = 0x${back.toString(16)}`);
      }
    }
    expect(nans).toBe(2 * 1023);
  });

  it('rounds every midpoint between neighbours to the even one, and just off it to the nearer', () => {
    for (let h = 0; h < 0x7bff; h++) {
      const lo = f16ToF32(h);
      const hi = f16ToF32(h + 1);
      const mid = (lo + hi) / 2; // exact in f32: one more bit than fp16 needs
      const even = h % 2 === 0 ? h : h + 1;
      expect(Math.fround(mid)).toBe(mid);
      if (f32ToF16(mid) !== even || f32ToF16(-mid) !== (even | 0x8000)) {
        throw new Error(`tie ${mid}: got 0x${f32ToF16(mid).toString(16)}, expected 0x${even.toString(16)}`);
      }
      const up = Math.fround(mid + (hi - lo) / 1024);
      const down = Math.fround(mid - (hi - lo) / 1024);
      if (f32ToF16(up) !== h + 1 || f32ToF16(down) !== h) throw new Error(`near tie ${mid} rounded wrongly`);
    }
  });

  it('handles overflow, infinities, zeros and the subnormal range', () => {
    expect(f32ToF16(65504)).toBe(0x7bff);
    expect(f32ToF16(Math.fround(65519.996))).toBe(0x7bff);
    expect(f32ToF16(65520)).toBe(0x7c00); // tie with 65536: 65504 is odd -> Inf
    expect(f32ToF16(-1e9)).toBe(0xfc00);
    expect(f32ToF16(Infinity)).toBe(0x7c00);
    expect(f32ToF16(-Infinity)).toBe(0xfc00);
    expect(isNaNBits16F16(f32ToF16(NaN))).toBe(true);
    expect(f32ToF16(0)).toBe(0);
    expect(f32ToF16(-0)).toBe(0x8000);
    expect(f32ToF16(2 ** -24)).toBe(1);
    expect(f32ToF16(2 ** -25)).toBe(0); // tie between 0 and the smallest subnormal -> 0
    expect(f32ToF16(3 * 2 ** -25)).toBe(2); // tie between 1 and 2 units -> 2
    expect(f32ToF16(2 ** -25 + 2 ** -40)).toBe(1);
    expect(f32ToF16(1e-30)).toBe(0);
    expect(f32ToF16(2 ** -14 - 2 ** -26)).toBe(0x400); // rounds up into the smallest normal
  });

  it('agrees with a nearest-value search on random float32 values', () => {
    const bits = randomU32(mulberry32(11));
    for (let k = 0; k < 200_000; k++) {
      const b = bits();
      // Bias towards the fp16 range: exponent 100..145.
      const x = f32FromBits((b & 0x807fffff) | ((100 + (b % 46)) << 23));
      if (f32ToF16(x) !== f16NearestOracle(x)) throw new Error(`f32ToF16(${x}) = ${f32ToF16(x)}, expected ${f16NearestOracle(x)}`);
    }
  });

  it('rounds a double through float32 first, as torch does', () => {
    // 1 + 2^-11 + 2^-40 is just above an fp16 tie, but rounds to the tie in float32 -> even (1.0).
    expect(f32ToF16(1 + 2 ** -11 + 2 ** -40)).toBe(0x3c00);
  });
});

describe('bf16', () => {
  it('decodes all 65536 patterns as the top half of a float32', () => {
    const dv = new DataView(new ArrayBuffer(4));
    for (let h = 0; h < 65536; h++) {
      dv.setUint32(0, h << 16);
      const want = dv.getFloat32(0);
      if (!Object.is(bf16ToF32(h), want)) throw new Error(`bf16ToF32(0x${h.toString(16)})`);
    }
  });

  it('round-trips every non-NaN pattern and keeps NaN a NaN', () => {
    for (let h = 0; h < 65536; h++) {
      const back = f32ToBf16(bf16ToF32(h));
      if (isNaNBits16Bf16(h)) expect(isNaNBits16Bf16(back)).toBe(true);
      else if (back !== h) throw new Error(`bf16 round trip of 0x${h.toString(16)} gave 0x${back.toString(16)}`);
    }
    expect(f32ToBf16(NaN)).toBe(0x7fc0);
  });

  it('rounds every midpoint to the even neighbour (all binades, both signs)', () => {
    for (let h = 0; h < 0x7f7f; h++) {
      const lo = bf16ToF32(h);
      const hi = bf16ToF32(h + 1);
      const mid = (lo + hi) / 2;
      const even = h % 2 === 0 ? h : h + 1;
      if (f32ToBf16(mid) !== even || f32ToBf16(-mid) !== (even | 0x8000)) throw new Error(`bf16 tie ${mid}`);
      const up = f32FromBits(((h << 16) | 0x8001) >>> 0);
      const down = f32FromBits(((h << 16) | 0x7fff) >>> 0);
      if (f32ToBf16(up) !== h + 1 || f32ToBf16(down) !== h) throw new Error(`bf16 near tie ${mid}`);
    }
    expect(f32ToBf16(f32FromBits(0x7f7fffff))).toBe(0x7f80); // max float32 rounds to Inf, as torch does
  });
});

describe('roundTo and the hot-loop rounders', () => {
  it('f32 is Math.fround', () => {
    for (const x of [0.1, 1 / 3, 1e-40, 3.5e38, -2.5]) expect(roundTo(x, 'f32')).toBe(Math.fround(x));
  });

  it('roundF16Fast/roundBf16Fast equal roundTo on ties, boundaries, subnormals and random patterns', () => {
    const check = (x: number): void => {
      const a = roundF16Fast(x);
      const b = roundTo(x, 'f16');
      if (!(a === b || (a !== a && b !== b))) throw new Error(`roundF16Fast(${x}) = ${a}, roundTo = ${b}`);
      const c = roundBf16Fast(x);
      const d = roundTo(x, 'bf16');
      if (!(c === d || (c !== c && d !== d))) throw new Error(`roundBf16Fast(${x}) = ${c}, roundTo = ${d}`);
    };
    // Every f16 tie/near-tie (low 13 bits around 0x1000) and bf16 tie (low 16 bits around 0x8000).
    for (let e = 0; e < 256; e++) {
      for (let m = 0; m < 1 << 23; m += 0x2000) {
        for (const d of [0xfff, 0x1000, 0x1001]) {
          check(f32FromBits((e << 23) | (m + d)));
          check(f32FromBits(0x80000000 | (e << 23) | (m + d)));
        }
      }
      for (let m = 0; m < 1 << 23; m += 0x10000) {
        for (const d of [0x7fff, 0x8000, 0x8001]) check(f32FromBits((e << 23) | (m + d)));
      }
    }
    // Whole binades around the fp16 subnormal/normal and overflow edges, and float32 subnormals.
    for (const e of [0, 1, 102, 112, 113, 142, 254]) {
      for (let m = 0; m < 1 << 23; m += 37) check(f32FromBits((e << 23) | m));
    }
    const bits = randomU32(mulberry32(5));
    for (let k = 0; k < 200_000; k++) check(f32FromBits(bits()));
    // Doubles that are not float32 values.
    const rnd = mulberry32(6);
    for (let k = 0; k < 100_000; k++) check((rnd() - 0.5) * 2 ** Math.floor(rnd() * 60 - 40));
  });
});

describe('decodeFloats / encodeFloats', () => {
  const dtypes: FloatDType[] = ['F32', 'F16', 'BF16'];

  it('decodes known values', () => {
    const out = new Float32Array(5);
    decodeFloats(out, Uint8Array.from([0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00, 0x00, 0x7c, 0xff, 0x7b]), 'F16');
    expect(Array.from(out)).toEqual([1, -2, 2 ** -24, Infinity, 65504]);
    const one = new Float32Array(2);
    decodeFloats(one, Uint8Array.from([0x80, 0x3f, 0x40, 0xc0]), 'BF16');
    expect(Array.from(one)).toEqual([1, -3]);
    decodeFloats(one, Uint8Array.from([0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]), 'F32');
    expect(Array.from(one)).toEqual([1, -2]);
  });

  it('matches the byte-by-byte twin at every alignment, for even and odd lengths (NaN patterns included)', () => {
    const rnd = mulberry32(21);
    for (const dtype of dtypes) {
      const bytes = DTYPE_TRAITS[dtype].bytes;
      for (const n of [0, 1, 2, 3, 7, 1000, 1001]) {
        for (let shift = 0; shift < 4; shift++) {
          const buf = new Uint8Array(n * bytes + shift);
          for (let i = 0; i < buf.length; i++) buf[i] = Math.floor(rnd() * 256);
          const src = buf.subarray(shift);
          const fast = new Float32Array(n);
          const ref = new Float32Array(n);
          decodeFloats(fast, src, dtype);
          decodeFloatsRef(ref, src, dtype);
          expect(firstDifference(fast, ref), `${dtype} n=${n} byteOffset=${shift}`).toBe(-1);
        }
      }
    }
  });

  it('decodes into a Float32Array view that does not start at its buffer start', () => {
    const src = new Uint8Array(2 * 9 + 1).subarray(1);
    encodeFloatsRef(src, Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9]), 'F16');
    const backing = new Float32Array(20).fill(-1);
    const out = backing.subarray(3, 12);
    decodeFloats(out, src, 'F16');
    expect(Array.from(out)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(backing[2]).toBe(-1);
    expect(backing[12]).toBe(-1);
  });

  it('encodes like the twin (RNE) and decode(encode(x)) = roundTo(x)', () => {
    const rnd = mulberry32(22);
    const bits = randomU32(rnd);
    for (const dtype of dtypes) {
      const bytes = DTYPE_TRAITS[dtype].bytes;
      const src = new Float32Array(4001);
      for (let i = 0; i < src.length; i++) {
        // Mix of weight-like values and arbitrary non-NaN float32 patterns.
        let x = i % 2 === 0 ? (rnd() - 0.5) * 0.1 : f32FromBits(bits());
        if (x !== x) x = 0.25;
        src[i] = x;
      }
      for (const shift of [0, 1]) {
        const fast = new Uint8Array(src.length * bytes + shift).subarray(shift);
        const ref = new Uint8Array(src.length * bytes);
        encodeFloats(fast, src, dtype);
        encodeFloatsRef(ref, src, dtype);
        expect(firstDifference(fast, ref), `${dtype} byteOffset=${shift}`).toBe(-1);
        const back = new Float32Array(src.length);
        decodeFloats(back, fast, dtype);
        const c = dtype === 'F32' ? 'f32' : dtype === 'F16' ? 'f16' : 'bf16';
        expect(firstDifference(back, Array.from(src, (x) => roundTo(x, c)))).toBe(-1);
      }
    }
  });

  it('encodes NaN as NaN', () => {
    const out = new Uint8Array(2);
    encodeFloats(out, Float32Array.of(NaN), 'F16');
    expect(isNaNBits16F16(out[0] | (out[1] << 8))).toBe(true);
    encodeFloats(out, Float32Array.of(NaN), 'BF16');
    expect(isNaNBits16Bf16(out[0] | (out[1] << 8))).toBe(true);
  });

  it('rejects a byte length that does not match (E_SIZE) and non-float dtypes (E_DTYPE)', () => {
    const err = (f: () => void): QuantError => {
      try {
        f();
      } catch (e) {
        return e as QuantError;
      }
      throw new Error('expected a QuantError');
    };
    expect(err(() => decodeFloats(new Float32Array(3), new Uint8Array(5), 'F16')).code).toBe('E_SIZE');
    expect(err(() => decodeFloats(new Float32Array(3), new Uint8Array(6), 'F32')).code).toBe('E_SIZE');
    expect(err(() => decodeFloatsRef(new Float32Array(3), new Uint8Array(7), 'BF16')).code).toBe('E_SIZE');
    expect(err(() => encodeFloats(new Uint8Array(5), new Float32Array(3), 'F16')).code).toBe('E_SIZE');
    expect(err(() => encodeFloatsRef(new Uint8Array(5), new Float32Array(3), 'BF16')).code).toBe('E_SIZE');
    expect(err(() => decodeFloats(new Float32Array(1), new Uint8Array(8), 'F64' as FloatDType)).code).toBe('E_DTYPE');
    expect(err(() => decodeFloats(new Float32Array(3), new Uint8Array(5), 'F16'))).toBeInstanceOf(QuantError);
  });
});
