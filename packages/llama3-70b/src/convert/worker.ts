// Worker-thread entry of the converter: runs units posted by the pool, one at a time.

import { parentPort } from 'node:worker_threads';
import { UnitRunner, type Unit } from './units';

const runner = new UnitRunner();

parentPort?.on('message', (msg: { id: number; unit: Unit } | { close: true }) => {
  if ('close' in msg) {
    runner.close();
    parentPort?.close();
    return;
  }
  try {
    const result = runner.run(msg.unit);
    const transfer = [result.scale?.buffer, result.offset?.buffer].filter((b): b is ArrayBuffer => b instanceof ArrayBuffer);
    parentPort?.postMessage({ id: msg.id, result }, transfer);
  } catch (err) {
    const e = err as Error & { code?: string };
    parentPort?.postMessage({ id: msg.id, error: { code: e.code, message: e.message, stack: e.stack } });
  }
});
