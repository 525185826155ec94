// The one error class of @w8a16/quant-core: every failure carries a stable string `code` and, for
// bad weights, the row and column (relative to the array passed in) where it was found.

export interface QuantErrorDetails {
  row?: number;
  col?: number;
  cause?: unknown;
}

export class QuantError extends Error {
  readonly code: string;
  readonly row?: number;
  readonly col?: number;

  constructor(code: string, message: string, details: QuantErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'QuantError';
    this.code = code;
    if (details.row !== undefined) this.row = details.row;
    if (details.col !== undefined) this.col = details.col;
  }
}
