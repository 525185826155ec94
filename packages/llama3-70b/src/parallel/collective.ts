// Shared-memory collectives for tensor-parallel ranks that are threads of one process: a barrier, a deterministic
// all-reduce (sum) and a small mailbox the driver broadcasts commands through, all over one SharedArrayBuffer with
// Atomics. Host only: on NPUs the all-reduce is HCCL's. Not the command protocol (runtime.ts).

import type { Backend, Tensor } from '@w8a16/ascend-runtime';
import { CliError } from '../cli/errors';

/** Int32 control words at the start of the buffer. */
const CTRL_COUNT = 0; // ranks arrived at the current barrier
const CTRL_GEN = 1; // barrier generation, bumped when the last rank arrives (and on abort, to wake everyone)
const CTRL_ABORT = 2; // 1 once a rank failed: every rank throws at its next barrier
const CTRL_ERROR_CLAIM = 3; // 1 once a rank has claimed the error text (first failure wins)
const CTRL_ERROR_LENGTH = 4; // bytes of the error text
const CONTROL_INTS = 8;
/** Bytes kept for the failing rank's error (JSON of rank, code, message); longer messages are cut. */
export const ERROR_TEXT_BYTES = 4096;

/** Sizes the shared buffer is laid out for. */
export interface GroupLayout {
  worldSize: number;
  /** Int32 words of the command mailbox. */
  mailboxInts: number;
  /** Largest tensor the all-reduce sums, in f32 elements (`maxTokensPerStep · hidden`). */
  reduceElements: number;
}

interface Offsets {
  error: number;
  mailbox: number;
  slots: number;
  sum: number;
  total: number;
}

const align8 = (n: number) => Math.ceil(n / 8) * 8;

function offsets(l: GroupLayout): Offsets {
  const error = CONTROL_INTS * 4;
  const mailbox = align8(error + ERROR_TEXT_BYTES);
  const slots = align8(mailbox + 4 * l.mailboxInts);
  const sum = slots + 4 * l.worldSize * l.reduceElements;
  return { error, mailbox, slots, sum, total: sum + 4 * l.reduceElements };
}

/** Bytes of the shared buffer for `layout`: control, error text, mailbox, one f32 slot per rank, the sum. */
export function groupBufferBytes(layout: GroupLayout): number {
  return offsets(layout).total;
}

/** A zeroed shared buffer for `layout`, to hand to every rank. */
export function createGroupBuffer(layout: GroupLayout): SharedArrayBuffer {
  for (const [k, v] of Object.entries(layout)) {
    if (!Number.isSafeInteger(v) || v < 1) throw new CliError('E_ARGUMENT', `tensor-parallel group: ${k} must be a positive integer, found ${v}`);
  }
  return new SharedArrayBuffer(groupBufferBytes(layout));
}

/** What a rank that failed left in the buffer, rethrown by the others. */
export interface RankFailure {
  rank: number;
  code: string;
  message: string;
}

/** Thrown by a rank's collective call once another rank (or itself) failed: the group cannot continue. */
export class GroupAbortedError extends CliError {
  constructor(readonly failure: RankFailure) {
    super(failure.code, `tensor-parallel rank ${failure.rank} failed: ${failure.message}`);
  }
}

/** One rank's handle on the shared buffer. Every rank must call the collectives in the same order. */
export class ShmGroup {
  readonly worldSize: number;
  /** Command words the driver writes between two barriers (runtime.ts gives them meaning). */
  readonly mailbox: Int32Array;
  private readonly ctrl: Int32Array;
  private readonly errorText: Uint8Array;
  private readonly slots: Float32Array[]; // (worldSize) each (reduceElements) one rank's partial
  private readonly sum: Float32Array; // (reduceElements) the reduced tensor

  constructor(
    buffer: SharedArrayBuffer,
    readonly layout: GroupLayout,
    readonly rank: number,
  ) {
    const o = offsets(layout);
    if (buffer.byteLength !== o.total) {
      throw new CliError('E_ARGUMENT', `tensor-parallel group: shared buffer of ${buffer.byteLength} bytes, layout needs ${o.total}`);
    }
    if (!Number.isInteger(rank) || rank < 0 || rank >= layout.worldSize) throw new CliError('E_ARGUMENT', `tensor-parallel group: rank ${rank} outside 0..${layout.worldSize - 1}`);
    this.worldSize = layout.worldSize;
    this.ctrl = new Int32Array(buffer, 0, CONTROL_INTS);
    this.errorText = new Uint8Array(buffer, o.error, ERROR_TEXT_BYTES);
    this.mailbox = new Int32Array(buffer, o.mailbox, layout.mailboxInts);
    this.slots = [...Array(layout.worldSize).keys()].map((r) => new Float32Array(buffer, o.slots + 4 * r * layout.reduceElements, layout.reduceElements));
    this.sum = new Float32Array(buffer, o.sum, layout.reduceElements);
  }

  get aborted(): boolean {
    return Atomics.load(this.ctrl, CTRL_ABORT) !== 0;
  }

  /** Returns once every rank has called it; throws GroupAbortedError if a rank failed. */
  barrier(): void {
    const c = this.ctrl;
    if (Atomics.load(c, CTRL_ABORT) !== 0) throw this.abortedError();
    const gen = Atomics.load(c, CTRL_GEN);
    if (Atomics.add(c, CTRL_COUNT, 1) === this.worldSize - 1) {
      // Last to arrive: reset the count before releasing, so an early rank of the next barrier counts from 0.
      Atomics.store(c, CTRL_COUNT, 0);
      Atomics.add(c, CTRL_GEN, 1);
      Atomics.notify(c, CTRL_GEN);
    } else {
      // No spinning first: on the 2-core dev box (shared with other work) polling before the wait made decode slower.
      while (Atomics.load(c, CTRL_GEN) === gen) Atomics.wait(c, CTRL_GEN, gen);
    }
    if (Atomics.load(c, CTRL_ABORT) !== 0) throw this.abortedError();
  }

  /**
   * In-place sum of `t` (`[rows, cols]`, at most `reduceElements`) over every rank. Each rank copies its partial into
   * its slot; after a barrier rank r sums the r-th 1/N of the elements over the slots in rank order 0..N-1 (one f64
   * accumulator, rounded once to f32); after a second barrier every rank copies the whole sum back. Every rank thus
   * gets the same bits, and the result does not depend on timing. The second barrier also keeps a fast rank from
   * overwriting its slot with the next partial while a slow one still reads it.
   */
  allReduceSum(backend: Backend, t: Tensor): void {
    const n = t.shape[0] * t.shape[1];
    if (n > this.layout.reduceElements) {
      throw new CliError('E_ARGUMENT', `allReduceSum: tensor of ${n} elements; the group was laid out for ${this.layout.reduceElements}`);
    }
    backend.download(t, this.slots[this.rank].subarray(0, n));
    this.barrier();
    this.reduceShare(n);
    this.barrier();
    backend.upload(t, this.sum.subarray(0, n));
  }

  /** Same as allReduceSum on host arrays (tests, and backends without tensors): `data` is replaced by the sum. */
  allReduceSumArray(data: Float32Array): void {
    const n = data.length;
    if (n > this.layout.reduceElements) throw new CliError('E_ARGUMENT', `allReduceSumArray: ${n} elements; the group was laid out for ${this.layout.reduceElements}`);
    this.slots[this.rank].set(data);
    this.barrier();
    this.reduceShare(n);
    this.barrier();
    data.set(this.sum.subarray(0, n));
  }

  /** Sums this rank's share of elements 0..n-1 over the slots, in rank order. */
  private reduceShare(n: number): void {
    const N = this.worldSize;
    const share = Math.ceil(n / N);
    const lo = Math.min(n, this.rank * share);
    const hi = Math.min(n, lo + share);
    const slots = this.slots;
    const sum = this.sum;
    for (let i = lo; i < hi; i++) {
      let acc = slots[0][i];
      for (let r = 1; r < N; r++) acc += slots[r][i];
      sum[i] = acc;
    }
  }

  /**
   * Marks the group failed with `err` (the first failure's text is kept) and wakes every rank, which then throws
   * GroupAbortedError from its current or next barrier.
   */
  abort(err: unknown): void {
    const c = this.ctrl;
    if (Atomics.compareExchange(c, CTRL_ERROR_CLAIM, 0, 1) === 0) {
      const e = err as { code?: unknown; message?: unknown };
      const failure: RankFailure = {
        rank: this.rank,
        code: typeof e?.code === 'string' && e.code.startsWith('E_') ? e.code : 'E_TP_RANK',
        message: typeof e?.message === 'string' ? e.message : String(err),
      };
      let bytes = new TextEncoder().encode(JSON.stringify(failure));
      if (bytes.length > ERROR_TEXT_BYTES) {
        failure.message = `${failure.message.slice(0, ERROR_TEXT_BYTES / 2)}…`;
        bytes = new TextEncoder().encode(JSON.stringify(failure)).subarray(0, ERROR_TEXT_BYTES);
      }
      this.errorText.set(bytes);
      Atomics.store(c, CTRL_ERROR_LENGTH, bytes.length);
    } else {
      // Another rank is writing the first failure: wait for its text (a few microseconds) before raising the flag.
      while (Atomics.load(c, CTRL_ERROR_LENGTH) === 0);
    }
    // The text is written before the flag, so a rank that sees the flag reads a whole message.
    Atomics.store(c, CTRL_ABORT, 1);
    Atomics.add(c, CTRL_GEN, 1);
    Atomics.notify(c, CTRL_GEN);
  }

  /** The failure recorded by abort (undefined while none). */
  failure(): RankFailure | undefined {
    if (!this.aborted) return undefined;
    const len = Atomics.load(this.ctrl, CTRL_ERROR_LENGTH);
    try {
      // TextDecoder does not read shared memory directly: copy first.
      return JSON.parse(new TextDecoder().decode(this.errorText.slice(0, len))) as RankFailure;
    } catch {
      return { rank: -1, code: 'E_TP_RANK', message: 'a rank failed and its error text could not be read' };
    }
  }

  private abortedError(): GroupAbortedError {
    return new GroupAbortedError(this.failure()!);
  }
}
