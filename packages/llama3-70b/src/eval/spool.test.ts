// LogitSpool: the same rows come back whether they were kept in memory or in the temporary file, and the
// file is gone after close.

import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { LogitSpool } from './spool';

function rows(n: number, vocab: number, seed: number): Float32Array {
  const out = new Float32Array(n * vocab);
  for (let i = 0; i < out.length; i++) out[i] = Math.sin(seed * 7919 + i) * 10;
  return out;
}

describe('LogitSpool', () => {
  it.each([
    ['memory', Infinity],
    ['file', 0],
  ])('%s: reads back any row range of what was appended, bit for bit', (_, limit) => {
    const vocab = 5;
    const spool = new LogitSpool(9, vocab, limit);
    expect(spool.onDisk).toBe(limit === 0);
    const a = rows(4, vocab, 1);
    const b = rows(5, vocab, 2);
    spool.append(a);
    spool.append(b);
    const out = new Float32Array(9 * vocab);
    expect(spool.read(0, 9, out)).toEqual(Float32Array.from([...a, ...b]));
    expect(spool.read(3, 2, out)).toEqual(Float32Array.from([...a.subarray(3 * vocab), ...b.subarray(0, vocab)]));
    spool.close();
  });

  it('removes its temporary file on close', () => {
    const spool = new LogitSpool(2, 3, 0);
    spool.append(rows(2, 3, 3));
    const dir = (spool as unknown as { dir: string }).dir;
    expect(existsSync(dir)).toBe(true);
    spool.close();
    expect(existsSync(dir)).toBe(false);
  });

  it('rejects partial rows, overflow and reads past what was written (E_ARGUMENT)', () => {
    const spool = new LogitSpool(2, 3);
    expect(() => spool.append(new Float32Array(4))).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
    spool.append(new Float32Array(3));
    expect(() => spool.read(0, 2, new Float32Array(6))).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
    expect(() => spool.append(new Float32Array(6))).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
    spool.close();
  });
});
