// Before the tests: make sure the native addon is built and newer than its sources, building it if not
// (node-gyp works offline here), so the native half of the suite runs, and fails rather than skips.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export default function setup(): void {
  const root = path.dirname(fileURLToPath(import.meta.url));
  const addon = path.join(root, 'build/Release/ascend_host.node');
  const sources = [path.join(root, 'binding.gyp'), ...readdirSync(path.join(root, 'src/native')).map((f) => path.join(root, 'src/native', f))];
  const newest = Math.max(...sources.map((f) => statSync(f).mtimeMs));
  if (existsSync(addon) && statSync(addon).mtimeMs >= newest) return;
  try {
    execFileSync('npx', ['node-gyp', 'rebuild'], { cwd: root, stdio: 'pipe' });
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string };
    throw new Error(`ascend-runtime tests: building the native addon (npx node-gyp rebuild in ${root}) failed:\n${err.stderr?.toString() ?? err.message}`);
  }
}
