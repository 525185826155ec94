// Progress on stderr: a redrawn one-line bar on a terminal, plain lines otherwise (logs, CI, pipes).

import { formatBytes, formatDuration, formatRate } from './format';

export interface ProgressState {
  readonly label: string;
  readonly done: number;
  readonly total: number;
  readonly bytesDone: number;
  readonly bytesTotal: number;
  readonly note?: string;
}

const BAR_WIDTH = 24;

export class ProgressReporter {
  private readonly started = performance.now();
  private lastDraw = 0;
  constructor(
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly tty: boolean = Boolean(process.stderr.isTTY),
  ) {}

  update(s: ProgressState): void {
    const elapsed = (performance.now() - this.started) / 1000;
    const frac = s.bytesTotal > 0 ? s.bytesDone / s.bytesTotal : 1;
    const eta = frac > 0 ? elapsed * (1 / frac - 1) : Infinity;
    const rate = formatRate(s.bytesDone, elapsed);
    if (!this.tty) {
      const n = String(s.total).length;
      this.stream.write(
        `[${String(s.done).padStart(n)}/${s.total}] ${s.label}${s.note ? `  ${s.note}` : ''}  ${formatBytes(s.bytesDone)}/${formatBytes(s.bytesTotal)}  ${rate}  eta ${formatDuration(eta)}\n`,
      );
      return;
    }
    const now = performance.now();
    if (now - this.lastDraw < 100 && s.done < s.total) return;
    this.lastDraw = now;
    const filled = Math.round(frac * BAR_WIDTH);
    const bar = '#'.repeat(filled) + '-'.repeat(BAR_WIDTH - filled);
    const cols = this.stream.columns ?? 100;
    const line = `[${bar}] ${(frac * 100).toFixed(0).padStart(3)}% ${formatBytes(s.bytesDone)}/${formatBytes(s.bytesTotal)} ${rate} eta ${formatDuration(eta)}  ${s.label}`;
    this.stream.write(`\r${line.slice(0, cols - 1).padEnd(cols - 1)}`);
  }

  finish(): void {
    if (this.tty) this.stream.write('\n');
  }
}
