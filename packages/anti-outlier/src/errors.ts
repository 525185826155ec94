// The one error class of @w8a16/anti-outlier: every failure carries a string `code` callers can branch on,
// and a message naming what was expected, what was found and where (linear, row, column, token).

export type AntiOutlierErrorCode =
  | 'E_SHAPE' // a length or dimension that does not match the others (or is not a positive integer)
  | 'E_NONFINITE' // NaN/Inf in activations, weights or scales, or a W·s that overflows the compute dtype
  | 'E_SCALE' // a smoothing scale that is zero or negative (it would be divided by)
  | 'E_OPTION'; // an option outside its domain (scheme, compute, nGrid, minScale)

export class AntiOutlierError extends Error {
  override readonly name = 'AntiOutlierError';
  constructor(
    readonly code: AntiOutlierErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
