// The app's error type, and the one place that turns any error into a message and an exit status.

export class CliError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'CliError';
    this.code = code;
  }
}

/** Exit statuses: 2 for a usage mistake (like argparse), 1 for everything else that failed. */
export const EXIT_USAGE = 2;
export const EXIT_FAILURE = 1;

/** `error E_CODE: message` for errors that carry a code (ours and the libraries'), the stack otherwise. */
export function describeError(err: unknown): { text: string; exitCode: number } {
  if (err && typeof err === 'object' && 'code' in err && typeof (err as { code: unknown }).code === 'string') {
    const code = (err as { code: string }).code;
    if (code.startsWith('E_')) {
      return { text: `error ${code}: ${(err as unknown as Error).message}`, exitCode: code === 'E_USAGE' ? EXIT_USAGE : EXIT_FAILURE };
    }
  }
  const e = err as Error;
  return { text: `error: ${e && e.stack ? e.stack : String(err)}`, exitCode: EXIT_FAILURE };
}
