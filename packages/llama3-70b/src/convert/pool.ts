// Runs conversion units on worker threads (one per core by default), or inline when threads = 1
// or when the compiled worker script is not available (running from TypeScript sources).

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { CliError } from '../cli/errors';
import { UnitRunner, type Unit, type UnitResult } from './units';

export interface UnitExecutor {
  readonly threads: number;
  readonly mode: 'workers' | 'inline';
  run(unit: Unit): Promise<UnitResult>;
  close(): Promise<void>;
}

/** The compiled worker sits next to the compiled CLI (tsup entry `convert-worker`). */
export function workerScriptPath(): string | undefined {
  const candidate = fileURLToPath(new URL('./convert-worker.js', import.meta.url));
  return existsSync(candidate) ? candidate : undefined;
}

class InlineExecutor implements UnitExecutor {
  readonly threads = 1;
  readonly mode = 'inline' as const;
  private readonly runner = new UnitRunner();
  async run(unit: Unit): Promise<UnitResult> {
    return this.runner.run(unit);
  }
  async close(): Promise<void> {
    this.runner.close();
  }
}

interface Pending {
  resolve: (r: UnitResult) => void;
  reject: (e: Error) => void;
}

/**
 * Units a worker holds at once: one being computed while the previous one's output is written (the worker writes
 * in the background, see UnitRunner.runAsync). `idle` holds a worker once per free slot.
 */
export const UNITS_PER_WORKER = 2;

class WorkerExecutor implements UnitExecutor {
  readonly mode = 'workers' as const;
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly queue: { id: number; unit: Unit }[] = [];
  /**
   * m3 search chunks jump the queue: the tensors of a layer wait for its m3 choice, so the searches are the
   * critical path, while any queued conversion unit can run later without delaying anything.
   */
  private readonly urgent: { id: number; unit: Unit }[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private failed: Error | undefined;

  constructor(
    script: string,
    readonly threads: number,
  ) {
    for (let i = 0; i < threads; i++) {
      const w = new Worker(script);
      w.on('message', (msg: { id: number; result?: UnitResult; error?: { code?: string; message: string; stack?: string } }) => {
        const p = this.pending.get(msg.id);
        this.pending.delete(msg.id);
        this.idle.push(w);
        if (p) {
          if (msg.error) {
            const err = msg.error.code ? new CliError(msg.error.code, msg.error.message) : new Error(msg.error.stack ?? msg.error.message);
            p.reject(err);
          } else {
            p.resolve(msg.result as UnitResult);
          }
        }
        this.pump();
      });
      w.on('error', (err) => this.fail(err));
      w.on('exit', (code) => {
        if (code !== 0 && !this.failed) this.fail(new Error(`conversion worker exited with status ${code}`));
      });
      this.workers.push(w);
    }
    // Slots interleaved (w0, w1, ..., w0, w1, ...) and taken first-free-first, so units spread over the workers.
    for (let k = 0; k < UNITS_PER_WORKER; k++) this.idle.push(...this.workers);
  }

  private fail(err: Error): void {
    this.failed = err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  private pump(): void {
    while (this.idle.length > 0 && this.urgent.length + this.queue.length > 0) {
      const w = this.idle.shift() as Worker;
      const job = (this.urgent.shift() ?? this.queue.shift()) as { id: number; unit: Unit };
      w.postMessage(job);
    }
  }

  run(unit: Unit): Promise<UnitResult> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.nextId++;
    return new Promise<UnitResult>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      (unit.kind === 'm3search' ? this.urgent : this.queue).push({ id, unit });
      this.pump();
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

export function createExecutor(threads: number): UnitExecutor {
  const script = workerScriptPath();
  if (threads <= 1 || !script) return new InlineExecutor();
  return new WorkerExecutor(script, threads);
}
