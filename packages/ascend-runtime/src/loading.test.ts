// How the native addon is (not) loaded, kernel selection, and the errors every misuse gets.
import { createRequire } from 'node:module';
import { afterEach, describe, expect, it } from 'vitest';
import type { Backend } from './backend';

const requireCache = createRequire(import.meta.url).cache;
const loadedAddons = (): string[] => Object.keys(requireCache).filter((k) => k.endsWith('.node'));

describe('loading', () => {
  const savedEnv = process.env.W8A16_HOST_ADDON;
  afterEach(() => {
    if (savedEnv === undefined) delete process.env.W8A16_HOST_ADDON;
    else process.env.W8A16_HOST_ADDON = savedEnv;
  });

  it('importing the package loads no native code; a native host backend does', async () => {
    expect(loadedAddons()).toEqual([]);
    const { createHostBackend } = await import('./index');
    expect(loadedAddons()).toEqual([]);
    createHostBackend({ kernels: 'js' }).dispose();
    expect(loadedAddons()).toEqual([]);
    const b = createHostBackend({ kernels: 'native' });
    expect(loadedAddons()).toHaveLength(1);
    expect(b.info.kernels).toMatch(/^native-(avx512|avx2|scalar)$/);
    b.dispose();
  });

  it("'auto' falls back to js with exactly one log line when the addon is missing; 'native' throws naming path and build command", async () => {
    const { createHostBackend, BackendError } = await import('./index');
    process.env.W8A16_HOST_ADDON = '/nonexistent/ascend_host.node';
    const lines: string[] = [];
    const logger = { info: (m: string) => lines.push(`info ${m}`), warn: (m: string) => lines.push(`warn ${m}`) };
    const b = createHostBackend({ kernels: 'auto', logger });
    expect(b.info).toEqual({ name: 'host', kernels: 'js', threads: 1 });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('/nonexistent/ascend_host.node');
    createHostBackend({ kernels: 'js', logger });
    expect(lines).toHaveLength(1);
    let err: unknown;
    try {
      createHostBackend({ kernels: 'native', logger });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BackendError);
    expect((err as InstanceType<typeof BackendError>).code).toBe('E_NATIVE_MISSING');
    expect((err as Error).message).toContain('/nonexistent/ascend_host.node');
    expect((err as Error).message).toContain('node-gyp rebuild');
  });
});

describe('native kernels agree with each other', () => {
  it('W8A16 gives the same bits at every instruction set and thread count (integer sums are exact)', async () => {
    const { createHostBackend, loadHostAddon } = await import('./index');
    const { gen } = await import('./test-data');
    const isas = (['scalar', 'avx2', 'avx512'] as const).slice(0, loadHostAddon().bestIsa() + 1);
    const g = gen(21);
    const [n, k, T] = [37, 1000, 5];
    const desc = {
      n,
      k,
      weight: g.i8(n * k),
      scale: Float32Array.from({ length: n }, () => g.uniform(1e-3, 1e-2)),
      offset: Float32Array.from({ length: n }, () => g.int(-128, 127)),
      bias: g.f32(n),
    };
    const x = g.f32(T * k);
    const results = isas.flatMap((isa) =>
      [1, 2].map((threads) => {
        const b = createHostBackend({ kernels: 'native', isa, threads });
        const xt = b.alloc(T, k);
        b.upload(xt, x);
        const y = b.alloc(T, n);
        b.linear(y, xt, b.createW8A16Linear(desc));
        const out = b.download(y);
        b.dispose();
        return Array.from(out);
      }),
    );
    expect(results.length).toBe(isas.length * 2);
    for (const r of results) expect(r).toEqual(results[0]);
  });

  it('hundreds of back-to-back 2-thread calls of changing sizes equal the 1-thread results (pool hand-off)', async () => {
    const { createHostBackend } = await import('./index');
    const { gen } = await import('./test-data');
    const g = gen(23);
    const one = createHostBackend({ kernels: 'native', threads: 1 });
    const two = createHostBackend({ kernels: 'native', threads: 2 });
    let calls = 0;
    for (let i = 0; i < 300; i++) {
      const [n, k, T] = [g.int(64, 700), g.int(100, 400), g.int(1, 3)];
      const desc = { n, k, weight: g.i8(n * k), scale: new Float32Array(n).fill(0.01), offset: new Float32Array(n).fill(1) };
      const x = g.f32(T * k);
      const outs = [one, two].map((b) => {
        const xt = b.alloc(T, k);
        b.upload(xt, x);
        const y = b.alloc(T, n);
        const w = b.createW8A16Linear(desc);
        b.linear(y, xt, w);
        const out = b.download(y);
        b.free(xt);
        b.free(y);
        b.freeWeight(w);
        return out;
      });
      expect(outs[1]).toEqual(outs[0]);
      calls++;
    }
    expect(calls).toBe(300);
    one.dispose();
    two.dispose();
  });

  it('float linear gives the same bits at 1 and 2 threads', async () => {
    const { createHostBackend } = await import('./index');
    const { gen } = await import('./test-data');
    const g = gen(22);
    const [n, k, T] = [300, 129, 3];
    const data = g.f32(n * k);
    const x = g.f32(T * k);
    const run = (threads: number): number[] => {
      const b = createHostBackend({ kernels: 'native', threads });
      const xt = b.alloc(T, k);
      b.upload(xt, x);
      const y = b.alloc(T, n);
      b.linear(y, xt, b.createFloatLinear({ n, k, dtype: 'f32', data }));
      const out = Array.from(b.download(y));
      b.dispose();
      return out;
    };
    expect(run(2)).toEqual(run(1));
  });
});

describe('errors', () => {
  const code = (fn: () => unknown): string | undefined => {
    try {
      fn();
    } catch (e) {
      return (e as { code?: string }).code;
    }
    return undefined;
  };

  it.each(['js', 'native'] as const)('%s kernels: shape, dtype, range, handle and lifetime misuse each get their code', async (kernels) => {
    const { createHostBackend } = await import('./index');
    const b: Backend = createHostBackend({ kernels });
    const other: Backend = createHostBackend({ kernels: 'js' });
    const w = b.createW8A16Linear({ n: 4, k: 8, weight: new Int8Array(32), scale: new Float32Array(4).fill(1), offset: new Float32Array(4) });
    const x = b.alloc(2, 8);
    expect(code(() => b.linear(b.alloc(2, 5), x, w))).toBe('E_SHAPE');
    expect(code(() => b.linear(b.alloc(2, 4), b.alloc(2, 7), w))).toBe('E_SHAPE');
    expect(code(() => b.linear(other.alloc(2, 4), x, w))).toBe('E_FOREIGN_HANDLE');
    expect(code(() => b.createW8A16Linear({ n: 4, k: 8, weight: new Int8Array(31), scale: new Float32Array(4), offset: new Float32Array(4) }))).toBe('E_SHAPE');
    expect(code(() => b.createFloatLinear({ n: 2, k: 2, dtype: 'f16', data: new Float32Array(4) }))).toBe('E_DTYPE');
    expect(code(() => b.alloc(2, 2, 'f16'))).toBe('E_DTYPE');
    expect(code(() => b.createKvCache({ numBlocks: 2, blockSize: 4, nKvHeads: 1, headDim: 4, dtype: 'int8' }))).toBe('E_ARGUMENT');
    const cache = b.createKvCache({ numBlocks: 2, blockSize: 4, nKvHeads: 1, headDim: 4, dtype: 'f32' });
    const kv = b.alloc(1, 4);
    expect(code(() => b.kvWrite(cache, kv, kv, Int32Array.from([8])))).toBe('E_RANGE');
    const q = b.alloc(1, 8);
    const batch = { numSeqs: 1, queryStart: Int32Array.from([0, 1]), positions: Int32Array.from([3]), contextLens: Int32Array.from([3]), blockTables: Int32Array.from([0, 1]), maxBlocksPerSeq: 2 };
    expect(code(() => b.pagedAttention(b.alloc(1, 8), q, cache, batch))).toBe('E_RANGE');
    expect(code(() => b.pagedAttention(b.alloc(1, 8), q, cache, { ...batch, positions: Int32Array.from([2]), blockTables: Int32Array.from([0, 7]), contextLens: Int32Array.from([6]) }))).toBe('E_RANGE');
    expect(code(() => b.view(x, 1, 2))).toBe('E_RANGE');
    const v = b.view(x, 1, 1);
    b.free(x);
    expect(code(() => b.download(v))).toBe('E_FOREIGN_HANDLE');
    b.freeWeight(w);
    expect(code(() => b.linear(b.alloc(2, 4), b.alloc(2, 8), w))).toBe('E_FOREIGN_HANDLE');
    b.dispose();
    expect(code(() => b.alloc(1, 1))).toBe('E_DISPOSED');
    other.dispose();
  });
});
