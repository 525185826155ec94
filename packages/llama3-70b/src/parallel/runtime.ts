// Tensor parallelism on the host: rank 0 is the calling thread (it also tokenizes, samples and runs the generation
// loop, through TensorParallelModel, a LlamaModel), ranks 1..N-1 are worker threads each with its own host backend
// and shard of the weights, all meeting in the shared-memory collectives of collective.ts. Not the sharding rules
// (shard.ts) nor the forward pass (model/llama.ts).

import { availableParallelism } from 'node:os';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { createHostBackend, type Backend, type HostKernels, type Tensor } from '@w8a16/ascend-runtime';
import { readLlamaConfig } from '@w8a16/format';
import { CliError } from '../cli/errors';
import { LlamaModel, type LlamaModelOptions } from '../model/llama';
import { loadLlamaWeights, type KvCacheChoice, type LlamaWeights, type LoadOptions } from '../model/load';
import { createGroupBuffer, GroupAbortedError, ShmGroup, type GroupLayout } from './collective';
import { planShard } from './shard';

/** A worker that does not end within this long after being told to exit is terminated. */
export const WORKER_EXIT_TIMEOUT_MS = 30_000;

/** Command words (mailbox[0]) the driver broadcasts. */
const CMD_FORWARD = 1;
const CMD_RELEASE = 2;
const CMD_RESET = 3;
const CMD_EXIT = 4;
/** Mailbox words: command, S, T, seqId, then seqIds (maxSeqs), tokens (maxTokens), queryStart (maxSeqs + 1). */
const MB_CMD = 0;
const MB_S = 1;
const MB_T = 2;
const MB_ARG = 3;
const MB_HEADER = 4;

/** Model options every rank shares (the all-reduce hook is added per rank). */
export type RankModelOptions = Omit<LlamaModelOptions, 'allReduce'>;

/** What a worker rank receives as workerData. */
export interface RankInit {
  dir: string;
  rank: number;
  worldSize: number;
  buffer: SharedArrayBuffer;
  layout: GroupLayout;
  model: RankModelOptions;
  kvCache: KvCacheChoice | undefined;
  threads: number;
  kernels: HostKernels;
}

/** The command mailbox over a group's shared buffer, with typed views of its arrays. */
class Mailbox {
  readonly seqIds: Int32Array;
  readonly tokens: Int32Array;
  readonly queryStart: Int32Array;
  readonly words: Int32Array;

  constructor(
    readonly group: ShmGroup,
    readonly maxSeqs: number,
    readonly maxTokens: number,
  ) {
    const mb = group.mailbox;
    this.words = mb;
    this.seqIds = mb.subarray(MB_HEADER, MB_HEADER + maxSeqs);
    this.tokens = mb.subarray(MB_HEADER + maxSeqs, MB_HEADER + maxSeqs + maxTokens);
    this.queryStart = mb.subarray(MB_HEADER + maxSeqs + maxTokens, MB_HEADER + 2 * maxSeqs + maxTokens + 1);
  }

  static ints(maxSeqs: number, maxTokens: number): number {
    return MB_HEADER + 2 * maxSeqs + maxTokens + 1;
  }

  /**
   * Driver: one command to every worker. The first barrier waits until every worker is idle (done reading the last
   * command), the second publishes the words written in between.
   */
  send(write: (words: Int32Array) => void): void {
    this.group.barrier();
    write(this.words);
    this.group.barrier();
  }

  /** Worker: waits for the next command; its words stay valid until the worker's next collective call. */
  receive(): number {
    this.group.barrier();
    this.group.barrier();
    return this.words[MB_CMD];
  }
}

/**
 * The driver's model (rank 0): a LlamaModel on its shard whose forward, release and reset are first broadcast to the
 * worker ranks, so every rank runs the same step and keeps the same cache bookkeeping. `generate` takes it as is.
 */
export class TensorParallelModel extends LlamaModel {
  readonly worldSize: number;
  private readonly mail: Mailbox;

  constructor(weights: LlamaWeights, backend: Backend, options: RankModelOptions, group: ShmGroup) {
    super(weights, backend, { ...options, allReduce: (t: Tensor) => group.allReduceSum(backend, t) });
    this.worldSize = group.worldSize;
    this.mail = new Mailbox(group, options.maxSeqsPerStep, options.maxTokensPerStep);
  }

  override forward(seqIds: ArrayLike<number>, tokens: ArrayLike<number>, queryStart: ArrayLike<number>, allPositions = false): Tensor {
    const S = seqIds.length;
    const T = tokens.length;
    // Shapes the mailbox cannot carry fail in LlamaModel's own check, on every rank alike; only send what fits.
    if (S >= 1 && S <= this.maxSeqsPerStep && T <= this.maxTokensPerStep && queryStart.length === S + 1) {
      this.mail.send((w) => {
        w[MB_CMD] = CMD_FORWARD;
        w[MB_S] = S;
        w[MB_T] = T;
        for (let s = 0; s < S; s++) this.mail.seqIds[s] = seqIds[s];
        for (let t = 0; t < T; t++) this.mail.tokens[t] = tokens[t];
        for (let s = 0; s <= S; s++) this.mail.queryStart[s] = queryStart[s];
      });
    }
    return super.forward(seqIds, tokens, queryStart, allPositions);
  }

  override release(seqId: number): void {
    this.sendQuietly(CMD_RELEASE, seqId);
    super.release(seqId);
  }

  override reset(): void {
    this.sendQuietly(CMD_RESET, 0);
    super.reset();
  }

  /**
   * Release and reset run in cleanup paths (generate releases a failed batch's sequences): once the group has failed,
   * the failure is reported by forward, and cleanup only tidies rank 0.
   */
  private sendQuietly(cmd: number, arg: number): void {
    try {
      this.mail.send((w) => {
        w[MB_CMD] = cmd;
        w[MB_ARG] = arg;
      });
    } catch (e) {
      if (!(e instanceof GroupAbortedError)) throw e;
    }
  }

  /** Driver: tells the workers to stop (their threads then end). */
  sendExit(): void {
    this.sendQuietly(CMD_EXIT, 0);
  }
}

/** Worker ranks' main loop: loads the shard, reports ready, then runs the driver's commands until exit or failure. */
export function runRank(init: RankInit, post: (msg: RankMessage) => void): void {
  const group = new ShmGroup(init.buffer, init.layout, init.rank);
  let backend: Backend | undefined;
  let weights: LlamaWeights | undefined;
  let model: LlamaModel | undefined;
  let ready = false;
  try {
    backend = createHostBackend({ threads: init.threads, kernels: init.kernels });
    const { config } = readLlamaConfig(init.dir);
    weights = loadLlamaWeights(init.dir, backend, { kvCache: init.kvCache, shard: planShard(config, init.rank, init.worldSize) });
    const be = backend;
    model = new LlamaModel(weights, be, { ...init.model, allReduce: (t) => group.allReduceSum(be, t) });
    const mail = new Mailbox(group, init.model.maxSeqsPerStep, init.model.maxTokensPerStep);
    post({ type: 'ready', rank: init.rank });
    ready = true;
    // Views of the mailbox per step shape, so a decode step allocates nothing.
    const views = new Map<number, [Int32Array, Int32Array, Int32Array]>();
    for (;;) {
      const cmd = mail.receive();
      const w = mail.words;
      if (cmd === CMD_EXIT) break;
      if (cmd === CMD_FORWARD) {
        const S = w[MB_S];
        const T = w[MB_T];
        const key = S * (mail.maxTokens + 1) + T;
        let v = views.get(key);
        if (!v) views.set(key, (v = [mail.seqIds.subarray(0, S), mail.tokens.subarray(0, T), mail.queryStart.subarray(0, S + 1)]));
        model.forwardLayers(v[0], v[1], v[2]);
      } else if (cmd === CMD_RELEASE) model.release(w[MB_ARG]);
      else if (cmd === CMD_RESET) model.reset();
      else throw new CliError('E_TP_PROTOCOL', `rank ${init.rank}: unknown command ${cmd} from the driver`);
    }
  } catch (e) {
    // Another rank's failure is reported by that rank; this one records and reports its own.
    if (!(e instanceof GroupAbortedError)) {
      group.abort(e);
      const err = e as { code?: unknown; message?: unknown };
      post({ type: 'error', rank: init.rank, ready, code: typeof err.code === 'string' ? err.code : undefined, message: String(err.message ?? e) });
    }
  } finally {
    model?.dispose();
    weights?.free();
    backend?.dispose();
  }
}

export type RankMessage = { type: 'ready'; rank: number } | { type: 'error'; rank: number; ready: boolean; code: string | undefined; message: string };

/** The compiled worker sits next to the compiled CLI (tsup entry `parallel-worker`). */
export function defaultWorkerScript(): string {
  return fileURLToPath(new URL('./parallel-worker.js', import.meta.url));
}

export interface TensorParallelOptions {
  dir: string;
  worldSize: number;
  /** Rank 0's backend (the caller's, used on this thread; freed by the caller). */
  backend: Backend;
  model: RankModelOptions;
  /** Options for rank 0's load (the workers load with the same kvCache choice and no logger). */
  load?: Pick<LoadOptions, 'kvCache' | 'logger'>;
  /** Threads of each worker rank's host backend (default: the cores divided among the ranks, at least 1). */
  threadsPerRank?: number;
  kernels?: HostKernels;
  /** The worker entry (default: parallel-worker.js beside this module, i.e. the built app). */
  workerScript?: string;
}

export interface TensorParallelRun {
  model: TensorParallelModel;
  /** Rank 0's shard of the weights. */
  weights: LlamaWeights;
  /** Stops the workers and waits for their threads to end; then frees rank 0's model and weights. */
  close(): Promise<void>;
}

/** Per-rank threads when not given: the cores shared among the ranks. */
export function defaultThreadsPerRank(worldSize: number): number {
  return Math.max(1, Math.floor(availableParallelism() / worldSize));
}

/**
 * Starts `worldSize` ranks on `dir`: checks the split (every rank's shard) first, spawns ranks 1..N-1, loads rank 0's
 * shard on this thread meanwhile, and resolves once every rank holds its weights and model.
 */
export async function startTensorParallel(opts: TensorParallelOptions): Promise<TensorParallelRun> {
  const N = opts.worldSize;
  const { config } = readLlamaConfig(opts.dir);
  for (let r = 0; r < N; r++) planShard(config, r, N); // every rank's split is valid before any thread starts
  const script = opts.workerScript ?? defaultWorkerScript();
  if (N > 1 && !existsSync(script)) {
    throw new CliError('E_TP_WORKER_MISSING', `tensor-parallel worker script ${script} not found: build the app (npx tsup, entry 'parallel-worker') or pass workerScript`);
  }
  const m = opts.model;
  const layout: GroupLayout = {
    worldSize: N,
    mailboxInts: Mailbox.ints(m.maxSeqsPerStep, m.maxTokensPerStep),
    reduceElements: m.maxTokensPerStep * config.hiddenSize,
  };
  const buffer = createGroupBuffer(layout);
  const group = new ShmGroup(buffer, layout, 0);
  const threads = opts.threadsPerRank ?? defaultThreadsPerRank(N);
  const kernels = opts.kernels ?? 'auto';

  const workers: Worker[] = [];
  const exited: Promise<void>[] = [];
  const ready: Promise<void>[] = [];
  for (let rank = 1; rank < N; rank++) {
    const init: RankInit = { dir: opts.dir, rank, worldSize: N, buffer, layout, model: m, kvCache: opts.load?.kvCache, threads, kernels };
    const w = new Worker(script, { workerData: init });
    workers.push(w);
    exited.push(new Promise((resolve) => w.once('exit', () => resolve())));
    ready.push(
      new Promise<void>((resolve, reject) => {
        w.on('message', (msg: RankMessage) => {
          if (msg.type === 'ready') resolve();
          else if (!msg.ready) reject(new CliError(msg.code?.startsWith('E_') ? msg.code : 'E_TP_RANK', `tensor-parallel rank ${msg.rank}: ${msg.message}`));
        });
        w.once('error', (e) => reject(new CliError('E_TP_RANK', `tensor-parallel rank ${rank} crashed: ${e.message}`)));
        w.once('exit', (code) => reject(new CliError('E_TP_RANK', `tensor-parallel rank ${rank} exited (status ${code}) before it was ready`)));
      }),
    );
  }

  const stopWorkers = async (): Promise<void> => {
    const timer = setTimeout(() => void Promise.all(workers.map((w) => w.terminate())), WORKER_EXIT_TIMEOUT_MS);
    await Promise.all(exited);
    clearTimeout(timer);
  };

  let weights: LlamaWeights | undefined;
  let model: TensorParallelModel | undefined;
  try {
    weights = loadLlamaWeights(opts.dir, opts.backend, { ...opts.load, shard: planShard(config, 0, N) });
    model = new TensorParallelModel(weights, opts.backend, m, group);
    await Promise.all(ready);
  } catch (e) {
    group.abort(e); // workers already waiting for a command stop; the others are terminated
    await Promise.all(workers.map((w) => w.terminate()));
    model?.dispose();
    weights?.free();
    throw e;
  }
  const tp = model;
  const w0 = weights;
  let closed = false;
  return {
    model: tp,
    weights: w0,
    async close() {
      if (closed) return;
      closed = true;
      tp.sendExit();
      await stopWorkers();
      tp.dispose();
      w0.free();
    },
  };
}
