// Test-only controls of the C stand-in (functions no Huawei library has): failure injection, a device memory limit,
// the log of every op's tensor descriptors, and live-handle counters. Production bindings live in src/ascend/bindings.ts.

import { createRequire } from 'node:module';
import path from 'node:path';
import type * as Koffi from 'koffi';
import { STANDIN_LIBRARY } from './build';

export interface LoggedTensor {
  dtype: number;
  format: number;
  dims: number[];
  strides: number[];
  offset: number;
  storage: number[];
}

/** One `...GetWorkspaceSize` call: its tensor arguments (null when not passed), scalar attributes, status, workspace. */
export interface LoggedPlan {
  op: string;
  args: Record<string, LoggedTensor | null | number | string | number[]>;
  status: number;
  workspace: number;
  a2Unsupported?: string;
}

/** One launch (second phase). */
export interface LoggedLaunch {
  launch: string;
  workspaceSize: number;
  workspaceNull: boolean;
}

export type LogEntry = LoggedPlan | LoggedLaunch;

export interface StandinStats {
  liveTensors: number;
  liveTensorLists: number;
  liveIntArrays: number;
  liveScalars: number;
  liveExecutors: number;
  queued: number;
  liveAllocations: number;
  bytesInUse: number;
  peakBytes: number;
  mallocs: number;
  frees: number;
  h2d: number;
  d2h: number;
  d2d: number;
  syncs: number;
  launches: number;
  initialized: boolean;
  device: number;
}

export interface StandinControl {
  reset(): void;
  /** The next call of native function `fn` returns `status` (constructors return NULL) with an injected message. */
  failNext(fn: string, status: number): void;
  /**
   * Call `skip + 1` of `fn` made on `device` (the calling thread's current device; for aclrtSetDevice the device asked
   * for; -1: any) returns `status`.
   */
  failCall(fn: string, status: number, device: number, skip?: number): void;
  /** aclrtMalloc fails once this many bytes would be in use (0 = no limit). */
  setMemLimit(bytes: number): void;
  log(): LogEntry[];
  clearLog(): void;
  stats(): StandinStats;
}

export function standinControl(dir: string): StandinControl {
  const koffi = createRequire(import.meta.url)('koffi') as typeof Koffi;
  const lib = koffi.load(path.join(dir, STANDIN_LIBRARY), { global: true });
  const reset = lib.func('void standin_reset()');
  const failNext = lib.func('void standin_fail_next(const char *fn, int status)');
  const failCall = lib.func('void standin_fail_call(const char *fn, int status, int device, long skip)');
  const setMemLimit = lib.func('void standin_set_mem_limit(size_t bytes)');
  const logJson = lib.func('const char *standin_log_json()');
  const logClear = lib.func('void standin_log_clear()');
  const statsJson = lib.func('const char *standin_stats_json()');
  return {
    reset: () => reset(),
    failNext: (fn, status) => failNext(fn, status),
    failCall: (fn, status, device, skip = 0) => failCall(fn, status, device, skip),
    setMemLimit: (bytes) => setMemLimit(bytes),
    log: () => JSON.parse(logJson() as string) as LogEntry[],
    clearLog: () => logClear(),
    stats: () => JSON.parse(statsJson() as string) as StandinStats,
  };
}

export function isPlan(e: LogEntry): e is LoggedPlan {
  return 'op' in e;
}

/** An injection for a process the test cannot reach: the stand-in reads this variable when it is loaded. */
export const STANDIN_FAIL_ENV = 'W8A16_STANDIN_FAIL';

/** The value of STANDIN_FAIL_ENV for failCall-like injections (`fn:status[@device][+skip]`, comma-separated). */
export function standinFailSpec(...calls: { fn: string; status: number; device?: number; skip?: number }[]): string {
  return calls.map((c) => `${c.fn}:${c.status}${c.device !== undefined ? `@${c.device}` : ''}${c.skip ? `+${c.skip}` : ''}`).join(',');
}
