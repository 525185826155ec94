// Shared Vitest settings: tests import sibling packages from source, so no build is needed to test.
import { fileURLToPath } from 'node:url';
import { defineConfig, type ViteUserConfig } from 'vitest/config';

const root = fileURLToPath(new URL('.', import.meta.url));
const packages = ['quant-core', 'format', 'anti-outlier', 'kvcache-int8', 'ascend-runtime'];

export function packageTestConfig(overrides: ViteUserConfig['test'] = {}): ViteUserConfig {
  return defineConfig({
    resolve: {
      alias: Object.fromEntries(packages.map((p) => [`@w8a16/${p}`, `${root}packages/${p}/src/index.ts`])),
    },
    test: {
      include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
      environment: 'node',
      testTimeout: 120_000,
      ...overrides,
    },
  });
}
