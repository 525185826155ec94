// Importing the package must not load native code: koffi and the CANN libraries load when a backend is created.
import { createRequire } from 'node:module';
import path from 'node:path';
import { expect, it } from 'vitest';
import { buildStandin } from '../../test/standin/build';

const require = createRequire(import.meta.url);
const koffiLoaded = (): boolean => Object.keys(require.cache).some((k) => k.includes(`${path.sep}koffi${path.sep}`));

it('importing the package index and the ascend module loads no koffi; creating an Ascend backend does', async () => {
  const libDir = buildStandin();
  expect(koffiLoaded()).toBe(false);
  await import('../index');
  const ascend = await import('./index');
  expect(ascend.librarySearchDirs({ env: { ASCEND_TOOLKIT_HOME: '/opt/cann' } })[0]).toEqual({ dir: '/opt/cann/lib64', source: 'ASCEND_TOOLKIT_HOME=/opt/cann' });
  expect(koffiLoaded()).toBe(false);
  const b = ascend.createAscendBackend({ libDir });
  expect(koffiLoaded()).toBe(true);
  b.dispose();
});
