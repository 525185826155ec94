// The host backend at every kernel path — js, and native at each instruction set this CPU has (threads 1 and 2):
// the shared Backend suite (src/backend-suite.ts), then what only the host promises (kernel labels, token blocking).
// If the addon is missing the native cases FAIL (createHostBackend throws); vitest.global-setup.ts builds it first.
import { describe, expect, it } from 'vitest';
import type { Backend, Tensor } from './backend';
import { describeBackendSuite } from './backend-suite';
import { createHostBackend, type HostBackendOptions } from './host/host-backend';
import { loadHostAddon, type NativeIsa } from './host/native';
import { gen } from './test-data';

function nativeIsas(): NativeIsa[] {
  const all: NativeIsa[] = ['scalar', 'avx2', 'avx512'];
  try {
    return all.slice(0, loadHostAddon().bestIsa() + 1);
  } catch {
    return all; // addon missing: every native case runs and fails in createHostBackend
  }
}

const configs: { label: string; opts: HostBackendOptions }[] = [
  { label: 'js', opts: { kernels: 'js' } },
  ...nativeIsas().flatMap((isa) => [
    { label: `native ${isa} ×1`, opts: { kernels: 'native' as const, isa, threads: 1 } },
    { label: `native ${isa} ×2`, opts: { kernels: 'native' as const, isa, threads: 2 } },
  ]),
];

function tensorOf(b: Backend, rows: number, cols: number, data: Float32Array): Tensor {
  const t = b.alloc(rows, cols);
  b.upload(t, data);
  return t;
}

for (const { label, opts } of configs) {
  // The elementwise ops and rope are the Refs' own f32 expressions on every host path; only the js kernels
  // compute attention in f64 (the native kernel is f32, held to the f32 bound).
  describeBackendSuite(`host, ${label} kernels`, () => createHostBackend(opts), { bitExactElementwise: true, f64Attention: opts.kernels === 'js' });
}

describe.each(configs)('host backend, $label kernels', ({ opts }) => {
  const make = (): Backend => createHostBackend(opts);

  it('reports its kernels and takes f32 activations only', () => {
    const b = make();
    expect(b.info.name).toBe('host');
    expect(b.info.kernels).toBe(opts.kernels === 'js' ? 'js' : `native-${opts.isa}`);
    expect(b.info.threads).toBe(opts.kernels === 'js' ? 1 : opts.threads);
    expect(() => b.alloc(2, 2, 'f16')).toThrow(expect.objectContaining({ code: 'E_DTYPE' }));
    b.dispose();
  });

  it('W8A16 linear over T = 1..17 tokens gives each token what T = 1 gives it (token blocking is exact)', () => {
    const g = gen(77);
    const [n, k] = [11, 45];
    const q = g.i8(n * k);
    const scale = Float32Array.from({ length: n }, () => g.uniform(1e-3, 1e-2));
    const offset = Float32Array.from({ length: n }, () => g.int(-20, 20));
    const b = make();
    const w = b.createW8A16Linear({ n, k, weight: q, scale, offset });
    const x = g.f32(17 * k);
    const one = new Float32Array(n);
    for (let T = 1; T <= 17; T++) {
      const yt = b.alloc(T, n);
      b.linear(yt, tensorOf(b, T, k, x.subarray(0, T * k)), w);
      const y = b.download(yt);
      for (let t = 0; t < T; t++) {
        const y1 = b.alloc(1, n);
        b.linear(y1, tensorOf(b, 1, k, x.subarray(t * k, (t + 1) * k)), w);
        b.download(y1, one);
        expect(Array.from(y.subarray(t * n, (t + 1) * n))).toEqual(Array.from(one));
      }
    }
    b.dispose();
  });
});
