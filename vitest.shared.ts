// Shared Vitest settings: tests import sibling packages from source, so no build is needed to test.
import { fileURLToPath } from 'node:url';
import { defineConfig, type ViteUserConfig } from 'vitest/config';
import type { Reporter, TestModule } from 'vitest/node';

const root = fileURLToPath(new URL('.', import.meta.url));
const packages = ['quant-core', 'format', 'anti-outlier', 'kvcache-int8', 'ascend-runtime'];

/** Prints one plain `vitest: N passed, N failed, N skipped` line per package after the usual report. */
class CountsReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    const counts = { passed: 0, failed: 0, skipped: 0 };
    for (const m of modules) {
      for (const t of m.children.allTests()) {
        const state = t.result().state;
        if (state === 'passed') counts.passed++;
        else if (state === 'failed') counts.failed++;
        else counts.skipped++;
      }
    }
    process.stdout.write(`vitest: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped\n`);
  }
}

export function packageTestConfig(overrides: ViteUserConfig['test'] = {}): ViteUserConfig {
  return defineConfig({
    resolve: {
      alias: Object.fromEntries(packages.map((p) => [`@w8a16/${p}`, `${root}packages/${p}/src/index.ts`])),
    },
    test: {
      include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
      environment: 'node',
      testTimeout: 120_000,
      reporters: ['default', new CountsReporter()],
      ...overrides,
    },
  });
}
