// How the native addon is (not) loaded, kernel selection, and bit-identity of the native kernels across ISAs and threads.
// (The error code of every misuse is part of the shared Backend suite, src/backend-suite.ts.)
import { createRequire } from 'node:module';
import { afterEach, describe, expect, it } from 'vitest';

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
