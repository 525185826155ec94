// The one error base class of ascend-runtime: every failure carries a string `code` callers can branch on.
// The Ascend backend's native failures are its subclass AscendError (ascend/errors.ts), codes listed here too.

/** Failures of the Ascend backend's native layer (library discovery, AscendCL / aclnn / HCCL calls); see AscendError. */
export type AscendErrorCode =
  | 'E_ASCEND_LIBRARY_NOT_FOUND' // a CANN library is in none of the searched directories
  | 'E_ASCEND_LIBRARY_LOAD' // the library file exists but dlopen / symbol lookup failed (ABI, missing dependency)
  | 'E_ACL_CALL' // an AscendCL or aclnn call returned a non-zero status (or NULL for a constructor)
  | 'E_DEVICE_OUT_OF_MEMORY' // aclrtMalloc could not allocate device memory
  | 'E_HCCL_CALL'; // an HCCL call returned a non-zero HcclResult

export type BackendErrorCode =
  | 'E_SHAPE' // tensor shapes disagree with each other or with the op
  | 'E_DTYPE' // a dtype this backend or op does not support
  | 'E_RANGE' // an index (token id, slot, block, position) outside its table
  | 'E_ARGUMENT' // a malformed argument (length, missing field)
  | 'E_FOREIGN_HANDLE' // a handle created by another backend, or already freed
  | 'E_DISPOSED' // the backend was disposed
  | 'E_NATIVE_MISSING' // the native addon was requested but is not built
  | AscendErrorCode; // thrown as AscendError

export class BackendError extends Error {
  /** `AscendError` for the Ascend backend's native failures (a subclass), `BackendError` otherwise. */
  override readonly name: 'BackendError' | 'AscendError' = 'BackendError';
  constructor(
    readonly code: BackendErrorCode,
    message: string,
  ) {
    super(message);
  }
}
