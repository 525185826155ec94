// Whole-checkpoint bit-exactness: every linear msModelSlim quantized in the RTN fixtures is
// reproduced from the source checkpoint (decodeFloats + quantizeRows, f32 arithmetic as the CPU
// path uses). A minimal safetensors reader lives here because quant-core may not import format.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeFloats, type FloatDType } from './dtype';
import { quantizeRows, quantizeRowsRef } from './quantize';
import { FIXTURES_DIR, firstDifference } from './test-helpers';

interface TensorEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/** name -> raw bytes view, dtype, shape (test-only reader: 8-byte LE header length + JSON header). */
function readSafetensors(file: string): Map<string, { bytes: Uint8Array; dtype: string; shape: number[] }> {
  const buf = readFileSync(file);
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, TensorEntry>;
  const base = 8 + headerLen;
  const out = new Map<string, { bytes: Uint8Array; dtype: string; shape: number[] }>();
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const bytes = new Uint8Array(buf.buffer, buf.byteOffset + base + e.data_offsets[0], e.data_offsets[1] - e.data_offsets[0]);
    out.set(name, { bytes, dtype: e.dtype, shape: e.shape });
  }
  return out;
}

function f32View(bytes: Uint8Array): Float32Array {
  const out = new Float32Array(bytes.byteLength / 4);
  decodeFloats(out, bytes, 'F32');
  return out;
}

const CASES = [
  { model: 'tiny-llama3-fp16', linears: 21 },
  { model: 'stories260K', linears: 35 },
];

describe('RTN fixtures: msModelSlim int8 codes, scales and offsets reproduced bit-exactly', () => {
  for (const { model, linears } of CASES) {
    it(`${model}/w8a16-rtn: all ${linears} quantized linears`, () => {
      const src = readSafetensors(path.join(FIXTURES_DIR, model, 'model.safetensors'));
      const ref = readSafetensors(path.join(FIXTURES_DIR, model, 'reference/w8a16-rtn/quant_model_weight_w8a16.safetensors'));
      let checked = 0;
      for (const [name, t] of ref) {
        if (t.dtype !== 'I8') continue;
        const stem = name.slice(0, -'.weight'.length);
        const s = src.get(name);
        const scaleT = ref.get(`${stem}.weight_scale`);
        const offsetT = ref.get(`${stem}.weight_offset`);
        if (s === undefined || scaleT === undefined || offsetT === undefined) throw new Error(`${model}: missing tensors for ${stem}`);
        const [rows, cols] = t.shape;
        const w = new Float32Array(rows * cols);
        decodeFloats(w, s.bytes, s.dtype as FloatDType);
        const wantQ = new Int8Array(t.bytes.buffer, t.bytes.byteOffset, rows * cols);
        const wantScale = f32View(scaleT.bytes);
        const wantOffset = f32View(offsetT.bytes);
        for (const quantize of [quantizeRows, quantizeRowsRef]) {
          const out = { q: new Int8Array(rows * cols), scale: new Float32Array(rows), offset: new Float32Array(rows) };
          quantize(out, w, rows, cols, { scheme: 'asym', compute: 'f32' });
          expect(firstDifference(out.q, wantQ), `${name} q`).toBe(-1);
          expect(firstDifference(out.scale, wantScale), `${name} scale`).toBe(-1);
          expect(firstDifference(out.offset, wantOffset), `${name} offset`).toBe(-1);
        }
        checked++;
      }
      expect(checked).toBe(linears);
    });
  }
});
