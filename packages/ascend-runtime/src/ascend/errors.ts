// The error of the Ascend (NPU) backend: library discovery and every failing native call, with the runtime's own words.
// Contract violations shared with the host backend (shapes, dtypes, ranges) stay BackendError, as the interface says.

export type AscendErrorCode =
  | 'E_ASCEND_LIBRARY_NOT_FOUND' // a CANN library is in none of the searched directories
  | 'E_ASCEND_LIBRARY_LOAD' // the library file exists but dlopen / symbol lookup failed (ABI, missing dependency)
  | 'E_ACL_CALL' // an AscendCL or aclnn call returned a non-zero status (or NULL for a constructor)
  | 'E_DEVICE_OUT_OF_MEMORY' // aclrtMalloc could not allocate device memory
  | 'E_HCCL_CALL'; // an HCCL call returned a non-zero HcclResult

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

export class AscendError extends Error {
  override readonly name = 'AscendError';
  readonly fn?: string;
  readonly status?: number;
  readonly runtimeMessage?: string;
  readonly searched?: string[];

  constructor(
    readonly code: AscendErrorCode,
    message: string,
    details: AscendErrorDetails = {},
  ) {
    super(message);
    this.fn = details.fn;
    this.status = details.status;
    this.runtimeMessage = details.runtimeMessage;
    this.searched = details.searched;
  }
}
