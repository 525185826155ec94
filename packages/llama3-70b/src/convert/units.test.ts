import { describe, expect, it } from 'vitest';
import { f32ToBf16, f32ToF16 } from '@w8a16/quant-core';
import { closeSync, constants as fsConstants, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applySmoothing, firstNonFinite, UnitRunner, type CopyUnit } from './units';

function bytes16(values: number[], enc: (x: number) => number, offset = 0): Uint8Array {
  const buf = new Uint8Array(offset + values.length * 2);
  values.forEach((v, i) => {
    const h = enc(v);
    buf[offset + 2 * i] = h & 0xff;
    buf[offset + 2 * i + 1] = h >> 8;
  });
  return buf.subarray(offset);
}

describe('firstNonFinite', () => {
  const clean = Array.from({ length: 5000 }, (_, i) => Math.sin(i) * 1000);
  it.each([
    ['F16', f32ToF16],
    ['BF16', f32ToBf16],
  ] as const)('%s: finds the first NaN/Inf at every position, aligned or not, and passes clean data', (dtype, enc) => {
    for (const offset of [0, 1, 2]) {
      expect(firstNonFinite(bytes16(clean, enc, offset), dtype)).toBe(-1);
      for (const pos of [0, 1, 2047, 2048, 2049, 4999]) {
        for (const bad of [Infinity, -Infinity, NaN]) {
          const v = clean.slice();
          v[pos] = bad;
          v[4000] = NaN;
          expect(firstNonFinite(bytes16(v, enc, offset), dtype), `${dtype} pos ${pos} offset ${offset}`).toBe(Math.min(pos, 4000));
        }
      }
    }
  });

  it('F32: finds NaN/Inf and passes the largest finite values', () => {
    const f = new Float32Array([1, -3.4028234663852886e38, 3.4028234663852886e38, 0, -0]);
    expect(firstNonFinite(new Uint8Array(f.buffer), 'F32')).toBe(-1);
    f[3] = -Infinity;
    expect(firstNonFinite(new Uint8Array(f.buffer), 'F32')).toBe(3);
  });
});

describe('applySmoothing (float32)', () => {
  // The f32 path relies on one rounding by the Float32Array store; this holds it to an explicit Math.fround per
  // operation on values spread over many binades, scales included.
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  const rows = 7;
  const cols = 33;
  const w0 = Float32Array.from({ length: rows * cols }, () => rand() * 2 ** Math.round(rand() * 20));
  it('multiplies columns exactly as float32 arithmetic does', () => {
    const s = Float32Array.from({ length: cols }, () => Math.abs(rand()) * 2 ** Math.round(rand() * 10) + 1e-4);
    const w = w0.slice();
    applySmoothing(w, 3, rows, cols, { op: 'mul-cols', s, compute: 'f32' });
    const want = w0.map((v, i) => Math.fround(v * s[i % cols]));
    expect(Array.from(w)).toEqual(Array.from(want));
  });
  it('divides elementwise from rowStart exactly as float32 arithmetic does', () => {
    const s = Float32Array.from({ length: (rows + 3) * cols }, () => Math.abs(rand()) * 2 ** Math.round(rand() * 10) + 1e-4);
    const w = w0.slice();
    applySmoothing(w, 3, rows, cols, { op: 'div', s, compute: 'f32' });
    const want = w0.map((v, i) => Math.fround(v / s[3 * cols + i]));
    expect(Array.from(w)).toEqual(Array.from(want));
  });
});

describe('UnitRunner output writes (O_DIRECT for whole pages, the page cache around them)', () => {
  // Units of odd sizes at odd offsets, run out of order, two runners on one file (as two workers are): every byte
  // must land where the plan says, whichever way each range was written.
  it('writes every unit byte-exactly at its offset, with neighbours sharing pages (sync and background writes)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'w8a16-units-'));
    try {
      const rows = 211;
      const cols = 1531; // F16: 3062-byte rows, so unit boundaries fall mid-page
      const rowBytes = cols * 2;
      const src = join(dir, 'src.bin');
      const dst = join(dir, 'dst.bin');
      let seed = 7;
      const payload = Uint8Array.from({ length: rows * rowBytes }, () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24);
      for (let i = 1; i < payload.length; i += 2) payload[i] &= 0x3b; // keep every F16 exponent below all-ones
      const srcBase = 77;
      const dstBase = 12345;
      writeFileSync(src, Buffer.concat([Buffer.alloc(srcBase, 1), payload]));
      writeFileSync(dst, Buffer.alloc(dstBase + payload.length + 999, 0xee));
      const per = 37;
      const units: CopyUnit[] = [];
      for (let r = 0; r < rows; r += per) {
        const rowCount = Math.min(per, rows - r);
        units.push({ kind: 'copy', tensor: 't', srcPath: src, srcOffset: srcBase + r * rowBytes, srcDType: 'F16', rowStart: r, rowCount, cols, dstPath: dst, dstOffset: dstBase + r * rowBytes, dstDType: 'F16' });
      }
      const runners = [new UnitRunner(), new UnitRunner()];
      // Runner 0 as a worker runs it: runAsync, its writes still in flight while it prepares the next unit (so two
      // output buffers are in use at once); runner 1 synchronously, as the inline executor.
      const inFlight: Promise<unknown>[] = [];
      [4, 1, 5, 0, 3, 2].forEach((i, k) => (k % 2 === 0 ? inFlight.push(runners[0].runAsync(units[i])) : runners[1].run(units[i])));
      await Promise.all(inFlight);
      runners.forEach((r) => r.close());
      const out = readFileSync(dst);
      expect(out.subarray(0, dstBase).every((b) => b === 0xee)).toBe(true);
      expect(Buffer.compare(out.subarray(dstBase, dstBase + payload.length), Buffer.from(payload))).toBe(0);
      expect(out.subarray(dstBase + payload.length).every((b) => b === 0xee)).toBe(true);
      // Where the file system takes O_DIRECT (ext4, xfs; not tmpfs), the whole pages did go around the page cache.
      if (directWorks(dir)) expect(runners[0].directBytesWritten + runners[1].directBytesWritten).toBeGreaterThan(payload.length / 2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('UnitRunner.runAsync after a failed unit', () => {
  // A failing unit must give its buffers back exactly once: were one listed free twice, the next two units in flight
  // would share it and write each other's bytes.
  it('rejects with the located error, then still writes concurrent units byte-exactly', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'w8a16-units-'));
    try {
      const cols = 4099;
      const rowBytes = cols * 2;
      const rows = 40;
      let seed = 11;
      const payload = Uint8Array.from({ length: rows * rowBytes }, () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24);
      for (let i = 1; i < payload.length; i += 2) payload[i] &= 0x3b; // finite F16 values
      const bad = payload.slice(0, 24 * rowBytes); // larger than each later unit, so its buffer is reused
      bad[3 * rowBytes + 7] = 0x7c; // row 3, column 3: high byte of an F16 Inf
      bad[3 * rowBytes + 6] = 0x00;
      const src = join(dir, 'src.bin');
      const dst = join(dir, 'dst.bin');
      writeFileSync(src, Buffer.concat([Buffer.from(bad), Buffer.from(payload)]));
      writeFileSync(dst, Buffer.alloc(payload.length + 100, 0));
      const unit = (srcOffset: number, rowStart: number, rowCount: number, dstOffset: number): CopyUnit => ({
        kind: 'copy', tensor: 't', srcPath: src, srcOffset, srcDType: 'F16', rowStart, rowCount, cols, dstPath: dst, dstOffset, dstDType: 'F16',
      });
      const runner = new UnitRunner();
      await expect(runner.runAsync(unit(0, 0, 24, 0))).rejects.toMatchObject({ code: 'E_NONFINITE_WEIGHT', message: expect.stringContaining('row 3, column 3') });
      const half = rows / 2;
      await Promise.all([runner.runAsync(unit(bad.length, 0, half, 50)), runner.runAsync(unit(bad.length + half * rowBytes, half, half, 50 + half * rowBytes))]);
      runner.close();
      expect(Buffer.compare(readFileSync(dst).subarray(50, 50 + payload.length), Buffer.from(payload))).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function directWorks(dir: string): boolean {
  const O_DIRECT = (fsConstants as Record<string, number | undefined>).O_DIRECT;
  if (O_DIRECT === undefined) return false;
  try {
    closeSync(openSync(join(dir, 'src.bin'), fsConstants.O_RDONLY | O_DIRECT));
    return true;
  } catch {
    return false;
  }
}
