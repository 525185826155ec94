// One device and one stream of AscendCL: every native call checked, device memory, descriptors with their lifetimes,
// the two-phase aclnn launch with a grow-only workspace. No model knowledge: backend.ts builds the ops on top.

import type { Logger } from '../backend';
import {
  ACL_FORMAT_ND,
  ACL_MEM_MALLOC_HUGE_FIRST,
  ACL_MEMCPY,
  ACL_STATUS,
  type AscendLibraries,
  type Ptr,
} from './bindings';
import { AscendError } from './errors';

/** A device tensor descriptor: view dims and strides in elements, offset in elements from `data`, storage dims. */
export interface TensorDesc {
  dtype: number;
  dims: readonly number[];
  strides: readonly number[];
  offset: number;
  storage: readonly number[];
  data: Ptr;
}

/** Row-major strides of `dims`. */
export function contiguousStrides(dims: readonly number[]): number[] {
  const s = new Array<number>(dims.length);
  let acc = 1;
  for (let i = dims.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= dims[i];
  }
  return s;
}

/** aclInit is once per process and aclFinalize would end every user's runtime, so sessions share it by count. */
const processAcl = new Map<AscendLibraries, { users: number; owned: boolean }>();
/** The device current on this (the only JS) thread; aclrtSetDevice is repeated only when a session switches it. */
let currentDevice = new Map<AscendLibraries, number>();

/**
 * Descriptors made for one op call. aclnn takes them by pointer during `...GetWorkspaceSize` and the executor keeps
 * what it needs, so they are destroyed right after the launch (as torch_npu and ATB do).
 */
export class DescScope {
  private readonly tensors: Ptr[] = [];
  private readonly lists: Ptr[] = [];
  private readonly intArrays: Ptr[] = [];
  private readonly scalars: Ptr[] = [];

  constructor(private readonly s: AclSession) {}

  tensor(d: TensorDesc): Ptr {
    const { nn } = this.s.libs;
    const t = nn.aclCreateTensor(d.dims as number[], d.dims.length, d.dtype, d.strides as number[], d.offset, ACL_FORMAT_ND, d.storage as number[], d.storage.length, d.data);
    this.tensors.push(this.s.checkHandle(t, 'aclCreateTensor'));
    return t as Ptr;
  }

  /** An aclTensorList that takes ownership of `d`'s tensor (the list destroys it). */
  tensorList(d: TensorDesc): Ptr {
    const { nn } = this.s.libs;
    const t = this.s.checkHandle(
      nn.aclCreateTensor(d.dims as number[], d.dims.length, d.dtype, d.strides as number[], d.offset, ACL_FORMAT_ND, d.storage as number[], d.storage.length, d.data),
      'aclCreateTensor',
    );
    const list = nn.aclCreateTensorList([t], 1);
    if (list === null) {
      nn.aclDestroyTensor(t);
      this.s.checkHandle(list, 'aclCreateTensorList');
    }
    this.lists.push(list as Ptr);
    return list as Ptr;
  }

  intArray(values: ArrayLike<number>): Ptr {
    const a = this.s.libs.nn.aclCreateIntArray(Array.from(values), values.length);
    this.intArrays.push(this.s.checkHandle(a, 'aclCreateIntArray'));
    return a as Ptr;
  }

  /** An aclScalar holding an f32 (aclnnAdd's alpha). */
  floatScalar(value: number): Ptr {
    const v = this.s.libs.nn.aclCreateScalar(new Float32Array([value]), 0);
    this.scalars.push(this.s.checkHandle(v, 'aclCreateScalar'));
    return v as Ptr;
  }

  destroy(): void {
    const { nn } = this.s.libs;
    // Every handle is released even when one release fails; the first failure is reported.
    let first: unknown;
    const attempt = (status: number, fn: string): void => {
      try {
        this.s.check(status, fn);
      } catch (e) {
        first ??= e;
      }
    };
    for (const t of this.tensors.splice(0)) attempt(nn.aclDestroyTensor(t), 'aclDestroyTensor');
    for (const l of this.lists.splice(0)) attempt(nn.aclDestroyTensorList(l), 'aclDestroyTensorList');
    for (const a of this.intArrays.splice(0)) attempt(nn.aclDestroyIntArray(a), 'aclDestroyIntArray');
    for (const v of this.scalars.splice(0)) attempt(nn.aclDestroyScalar(v), 'aclDestroyScalar');
    if (first) throw first;
  }
}

/** Phase one of an aclnn operator: called with the two out-parameters, returns its status. */
export type PlanFn = (workspaceSize: [number], executor: [Ptr | null]) => number;

/** A device buffer that only grows (workspace, index uploads, temporaries), so steady-state decode allocates nothing. */
export class GrowBuffer {
  ptr: Ptr | null = null;
  bytes = 0;

  constructor(
    private readonly s: AclSession,
    readonly what: string,
  ) {}

  /** At least `bytes` bytes. Growing synchronizes first: queued kernels may still use the old buffer. */
  ensure(bytes: number): Ptr {
    if (this.ptr !== null && this.bytes >= bytes) return this.ptr;
    const want = Math.max(bytes, Math.ceil(this.bytes * 1.5), 512);
    this.release();
    this.ptr = this.s.malloc(want, this.what);
    this.bytes = want;
    return this.ptr;
  }

  release(): void {
    if (this.ptr === null) return;
    this.s.sync();
    this.s.free(this.ptr);
    this.ptr = null;
    this.bytes = 0;
  }
}

export class AclSession {
  readonly stream: Ptr;
  private readonly workspace: GrowBuffer;
  private readonly allocations = new Map<Ptr, number>();
  private disposed = false;
  /** Work queued on the stream since the last synchronize. */
  private pending = false;

  constructor(
    readonly libs: AscendLibraries,
    readonly deviceId: number,
    private readonly logger?: Logger,
  ) {
    const state = processAcl.get(libs);
    if (!state) {
      const st = libs.acl.aclInit(null);
      // Another library in the process (torch_npu, MindIE) may have initialized AscendCL already: then it owns it.
      if (st === ACL_STATUS.repeatInitialize) this.recentMessage();
      else this.check(st, 'aclInit');
      processAcl.set(libs, { users: 1, owned: st === 0 });
    } else {
      state.users++;
    }
    try {
      this.activate();
      const out: [Ptr | null] = [null];
      this.check(libs.acl.aclrtCreateStream(out), 'aclrtCreateStream');
      this.stream = out[0] as Ptr;
    } catch (e) {
      this.releaseProcess();
      throw e;
    }
    this.workspace = new GrowBuffer(this, 'aclnn workspace');
  }

  /** The thread's current device must be this session's before any device call (ranks share the JS thread). */
  activate(): void {
    if (currentDevice.get(this.libs) === this.deviceId) return;
    this.check(this.libs.acl.aclrtSetDevice(this.deviceId), 'aclrtSetDevice', `device ${this.deviceId}`);
    currentDevice.set(this.libs, this.deviceId);
  }

  private recentMessage(): string | undefined {
    return this.libs.acl.aclGetRecentErrMsg() ?? undefined;
  }

  /** Throws AscendError for a non-zero status, with the runtime's own message. */
  check(status: number, fn: string, context?: string): void {
    if (status === 0) return;
    const runtimeMessage = this.recentMessage();
    const where = context ? ` (${context})` : '';
    const oom = fn === 'aclrtMalloc' && (status === ACL_STATUS.memoryAllocation || status === ACL_STATUS.badAlloc);
    throw new AscendError(
      oom ? 'E_DEVICE_OUT_OF_MEMORY' : 'E_ACL_CALL',
      `${fn}${where} failed with status ${status}: ${runtimeMessage ?? '(the runtime gave no message)'}`,
      { fn, status, runtimeMessage },
    );
  }

  /** Constructors (aclCreateTensor, ...) return NULL instead of a status. */
  checkHandle(handle: Ptr | null, fn: string): Ptr {
    if (handle !== null && handle !== 0n) return handle;
    const runtimeMessage = this.recentMessage();
    throw new AscendError('E_ACL_CALL', `${fn} returned NULL: ${runtimeMessage ?? '(the runtime gave no message)'}`, {
      fn,
      status: -1,
      runtimeMessage,
    });
  }

  assertLive(): void {
    if (this.disposed) throw new AscendError('E_ACL_CALL', 'ascend backend: used after dispose()', { fn: 'dispose' });
  }

  malloc(bytes: number, what: string): Ptr {
    this.assertLive();
    this.activate();
    const out: [Ptr | null] = [null];
    const st = this.libs.acl.aclrtMalloc(out, bytes, ACL_MEM_MALLOC_HUGE_FIRST);
    if (st !== 0) {
      const inUse = [...this.allocations.values()].reduce((a, b) => a + b, 0);
      this.check(st, 'aclrtMalloc', `${bytes} bytes for ${what}; this backend holds ${inUse} bytes in ${this.allocations.size} buffers`);
    }
    const p = out[0] as Ptr;
    this.allocations.set(p, bytes);
    return p;
  }

  /** Frees device memory after the stream drains (a queued kernel may still read it). */
  free(ptr: Ptr): void {
    if (!this.allocations.has(ptr)) return;
    this.sync();
    this.allocations.delete(ptr);
    this.check(this.libs.acl.aclrtFree(ptr), 'aclrtFree');
  }

  /** Bytes this session holds in device memory. */
  get deviceBytes(): number {
    let n = 0;
    for (const b of this.allocations.values()) n += b;
    return n;
  }

  sync(): void {
    if (!this.pending) return;
    this.activate();
    // Still pending after a failure: the next call synchronizes again rather than reading unfinished results.
    this.check(this.libs.acl.aclrtSynchronizeStream(this.stream), 'aclrtSynchronizeStream');
    this.pending = false;
  }

  /** Host to device. aclrtMemcpy is not ordered with the stream, so queued kernels finish first. */
  upload(dst: Ptr, src: ArrayBufferView, byteOffset = 0): void {
    this.sync();
    this.activate();
    const n = src.byteLength;
    this.check(this.libs.acl.aclrtMemcpy(dst + BigInt(byteOffset), n, src, n, ACL_MEMCPY.hostToDevice), 'aclrtMemcpy', `${n} bytes host to device`);
  }

  /** Device to host, after the stream drains. */
  download(dst: ArrayBufferView, src: Ptr, byteOffset = 0): void {
    this.sync();
    this.activate();
    const n = dst.byteLength;
    this.check(this.libs.acl.aclrtMemcpy(dst, n, src + BigInt(byteOffset), n, ACL_MEMCPY.deviceToHost), 'aclrtMemcpy', `${n} bytes device to host`);
  }

  /** Zero-fill on the stream. */
  zero(ptr: Ptr, bytes: number): void {
    this.activate();
    this.check(this.libs.acl.aclrtMemsetAsync(ptr, bytes, 0, bytes, this.stream), 'aclrtMemsetAsync');
    this.pending = true;
  }

  /** Mark that something (an HCCL collective) was queued on the stream. */
  queued(): void {
    this.pending = true;
  }

  /**
   * One aclnn operator call: build descriptors in `build`, which returns the two phases; phase one plans and returns
   * the workspace size, the workspace grows if needed, phase two queues the kernel. Descriptors die afterwards.
   */
  run(op: string, build: (scope: DescScope) => { plan: PlanFn; launch: (ws: Ptr | null, size: number, ex: Ptr, stream: Ptr) => number }): void {
    this.assertLive();
    this.activate();
    const scope = new DescScope(this);
    let failure: unknown;
    try {
      const { plan, launch } = build(scope);
      const size: [number] = [0];
      const ex: [Ptr | null] = [null];
      this.check(plan(size, ex), `${op}GetWorkspaceSize`);
      const executor = this.checkHandle(ex[0], `${op}GetWorkspaceSize (executor)`);
      const ws = size[0] > 0 ? this.workspace.ensure(size[0]) : null;
      this.check(launch(ws, size[0], executor, this.stream), op);
      this.pending = true;
    } catch (e) {
      failure = e;
    }
    try {
      scope.destroy();
    } catch (e) {
      failure ??= e;
    }
    if (failure) throw failure;
  }

  /** Frees everything, destroys the stream, resets the device, finalizes AscendCL when the last session goes. */
  dispose(): void {
    if (this.disposed) return;
    let first: unknown;
    const attempt = (f: () => void): void => {
      try {
        f();
      } catch (e) {
        first ??= e;
      }
    };
    attempt(() => this.activate());
    attempt(() => this.sync());
    for (const p of [...this.allocations.keys()]) {
      this.allocations.delete(p);
      attempt(() => this.check(this.libs.acl.aclrtFree(p), 'aclrtFree'));
    }
    this.workspace.ptr = null;
    attempt(() => this.check(this.libs.acl.aclrtDestroyStream(this.stream), 'aclrtDestroyStream'));
    attempt(() => this.check(this.libs.acl.aclrtResetDevice(this.deviceId), 'aclrtResetDevice'));
    currentDevice.delete(this.libs);
    this.disposed = true;
    attempt(() => this.releaseProcess());
    if (first) {
      this.logger?.warn?.(`ascend backend: dispose finished with an error: ${(first as Error).message}`);
      throw first;
    }
  }

  private releaseProcess(): void {
    const state = processAcl.get(this.libs);
    if (!state) return;
    if (--state.users > 0) return;
    processAcl.delete(this.libs);
    currentDevice = new Map([...currentDevice].filter(([l]) => l !== this.libs));
    if (state.owned) this.check(this.libs.acl.aclFinalize(), 'aclFinalize');
  }
}
