// The error of the Ascend (NPU) backend: library discovery and every failing native call, with the runtime's own words.
// A BackendError subclass (one error family per package); contract violations (shapes, dtypes, ranges) stay plain BackendError.

import { BackendError, type AscendErrorCode } from '../errors';

export type { AscendErrorCode } from '../errors';

export interface AscendErrorDetails {
  /** The native function that failed. */
  fn?: string;
  /** Its status code (aclError / aclnnStatus / HcclResult); -1 for a constructor that returned NULL. */
  status?: number;
  /** What aclGetRecentErrMsg() (or HcclGetErrorString) said, if anything. */
  runtimeMessage?: string;
  /** Every path searched, for E_ASCEND_LIBRARY_NOT_FOUND. */
  searched?: string[];
}

export class AscendError extends BackendError {
  override readonly name = 'AscendError' as const;
  readonly fn?: string;
  readonly status?: number;
  readonly runtimeMessage?: string;
  readonly searched?: string[];

  constructor(
    override readonly code: AscendErrorCode,
    message: string,
    details: AscendErrorDetails = {},
  ) {
    super(code, message);
    this.fn = details.fn;
    this.status = details.status;
    this.runtimeMessage = details.runtimeMessage;
    this.searched = details.searched;
  }
}
