// Where `eval` keeps the float model's logits between its pass and the variants' passes: rows of f32 logits,
// written once in order and read back by row range. In memory when small, else in a temporary file that is
// removed on close. Not a cache across runs.

import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CliError } from '../cli/errors';

/**
 * Logits up to this size stay in memory; beyond, a temporary file holds them (a 70B-vocabulary model spends
 * 0.5 MB per position, so a calibration file of thousands of tokens would otherwise take GBs of heap).
 */
export const SPOOL_MEMORY_LIMIT_BYTES = 256 << 20;

export class LogitSpool {
  private readonly mem: Float32Array | undefined;
  private readonly fd: number | undefined;
  private readonly dir: string | undefined;
  private written = 0; // rows

  /** `rows` rows of `vocab` f32 logits in total. */
  constructor(
    readonly rows: number,
    readonly vocab: number,
    memoryLimitBytes = SPOOL_MEMORY_LIMIT_BYTES,
  ) {
    const bytes = rows * vocab * 4;
    if (bytes <= memoryLimitBytes) {
      this.mem = new Float32Array(rows * vocab);
    } else {
      this.dir = mkdtempSync(join(tmpdir(), 'w8a16-eval-'));
      this.fd = openSync(join(this.dir, 'float-logits.f32'), 'w+');
    }
  }

  /** Bytes the spool holds when full. */
  get bytes(): number {
    return this.rows * this.vocab * 4;
  }

  get onDisk(): boolean {
    return this.fd !== undefined;
  }

  /** Appends whole rows (`data.length` a multiple of vocab). */
  append(data: Float32Array): void {
    const n = data.length / this.vocab;
    if (!Number.isInteger(n) || this.written + n > this.rows) {
      throw new CliError('E_ARGUMENT', `LogitSpool.append: ${data.length} values are not whole rows of ${this.vocab} or overflow ${this.rows} rows (${this.written} written)`);
    }
    if (this.mem) this.mem.set(data, this.written * this.vocab);
    else writeAll(this.fd!, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), this.written * this.vocab * 4);
    this.written += n;
  }

  /** Rows [row, row+count) into `out` (length >= count·vocab); returns the filled view. */
  read(row: number, count: number, out: Float32Array): Float32Array {
    if (row < 0 || count < 0 || row + count > this.written || out.length < count * this.vocab) {
      throw new CliError('E_ARGUMENT', `LogitSpool.read: rows [${row}, ${row + count}) with ${this.written} written, buffer of ${out.length} values`);
    }
    const view = out.subarray(0, count * this.vocab);
    if (this.mem) view.set(this.mem.subarray(row * this.vocab, (row + count) * this.vocab));
    else readAll(this.fd!, new Uint8Array(view.buffer, view.byteOffset, view.byteLength), row * this.vocab * 4);
    return view;
  }

  /** Removes the temporary file (if any). */
  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    if (this.dir !== undefined) rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Node caps one write/read at 2 GiB; loop until every byte moved. */
const IO_CHUNK_BYTES = 1 << 30;

function writeAll(fd: number, bytes: Uint8Array, position: number): void {
  for (let done = 0; done < bytes.length; ) {
    done += writeSync(fd, bytes, done, Math.min(IO_CHUNK_BYTES, bytes.length - done), position + done);
  }
}

function readAll(fd: number, bytes: Uint8Array, position: number): void {
  for (let done = 0; done < bytes.length; ) {
    const n = readSync(fd, bytes, done, Math.min(IO_CHUNK_BYTES, bytes.length - done), position + done);
    if (n === 0) throw new CliError('E_SPOOL', `the temporary logit file ended early at byte ${position + done}`);
    done += n;
  }
}
