// Tensor parallelism: rank 0 is the calling thread (it also tokenizes, samples and runs the generation loop, through
// TensorParallelModel, a LlamaModel), ranks 1..N-1 are worker threads each with its own backend and shard of the
// weights. Commands and failures travel through the shared-memory group of collective.ts; the all-reduce after
// o_proj / down_proj is that group's on the host, HCCL's on Ascend NPUs (one device per rank). Not the sharding
// rules (shard.ts) nor the forward pass (model/llama.ts).

import { availableParallelism } from 'node:os';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import {
  AscendError,
  createAscendBackend,
  createHostBackend,
  type ActDType,
  type AscendBackend,
  type Backend,
  type HostKernels,
  type Tensor,
} from '@w8a16/ascend-runtime';
import { readLlamaConfig } from '@w8a16/format';
import { CliError } from '../cli/errors';
import { LlamaModel, type LlamaModelOptions } from '../model/llama';
import { loadLlamaWeights, type KvCacheChoice, type LlamaWeights, type LoadOptions } from '../model/load';
import { createGroupBuffer, GroupAbortedError, ShmGroup, type GroupLayout, type RankFailure } from './collective';
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

/** Ranks on Ascend NPUs: rank r opens device `deviceId(rank 0) + r` and joins rank 0's HCCL communicator. */
export interface AscendRankOptions {
  /** Where the worker ranks find the CANN libraries (default: the same search as rank 0, same environment). */
  libDir?: string;
  /** Activation dtype of the worker ranks' backends; must be rank 0's (default f16, as createAscendBackend). */
  actDType?: ActDType;
}

/** What a worker rank needs to open its NPU and join the communicator. */
export interface AscendRankInit extends AscendRankOptions {
  deviceId: number;
  /** Rank 0's HcclGetRootInfo bytes. */
  rootInfo: Uint8Array;
}

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
  /** Set: the rank runs on an NPU with HCCL; unset: on the host with the shared-memory all-reduce. */
  ascend?: AscendRankInit;
}

/** How a rank's model meets the others inside a step. */
interface RankCollective {
  /** In-place sum of a partial (o_proj / down_proj output) over the ranks. */
  allReduce(t: Tensor): void;
  /**
   * After each step: waits for the device, so a rank's device fault surfaces in the step that caused it (naming that
   * rank) and no rank goes back to the command mailbox while its collectives are still queued.
   */
  endStep(): void;
  /** A failing rank leaves the device communicator at once, so peers waiting in a collective for it stop waiting. */
  leave(): void;
}

function hostCollective(group: ShmGroup, backend: Backend): RankCollective {
  return { allReduce: (t) => group.allReduceSum(backend, t), endStep: () => {}, leave: () => {} };
}

function ascendCollective(backend: AscendBackend): RankCollective {
  return { allReduce: (t) => backend.allReduceSum(t), endStep: () => backend.synchronize(), leave: () => backend.destroyCommunicator() };
}

function isAscendBackend(b: Backend): b is AscendBackend {
  return b.info.name === 'ascend' && typeof (b as Partial<AscendBackend>).allReduceSum === 'function';
}

/** Runs a cleanup step after a failure: the failure that matters is already reported, and a dead device may refuse. */
function attempt(f: () => void): void {
  try {
    f();
  } catch {
    // the next cleanup step still runs
  }
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

  constructor(
    weights: LlamaWeights,
    backend: Backend,
    options: RankModelOptions,
    private readonly group: ShmGroup,
    private readonly collective: RankCollective = hostCollective(group, backend),
  ) {
    super(weights, backend, { ...options, allReduce: (t: Tensor) => collective.allReduce(t) });
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
    try {
      const logits = super.forward(seqIds, tokens, queryStart, allPositions);
      this.collective.endStep();
      return logits;
    } catch (e) {
      throw this.failStep(e);
    }
  }

  /**
   * Rank 0's step failed: the group is marked failed (ranks waiting in a host collective or for the next command stop)
   * and the error to report is chosen. A device error names its rank; one that came while another rank had already
   * failed is that rank's doing (it left the communicator mid-collective): its failure is reported, with rank 0's after.
   */
  private failStep(e: unknown): unknown {
    if (e instanceof GroupAbortedError) return e;
    const peer = this.group.failure();
    this.group.abort(e);
    if (!(e instanceof AscendError)) return e; // a model error (E_CONTEXT_FULL, ...): every rank has it, rank 0 reports
    const failure: RankFailure =
      peer && peer.rank !== 0 ? { ...peer, message: `${peer.message} (rank 0 then: ${e.message})` } : { rank: 0, code: e.code, message: e.message };
    return new GroupAbortedError(failure);
  }

  /** Rank 0 gives up on the device communicator (after a failure), so workers blocked in a collective return. */
  leaveCommunicator(): void {
    this.collective.leave();
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
  let collective: RankCollective | undefined;
  let weights: LlamaWeights | undefined;
  let model: LlamaModel | undefined;
  let ready = false;
  try {
    const a = init.ascend;
    if (a) {
      const be = createAscendBackend({ deviceId: a.deviceId, libDir: a.libDir, actDType: a.actDType });
      backend = be;
      be.initCommunicator(init.worldSize, init.rank, a.rootInfo);
      collective = ascendCollective(be);
    } else {
      backend = createHostBackend({ threads: init.threads, kernels: init.kernels });
      collective = hostCollective(group, backend);
    }
    const { config } = readLlamaConfig(init.dir);
    weights = loadLlamaWeights(init.dir, backend, { kvCache: init.kvCache, shard: planShard(config, init.rank, init.worldSize) });
    const c = collective;
    model = new LlamaModel(weights, backend, { ...init.model, allReduce: (t) => c.allReduce(t) });
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
        collective.endStep();
      } else if (cmd === CMD_RELEASE) model.release(w[MB_ARG]);
      else if (cmd === CMD_RESET) model.reset();
      else throw new CliError('E_TP_PROTOCOL', `rank ${init.rank}: unknown command ${cmd} from the driver`);
    }
  } catch (e) {
    // Another rank's failure is reported by that rank; this one records and reports its own.
    if (!(e instanceof GroupAbortedError)) {
      // Recorded before leaving the communicator: a peer that then fails in a collective finds this rank's failure.
      group.abort(e);
      const err = e as { code?: unknown; message?: unknown };
      post({ type: 'error', rank: init.rank, ready, code: typeof err.code === 'string' ? err.code : undefined, message: String(err.message ?? e) });
    }
    const c = collective;
    if (c) attempt(() => c.leave());
  } finally {
    // Every step is tried: the communicator and the device are released even when freeing a buffer fails.
    const [m, w, b] = [model, weights, backend];
    if (m) attempt(() => m.dispose());
    if (w) attempt(() => w.free());
    if (b) attempt(() => b.dispose());
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
  /**
   * Run on Ascend NPUs: `backend` must then be rank 0's Ascend backend (device d), rank r opens device d + r, and the
   * all-reduce is HCCL's on the device tensors. Unset: host ranks (threadsPerRank, kernels).
   */
  ascend?: AscendRankOptions;
}

export interface TensorParallelRun {
  model: TensorParallelModel;
  /** Rank 0's shard of the weights. */
  weights: LlamaWeights;
  /**
   * Stops the workers and waits for their threads to end; then frees rank 0's model and weights. After a failure on
   * NPUs, rank 0 first leaves the communicator so a worker blocked in a collective returns. Rank 0's backend stays
   * the caller's to dispose.
   */
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
  const rank0 = opts.backend;
  let ascend: AscendBackend | undefined;
  if (opts.ascend) {
    if (!isAscendBackend(rank0)) {
      throw new CliError('E_ARGUMENT', `startTensorParallel: ascend ranks need rank 0 on the Ascend backend, found the ${rank0.info.name} backend`);
    }
    ascend = rank0;
  }
  const m = opts.model;
  const layout: GroupLayout = {
    worldSize: N,
    mailboxInts: Mailbox.ints(m.maxSeqsPerStep, m.maxTokensPerStep),
    // HCCL sums on the devices: the group's host slots are then unused (one element is the smallest layout).
    reduceElements: ascend ? 1 : m.maxTokensPerStep * config.hiddenSize,
  };
  const buffer = createGroupBuffer(layout);
  const group = new ShmGroup(buffer, layout, 0);
  const threads = opts.threadsPerRank ?? defaultThreadsPerRank(N);
  const kernels = opts.kernels ?? 'auto';

  // Rank 0 makes the communicator's root info; the workers get it with their workerData.
  const rootInfo = ascend?.hcclRootInfo();
  const workers: Worker[] = [];
  const exited: Promise<void>[] = [];
  const ready: Promise<void>[] = [];
  for (let rank = 1; rank < N; rank++) {
    const init: RankInit = { dir: opts.dir, rank, worldSize: N, buffer, layout, model: m, kvCache: opts.load?.kvCache, threads, kernels };
    if (ascend && rootInfo) init.ascend = { deviceId: ascend.deviceId + rank, rootInfo, libDir: opts.ascend?.libDir, actDType: opts.ascend?.actDType };
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

  const collective = ascend ? ascendCollective(ascend) : hostCollective(group, rank0);
  let weights: LlamaWeights | undefined;
  let model: TensorParallelModel | undefined;
  try {
    // With real HCCL this returns once every rank has joined (the workers join before loading their shard).
    ascend?.initCommunicator(N, 0, rootInfo!);
    weights = loadLlamaWeights(opts.dir, rank0, { ...opts.load, shard: planShard(config, 0, N) });
    model = new TensorParallelModel(weights, rank0, m, group, collective);
    await Promise.all(ready);
  } catch (e) {
    group.abort(e); // workers already waiting for a command stop
    if (ascend) {
      // Device ranks release their device and communicator themselves (a terminated thread would not): rank 0 leaves
      // the communicator, the workers finish loading, see the failed group and exit; terminate only the stuck.
      attempt(() => collective.leave());
      await stopWorkers();
    } else {
      await Promise.all(workers.map((w) => w.terminate()));
    }
    const [mm, ww] = [model, weights];
    if (mm) attempt(() => mm.dispose());
    if (ww) attempt(() => ww.free());
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
      const failed = group.aborted;
      if (failed) attempt(() => tp.leaveCommunicator());
      await stopWorkers();
      if (failed) {
        attempt(() => tp.dispose());
        attempt(() => w0.free());
      } else {
        tp.dispose();
        w0.free();
      }
    },
  };
}
