// The shared-memory collectives: the all-reduce gives every rank the same bits, the fixed rank-order sum, on every
// round (N = 1, 2, 4, worker threads as ranks, back-to-back rounds of varying length); a failing rank wakes the others
// with its error; layout checks.

import { Worker } from 'node:worker_threads';
import { beforeAll, describe, expect, it } from 'vitest';
import { createGroupBuffer, GroupAbortedError, ShmGroup, groupBufferBytes, type GroupLayout } from './collective';
import { buildScriptForTests } from './test-support';

/** Each rank runs these rounds: allReduceSumArray on its partials, results copied into a shared output. */
const RANK_SCRIPT = `
import { parentPort, workerData } from 'node:worker_threads';
import { ShmGroup } from './collective';

const { buffer, layout, rank, partials, out, offsets, abortAt } = workerData;
const group = new ShmGroup(buffer, layout, rank);
const results = new Float32Array(out);
try {
  let aborted = false;
  for (let round = 0; round < partials.length && !aborted; round++) {
    if (abortAt && abortAt.rank === rank && abortAt.round === round) {
      group.abort(Object.assign(new Error('planted failure'), { code: 'E_TEST_FAILURE' }));
      aborted = true;
      break;
    }
    const data = Float32Array.from(partials[round]);
    group.allReduceSumArray(data);
    results.set(data, offsets[round]);
  }
  parentPort.postMessage(aborted ? { rank, aborted } : { rank, done: true });
} catch (e) {
  parentPort.postMessage({ rank, error: { name: e.constructor.name, code: e.code, message: e.message, failure: e.failure } });
}
`;

let script: string;
beforeAll(() => {
  script = buildScriptForTests('collective-rank', RANK_SCRIPT);
});

/** Deterministic generator (LCG). */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/**
 * f32 values spread over 24 decades and both signs: wider than an f64 accumulator's 53 bits, so summing the ranks in
 * another order changes the rounded result (a test that a wrong order fails, not only a racy one).
 */
function partial(rnd: () => number, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => (rnd() - 0.5) * 10 ** Math.floor(rnd() * 24 - 12));
}

/** The sum the all-reduce promises: ranks in order 0..N-1 into one f64, rounded once to f32. */
function rankOrderSum(parts: Float32Array[]): Float32Array {
  return Float32Array.from(parts[0], (_, i) => {
    let acc = parts[0][i];
    for (let r = 1; r < parts.length; r++) acc += parts[r][i];
    return acc;
  });
}

interface RankReply {
  rank: number;
  done?: boolean;
  aborted?: boolean;
  error?: { name: string; code: string; message: string; failure: { rank: number; code: string; message: string } };
}

/** Runs N worker ranks over `rounds[r][round]` partials; returns their replies and each rank's results. */
async function runRanks(N: number, lengths: number[], seed: number, opts: { abortAt?: { rank: number; round: number } } = {}) {
  const rnd = lcg(seed);
  const parts = lengths.map((n) => [...Array(N).keys()].map(() => partial(rnd, n)));
  if (N >= 3) {
    // Element 0 of every round: 1 + 2^60 − 2^60 (+ 0…) is 0 in rank order and 1 in any order that adds 1 last.
    for (const p of parts) p.forEach((rankPart, r) => (rankPart[0] = [1, 2 ** 60, -(2 ** 60)][r] ?? 0));
  }
  const layout: GroupLayout = { worldSize: N, mailboxInts: 1, reduceElements: Math.max(...lengths) };
  const buffer = createGroupBuffer(layout);
  const offsets: number[] = [];
  let total = 0;
  for (const n of lengths) {
    offsets.push(total);
    total += n;
  }
  const outs = [...Array(N).keys()].map(() => new SharedArrayBuffer(4 * total));
  const replies = await Promise.all(
    [...Array(N).keys()].map(
      (rank) =>
        new Promise<RankReply>((resolve, reject) => {
          const w = new Worker(script, {
            workerData: { buffer, layout, rank, partials: parts.map((p) => p[rank]), out: outs[rank], offsets, abortAt: opts.abortAt },
          });
          w.once('message', (m: RankReply) => {
            resolve(m);
            void w.terminate();
          });
          w.once('error', reject);
        }),
    ),
  );
  const results = outs.map((o) => lengths.map((n, round) => new Float32Array(o, 4 * offsets[round], n)));
  return { parts, replies, results };
}

describe('ShmGroup.allReduceSum across worker threads', () => {
  // Lengths below, at and above N, not multiples of N, and one at the laid-out maximum.
  const LENGTHS = [1, 2, 3, 5, 8, 37, 128, 1000, 4099, 1, 64, 4099];

  it.each([1, 2, 4])('N = %i: every rank gets the rank-order sum, bit for bit, every round', async (N) => {
    const { parts, replies, results } = await runRanks(N, LENGTHS, 100 + N);
    expect(replies.map((r) => r.done)).toEqual(Array(N).fill(true));
    LENGTHS.forEach((_, round) => {
      const want = rankOrderSum(parts[round]);
      for (let r = 0; r < N; r++) expect(results[r][round], `rank ${r} round ${round}`).toEqual(want);
    });
  });

  it('is deterministic: 200 back-to-back rounds, run twice, the same bits (no slot is overwritten while read)', async () => {
    const lengths = Array.from({ length: 200 }, (_, i) => 1 + ((i * 7919) % 513));
    const a = await runRanks(4, lengths, 7);
    const b = await runRanks(4, lengths, 7);
    for (let round = 0; round < lengths.length; round++) {
      const want = rankOrderSum(a.parts[round]);
      for (let r = 0; r < 4; r++) {
        expect(a.results[r][round]).toEqual(want);
        expect(b.results[r][round]).toEqual(want);
      }
    }
  });

  it('a rank that aborts wakes the others, which throw GroupAbortedError with its rank, code and message', async () => {
    const { replies } = await runRanks(3, [16, 16, 16, 16], 9, { abortAt: { rank: 2, round: 2 } });
    expect(replies[2].aborted).toBe(true);
    for (const r of [0, 1]) {
      expect(replies[r].error).toMatchObject({
        name: 'GroupAbortedError',
        code: 'E_TEST_FAILURE',
        failure: { rank: 2, code: 'E_TEST_FAILURE', message: 'planted failure' },
      });
      expect(replies[r].error!.message).toBe('tensor-parallel rank 2 failed: planted failure');
    }
  });
});

describe('ShmGroup on one thread', () => {
  const layout: GroupLayout = { worldSize: 1, mailboxInts: 4, reduceElements: 8 };

  it('N = 1: the barrier returns at once and the all-reduce leaves the data as it is', () => {
    const g = new ShmGroup(createGroupBuffer(layout), layout, 0);
    g.barrier();
    const data = Float32Array.from([1.5, -2, 3e-8, 7]);
    g.allReduceSumArray(data);
    expect(data).toEqual(Float32Array.from([1.5, -2, 3e-8, 7]));
    expect(() => g.allReduceSumArray(new Float32Array(9))).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
  });

  it('after abort every collective throws the recorded failure; the first failure is kept', () => {
    const g = new ShmGroup(createGroupBuffer(layout), layout, 0);
    g.abort(Object.assign(new Error('first'), { code: 'E_CONTEXT_FULL' }));
    g.abort(new Error('second'));
    expect(g.aborted).toBe(true);
    expect(g.failure()).toEqual({ rank: 0, code: 'E_CONTEXT_FULL', message: 'first' });
    expect(() => g.barrier()).toThrow(GroupAbortedError);
    expect(() => g.allReduceSumArray(new Float32Array(2))).toThrow(expect.objectContaining({ code: 'E_CONTEXT_FULL' }));
  });

  it('an error without an E_ code is recorded as E_TP_RANK; an overlong message is cut to fit', () => {
    const g = new ShmGroup(createGroupBuffer(layout), layout, 0);
    g.abort(new Error('x'.repeat(10_000)));
    const f = g.failure()!;
    expect(f.code).toBe('E_TP_RANK');
    expect(f.message.length).toBeLessThan(4096);
  });

  it('rejects a buffer of the wrong size, a rank outside the group and a zero-sized layout', () => {
    const buf = createGroupBuffer(layout);
    expect(groupBufferBytes(layout)).toBe(buf.byteLength);
    expect(() => new ShmGroup(new SharedArrayBuffer(buf.byteLength + 8), layout, 0)).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
    expect(() => new ShmGroup(buf, layout, 1)).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
    expect(() => createGroupBuffer({ ...layout, reduceElements: 0 })).toThrow(expect.objectContaining({ code: 'E_ARGUMENT' }));
  });
});
