// Worker-thread entry of the converter: runs units posted by the pool, computing one at a time while the previous
// unit's output is still being written.

import { parentPort } from 'node:worker_threads';
import { UnitRunner, type Unit } from './units';

const runner = new UnitRunner();

parentPort?.on('message', (msg: { id: number; unit: Unit } | { close: true }) => {
  if ('close' in msg) {
    runner.close();
    parentPort?.close();
    return;
  }
  // Reading and computing happen now; the reply comes when the output is in the file. The pool sends a worker up to
  // UNITS_PER_WORKER units, so the next one is computed while this one's bytes are written.
  runner.runAsync(msg.unit).then(
    (result) => {
      const transfer = [result.scale?.buffer, result.offset?.buffer].filter((b): b is ArrayBuffer => b instanceof ArrayBuffer);
      parentPort?.postMessage({ id: msg.id, result }, transfer);
    },
    (err: unknown) => {
      const e = err as Error & { code?: string };
      parentPort?.postMessage({ id: msg.id, error: { code: e.code, message: e.message, stack: e.stack } });
    },
  );
});
