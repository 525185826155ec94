#!/usr/bin/env node
// Publishability check: `npm pack` @w8a16/quant-core and @w8a16/format, install the tarballs into an
// empty directory (no workspace, no symlinks), import them there and run a small round trip.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
const dir = mkdtempSync(join(tmpdir(), 'w8a16-pack-'));
const npm = (args, cwd) => execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
try {
  const tarballs = ['quant-core', 'format'].map((p) => {
    const out = JSON.parse(npm(['pack', '--json', '--pack-destination', dir], join(root, 'packages', p)));
    const files = out[0].files.map((f) => f.path);
    if (!files.includes('dist/index.js') || !files.includes('dist/index.d.ts')) {
      throw new Error(`@w8a16/${p}: the tarball lacks dist/index.js or dist/index.d.ts (was it built?): ${files.join(', ')}`);
    }
    if (files.some((f) => f.endsWith('.test.ts') || f.startsWith('src/'))) throw new Error(`@w8a16/${p}: the tarball ships sources or tests`);
    return join(dir, out[0].filename);
  });
  const app = join(dir, 'consumer');
  execFileSync('mkdir', ['-p', app]);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  npm(['install', '--no-audit', '--no-fund', '--offline', ...tarballs], app);
  writeFileSync(
    join(app, 'check.mjs'),
    `
import { quantizePerChannel, dequantizeRows } from '@w8a16/quant-core';
import { planSafetensors, SafetensorsWriter, Checkpoint } from '@w8a16/format';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
const w = Float32Array.from({ length: 32 }, (_, i) => Math.sin(i) * 0.1);
const q = quantizePerChannel(w, 4, 8, { scheme: 'asym', compute: 'f32' });
const back = new Float32Array(32);
dequantizeRows(back, q.q, q.scale, q.offset, 4, 8);
const err = Math.max(...w.map((x, i) => Math.abs(x - back[i])));
if (!(err <= Math.max(...q.scale) / 2 + 1e-7)) throw new Error('dequantization error too large: ' + err);
const dir = mkdtempSync(join(tmpdir(), 'w8a16-pack-st-'));
const plan = planSafetensors([{ name: 'w', dtype: 'I8', shape: [4, 8] }], { baseName: 'model' });
const wr = SafetensorsWriter.create(dir, plan);
wr.write('w', new Uint8Array(q.q.buffer));
wr.finish();
const ck = Checkpoint.open(dir);
const bytes = ck.readRows('w', 0, 4);
if (Buffer.compare(Buffer.from(bytes), Buffer.from(q.q.buffer)) !== 0) throw new Error('safetensors round trip differs');
ck.close();
console.log('pack-check: @w8a16/quant-core and @w8a16/format install from their tarballs and work');
`,
  );
  process.stdout.write(execFileSync(process.execPath, ['check.mjs'], { cwd: app, encoding: 'utf8' }));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
