// `llama3-70b convert`: msModelSlim-compatible W8A16 conversion from the command line.

import { formatFlagHelp } from '../cli/args';
import { formatBytes, formatDuration, formatRate } from '../cli/format';
import { ProgressReporter } from '../cli/progress';
import { convertCheckpoint, type ConvertSummary } from '../convert/convert';
import { CONVERT_FLAGS, parseConvertArgs } from '../convert/options';

export const CONVERT_USAGE = `usage: llama3-70b convert --model_path DIR --save_directory DIR [flags]

Quantizes every linear layer of a LLaMA checkpoint to int8 per output channel (W8A16) and writes
the directory msModelSlim writes: quant_model_weight_w8a16.safetensors (or shards + index),
quant_model_description.json, config.json and the tokenizer files.

flags:
${formatFlagHelp(CONVERT_FLAGS)}`;

export function formatConvertSummary(s: ConvertSummary): string {
  const lines = [
    `converted -> ${s.saveDirectory}`,
    `  linears      ${s.linearsQuantized} quantized (W8A16, ${s.scheme}, ${s.compute} arithmetic), ${s.linearsFloat} kept float`,
    `  tensors      ${s.tensorsWritten} written (${s.floatTensors} FLOAT)`,
    `  bytes        ${formatBytes(s.bytesIn)} in -> ${formatBytes(s.bytesOut)} out (${((100 * s.bytesOut) / Math.max(1, s.bytesIn)).toFixed(1)}%)`,
  ];
  if (s.maxAbsError) {
    lines.push(`  worst row    max |w - deq(q)| = ${s.maxAbsError.value.toExponential(3)} in ${s.maxAbsError.tensor} row ${s.maxAbsError.row}`);
  }
  if (s.minSqnrDb) {
    const mean = s.meanSqnrDb !== undefined ? `; mean over rows ${s.meanSqnrDb.toFixed(1)} dB` : '';
    lines.push(`  SQNR         worst ${s.minSqnrDb.value.toFixed(1)} dB in ${s.minSqnrDb.tensor} row ${s.minSqnrDb.row}${mean}`);
  }
  lines.push(`  time         ${formatDuration(s.seconds)} (${formatRate(s.bytesIn, s.seconds)} in, ${s.threads} thread${s.threads === 1 ? '' : 's'})`);
  lines.push(`  files        ${s.files.join(', ')}`);
  for (const w of s.warnings) lines.push(`  warning      ${w}`);
  return lines.join('\n');
}

export async function main(argv: readonly string[]): Promise<number> {
  const opts = parseConvertArgs(argv);
  if (opts === 'help') {
    process.stdout.write(`${CONVERT_USAGE}\n`);
    return 0;
  }
  const progress = new ProgressReporter();
  const abort = new AbortController();
  const onSigint = () => abort.abort();
  process.once('SIGINT', onSigint);
  try {
    const summary = await convertCheckpoint(opts, {
      signal: abort.signal,
      onWarning: (m) => process.stderr.write(`warning: ${m}\n`),
      onProgress: (p) =>
        progress.update({ label: p.tensor, note: p.kind, done: p.tensorsDone, total: p.tensorsTotal, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal }),
    });
    progress.finish();
    process.stdout.write(`${formatConvertSummary(summary)}\n`);
    return 0;
  } finally {
    process.off('SIGINT', onSigint);
  }
}
