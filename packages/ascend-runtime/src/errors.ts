// The one error class of ascend-runtime: every failure carries a string `code` callers can branch on.

export type BackendErrorCode =
  | 'E_SHAPE' // tensor shapes disagree with each other or with the op
  | 'E_DTYPE' // a dtype this backend or op does not support
  | 'E_RANGE' // an index (token id, slot, block, position) outside its table
  | 'E_ARGUMENT' // a malformed argument (length, missing field)
  | 'E_FOREIGN_HANDLE' // a handle created by another backend, or already freed
  | 'E_DISPOSED' // the backend was disposed
  | 'E_NATIVE_MISSING'; // the native addon was requested but is not built

export class BackendError extends Error {
  override readonly name = 'BackendError';
  constructor(
    readonly code: BackendErrorCode,
    message: string,
  ) {
    super(message);
  }
}
