// `llama3-70b demo`: the README's main job on the built-in default model: generate it on first use
// (cached), convert it with the LLaMA3-70B seed recipe (m3, C8, the disable preset), then run it.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseFlags, formatFlagHelp, type FlagSpec } from '../cli/args';
import { CliError } from '../cli/errors';
import { formatBytes, formatDuration } from '../cli/format';
import { ProgressReporter } from '../cli/progress';
import { parseConvertArgs } from '../convert/options';
import { BUILTIN_SEED, ensureBuiltinModel, GENERATOR_SPECS, resolveCacheDir, specWeightBytes } from '../builtin';
import { convertWithProgress } from './convert';
import { main as runMain, RUN_DEFAULTS } from './run';

/**
 * Calibration text for the demo's m3 and C8 steps: eight short English passages written for this project
 * (the LLaMA3-70B recipe uses BoolQ, which is not ours to ship). Found beside dist/ when built, beside src/ in tests.
 */
export function demoCalibFile(): string {
  const candidates = ['../assets/demo-calib.jsonl', '../../assets/demo-calib.jsonl'].map((rel) => fileURLToPath(new URL(rel, import.meta.url)));
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new CliError('E_INTERNAL', `demo: the calibration file is missing (looked in ${candidates.join(', ')})`);
  return found;
}

/** Where the converted built-in model goes unless --save_directory says otherwise. */
export const DEMO_OUTPUT_DIR = 'builtin-w8a16';

const DEMO_FLAGS: Readonly<Record<string, FlagSpec>> = {
  save_directory: { kind: 'string', help: `output directory (default: <cache>/${DEMO_OUTPUT_DIR}; replaced if present)` },
  threads: { kind: 'int', help: 'conversion worker threads (default: one per core)' },
  help: { kind: 'switch', help: 'show this help' },
};

export const DEMO_USAGE = `usage: llama3-70b demo [flags]

Generates the built-in default model on first use (a LLaMA-3-architecture checkpoint with random
weights, planted outlier channels and the real LLaMA-3 tokenizer; cached in $W8A16_CACHE_DIR, else
$XDG_CACHE_HOME/w8a16, else ~/.cache/w8a16), then converts it to W8A16 with the LLaMA3-70B recipe:
asymmetric int8 (--w_sym False), linears of layers 0-4 and lm_head kept float (--disable_preset llama3-70b),
outliers smoothed (--anti_method m3) and an int8 KV cache calibrated (--use_kvcache_quant True) on a small
built-in calibration text, then runs the converted model on "What's deep learning?" (20 new tokens, greedy).
Its weights are random, so the text is nonsense: the demo shows the pipeline and its speed, not a language model.

flags:
${formatFlagHelp(DEMO_FLAGS)}`;

interface DemoContext {
  readonly cacheDir: string;
  readonly saveDirectory: string;
  readonly threads?: number;
  readonly signal: AbortSignal;
  /** Set by the model step. */
  modelDir?: string;
}

interface DemoStep {
  readonly title: string;
  run(ctx: DemoContext): Promise<void>;
}

const out = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

const builtinModelStep: DemoStep = {
  title: 'built-in model',
  async run(ctx) {
    const spec = GENERATOR_SPECS.builtin;
    const progress = new ProgressReporter();
    const started = performance.now();
    const model = await ensureBuiltinModel({
      cacheDir: ctx.cacheDir,
      signal: ctx.signal,
      onGenerate: (dir) =>
        out(
          `  generating ${spec.description}\n  seed ${BUILTIN_SEED}, ${formatBytes(specWeightBytes(spec))} of weights -> ${dir} (first use only)`,
        ),
      onProgress: (p) => progress.update({ label: p.tensor, done: p.tensorsDone, total: p.tensorsTotal, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal }),
    });
    progress.finish();
    const seconds = (performance.now() - started) / 1000;
    if (model.generated) out(`  generated in ${formatDuration(seconds)}: ${model.marker.files.map((f) => f.name).join(', ')}`);
    else out(`  using the cached model ${model.dir} (generated ${model.marker.createdAt}, seed ${model.marker.seed})`);
    ctx.modelDir = model.dir;
  },
};

const convertStep: DemoStep = {
  title: 'convert to W8A16 (LLaMA3-70B recipe: m3, C8, layers 0-4 and lm_head float)',
  async run(ctx) {
    if (!ctx.modelDir) throw new CliError('E_INTERNAL', 'demo: the convert step needs the model step first');
    // The same flags a user would type, through the same parser, so the printed command reproduces this step.
    const argv = [
      '--model_path', ctx.modelDir, '--save_directory', ctx.saveDirectory,
      '--calib_file', demoCalibFile(), '--tokenizer_args', '{"padding_side":"left","pad_token":"<unk>"}',
      '--a_bit', '16', '--w_sym', 'False', '--mm_tensor', 'False', '--anti_method', 'm3', '--act_method', '3',
      '--use_kvcache_quant', 'True', '--disable_preset', 'llama3-70b', '--force',
    ];
    if (ctx.threads !== undefined) argv.push('--threads', String(ctx.threads));
    const opts = parseConvertArgs(argv);
    if (opts === 'help') throw new CliError('E_INTERNAL', 'demo: unexpected --help in the convert flags');
    out(`  llama3-70b convert ${argv.join(' ')}`);
    await convertWithProgress(opts, ctx.signal);
  },
};

const runStep: DemoStep = {
  title: `run the W8A16 model on "${RUN_DEFAULTS.inputText}"`,
  async run(ctx) {
    const argv = [ctx.saveDirectory, '--max_output_length', String(RUN_DEFAULTS.maxOutputLength)];
    if (ctx.threads !== undefined) argv.push('--threads', String(ctx.threads));
    out(`  llama3-70b run ${argv.join(' ')}`);
    const code = await runMain(argv);
    if (code !== 0) throw new CliError('E_DEMO_RUN', `demo: run exited with status ${code}`);
  },
};

/** The demo's steps in order. */
const STEPS: readonly DemoStep[] = [builtinModelStep, convertStep, runStep];

export async function main(argv: readonly string[]): Promise<number> {
  const { flags, positionals } = parseFlags(argv, DEMO_FLAGS);
  if (flags.get('help')) {
    out(DEMO_USAGE);
    return 0;
  }
  if (positionals.length > 0) throw new CliError('E_USAGE', `demo takes flags only; unexpected argument '${positionals[0]}'`);
  const threads = flags.get('threads') as number | undefined;
  if (threads !== undefined && threads < 1) throw new CliError('E_USAGE', `--threads expects at least 1, got ${threads}`);
  const cacheDir = resolveCacheDir();
  const abort = new AbortController();
  const onSigint = (): void => abort.abort();
  process.once('SIGINT', onSigint);
  const ctx: DemoContext = {
    cacheDir,
    saveDirectory: (flags.get('save_directory') as string | undefined) ?? join(cacheDir, DEMO_OUTPUT_DIR),
    threads,
    signal: abort.signal,
  };
  try {
    for (const [i, step] of STEPS.entries()) {
      out(`[${i + 1}/${STEPS.length}] ${step.title}`);
      await step.run(ctx);
    }
    return 0;
  } finally {
    process.off('SIGINT', onSigint);
  }
}
