// `llama3-70b convert`: msModelSlim-compatible W8A16 conversion from the command line.

import { formatFlagHelp } from '../cli/args';
import { formatBytes, formatDuration, formatRate } from '../cli/format';
import { ProgressReporter } from '../cli/progress';
import { convertCheckpoint, type ConvertOptions, type ConvertSummary } from '../convert/convert';
import { CONVERT_FLAGS, parseConvertArgs } from '../convert/options';

export const CONVERT_USAGE = `usage: llama3-70b convert --model_path DIR --save_directory DIR [flags]

Quantizes every linear layer of a LLaMA checkpoint to int8 per output channel (W8A16) and writes
the directory msModelSlim writes: quant_model_weight_w8a16.safetensors (or shards + index),
quant_model_description.json, config.json and the tokenizer files. With --anti_method m3 and/or
--use_kvcache_quant True it first runs the float model over the calibration data, layer by layer.

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
  const cal = s.calibration;
  if (cal) {
    lines.push(
      `  calibration  ${cal.samples} sample${cal.samples === 1 ? '' : 's'}, ${cal.tokens} tokens; forward ${formatDuration(cal.forwardSeconds)}, with m3 searches ${formatDuration(cal.seconds)}` +
        ` (forward on the ${cal.backend} backend, ${cal.activations} activations)`,
    );
    // One line per 8 layers: "m3 ratios    L0 0.20/0.30  L1 0.35/0.15 ..." (qkv/gateup).
    const byLayer = new Map<number, string[]>();
    for (const c of cal.m3) byLayer.set(c.layer, [...(byLayer.get(c.layer) ?? []), c.ratio.toFixed(2)]);
    const cells = [...byLayer].map(([l, r]) => `L${l} ${r.join('/')}`);
    for (let i = 0; i < cells.length; i += 8) lines.push(`  ${i === 0 ? 'm3 qkv/gateup' : '             '} ${cells.slice(i, i + 8).join('  ')}`);
    if (cal.kvLayers > 0) {
      const kStats = cal.kvPostRope ? 'K statistics post-RoPE' : 'K statistics pre-RoPE (as msModelSlim)';
      lines.push(`  C8           ${cal.kvLayers} layers, ${cal.kvSym === false ? 'asymmetric' : 'symmetric'} k/v scales, ${kStats}`);
    }
  }
  lines.push(`  time         ${formatDuration(s.seconds)} (${formatRate(s.bytesIn, s.seconds)} in, ${s.threads} thread${s.threads === 1 ? '' : 's'})`);
  lines.push(`  files        ${s.files.join(', ')}`);
  for (const w of s.warnings) lines.push(`  warning      ${w}`);
  return lines.join('\n');
}

/**
 * Converts with the CLI's progress bar, warnings and calibration lines on stderr, then prints the summary on stdout.
 * `convert` and the demo's convert step both run this.
 */
export async function convertWithProgress(opts: ConvertOptions, signal: AbortSignal): Promise<ConvertSummary> {
  const progress = new ProgressReporter();
  const summary = await convertCheckpoint(opts, {
    signal,
    onWarning: (m) => process.stderr.write(`warning: ${m}\n`),
    onCalibrate: (p) => process.stderr.write(`calibration: layer ${p.layersDone}/${p.layers} forward pass done\n`),
    onProgress: (p) =>
      progress.update({ label: p.tensor, note: p.kind, done: p.tensorsDone, total: p.tensorsTotal, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal }),
  });
  progress.finish();
  process.stdout.write(`${formatConvertSummary(summary)}\n`);
  return summary;
}

export async function main(argv: readonly string[]): Promise<number> {
  const opts = parseConvertArgs(argv);
  if (opts === 'help') {
    process.stdout.write(`${CONVERT_USAGE}\n`);
    return 0;
  }
  const abort = new AbortController();
  const onSigint = () => abort.abort();
  process.once('SIGINT', onSigint);
  try {
    await convertWithProgress(opts, abort.signal);
    return 0;
  } finally {
    process.off('SIGINT', onSigint);
  }
}
