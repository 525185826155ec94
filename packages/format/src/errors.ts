// The one error class of @w8a16/format: every failure carries a stable string `code`
// plus, where known, the file and tensor it concerns (the message repeats them for humans).

export interface FormatErrorDetails {
  file?: string;
  tensor?: string;
  cause?: unknown;
}

export class FormatError extends Error {
  readonly code: string;
  readonly file?: string;
  readonly tensor?: string;

  constructor(code: string, message: string, details: FormatErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'FormatError';
    this.code = code;
    if (details.file !== undefined) this.file = details.file;
    if (details.tensor !== undefined) this.tensor = details.tensor;
  }
}

/** Optional sink for non-fatal notes (libraries never print). */
export interface FormatLogger {
  warn(message: string): void;
}
