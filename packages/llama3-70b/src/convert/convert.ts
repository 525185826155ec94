// `convert`: a Hugging Face LLaMA checkpoint in, an msModelSlim-layout W8A16 directory out.
// Streams tensor by tensor in row chunks; writes into a temporary directory beside the target and
// renames it into place only when everything is written, so an interrupted run leaves nothing that looks complete.
// With m3 / C8 a calibration runs alongside (calibrate/collect.ts): a tensor that needs its layer's scales waits
// for that layer only, so conversion of early layers overlaps calibration of later ones.

import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { basename, dirname, join, resolve, sep } from 'node:path';
import {
  Checkpoint,
  copyAuxiliaryFiles,
  DESCRIPTION_FILE_NAME,
  planSafetensors,
  readLlamaConfig,
  SafetensorsWriter,
  serializeDescription,
} from '@w8a16/format';
import type { Backend } from '@w8a16/ascend-runtime';
import { emptyQuantErrorStats, meanSqnrDb, mergeQuantErrorStats, type FloatDType, type QuantErrorStats } from '@w8a16/quant-core';
import { calibSamplesFromTexts, calibTokenizer, capCalibSamples, readCalibFile, type CalibSample, type CalibTokenizer } from '../calibrate/calib-data';
import { startCalibration, type CalibrationProgress, type CalibrationResult, type CalibrationRun } from '../calibrate/collect';
import { CliError } from '../cli/errors';
import { selectCalibrationBackend } from '../device';
import { LlamaTokenizer, TOKENIZER_FILE } from '../tokenizer/tokenizer';
import { buildConvertPlan, type CalibJob, type TensorJob } from './plan';
import { createExecutor } from './pool';
import { rowsPerUnit, type M3SearchUnit, type Unit, type UnitResult, type UnitSmoothing } from './units';

export const WEIGHT_BASE_NAME = 'quant_model_weight_w8a16';
/** msModelSlim's --part_file_size is in GiB (BufferedSafetensorsWriter multiplies by 1024**3). */
export const PART_FILE_UNIT_BYTES = 1024 ** 3;
/** File modes msModelSlim gives its outputs (safetensors 0400, description 0600; spec §4.2, §5). */
const WEIGHT_FILE_MODE = 0o400;
const DESCRIPTION_FILE_MODE = 0o600;
const AUX_FILE_MODE = 0o644;

export interface ConvertOptions {
  readonly modelPath: string;
  readonly saveDirectory: string;
  readonly disableNames: readonly string[];
  readonly disableLastLinear: boolean;
  readonly wSym: boolean;
  readonly deviceType: 'cpu' | 'npu';
  /** Shard size in GiB (msModelSlim's --part_file_size); undefined = one file. */
  readonly partFileSize?: number;
  readonly force: boolean;
  readonly threads?: number;
  /** `m3`: msModelSlim's AWQ-style smoothing (needs calibration data). */
  readonly antiMethod?: 'm3';
  /** C8: calibrate an int8 KV cache (needs calibration data). */
  readonly kvCache?: boolean;
  /** C8 symmetry: true (msModelSlim's default, offsets 0) or false (asymmetric). */
  readonly kvSym?: boolean;
  /** C8 K statistics after RoPE (true) or from the k_proj output as msModelSlim (false, the default). */
  readonly kvPostRope?: boolean;
  /** JSON Lines calibration file (`inputs_pretokenized` or `input_ids` per line). */
  readonly calibFile?: string;
  /** Calibration texts given inline. */
  readonly calibTexts?: readonly string[];
  /** `--tokenizer_args` (see calibTokenizer for the keys that matter). */
  readonly tokenizerArgs?: Readonly<Record<string, unknown>>;
  /** Also write the calibration's choices (m3 ratios and losses, KV ranges) as JSON to this file. */
  readonly calibReport?: string;
}

export interface ConvertProgress {
  readonly tensor: string;
  readonly tensorsDone: number;
  readonly tensorsTotal: number;
  readonly bytesDone: number;
  readonly bytesTotal: number;
  readonly kind: 'W8A16' | 'FLOAT' | 'C8';
}

export interface M3ChoiceSummary {
  readonly layer: number;
  readonly subgraph: 'qkv' | 'gateup';
  readonly ratio: number;
  readonly gridIndex: number;
  readonly losses: number[];
}

/** The calibration's counts and timings as collect reported them, with what it chose. */
export interface CalibrationSummary extends Pick<CalibrationResult, 'backend' | 'activations' | 'samples' | 'tokens' | 'forwardSeconds' | 'seconds'> {
  /** Every m3 group's chosen ratio, layer by layer (qkv then gateup). */
  readonly m3: M3ChoiceSummary[];
  /** Layers with C8 scales. */
  readonly kvLayers: number;
  readonly kvSym?: boolean;
  /** Where the K statistics were taken: after RoPE, or from the k_proj output (msModelSlim). */
  readonly kvPostRope?: boolean;
}

export interface WorstRow {
  readonly tensor: string;
  readonly row: number;
  readonly value: number;
}

export interface ConvertSummary {
  readonly saveDirectory: string;
  readonly files: string[];
  readonly tensorsWritten: number;
  readonly linearsQuantized: number;
  readonly linearsFloat: number;
  readonly floatTensors: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly seconds: number;
  readonly threads: number;
  readonly compute: string;
  readonly scheme: string;
  readonly maxAbsError?: WorstRow;
  readonly minSqnrDb?: WorstRow;
  readonly meanSqnrDb?: number;
  readonly calibration?: CalibrationSummary;
  readonly warnings: string[];
}

export interface ConvertHooks {
  readonly onProgress?: (p: ConvertProgress) => void;
  /** After each layer's calibration forward pass (its m3 searches may still be running). */
  readonly onCalibrate?: (p: CalibrationProgress) => void;
  readonly onWarning?: (message: string) => void;
  readonly signal?: AbortSignal;
}

function isInside(child: string, parent: string): boolean {
  return child === parent || child.startsWith(parent.endsWith(sep) ? parent : parent + sep);
}

function checkPaths(opts: ConvertOptions): { source: string; target: string } {
  const source = resolve(opts.modelPath);
  if (!existsSync(source) || !statSync(source).isDirectory()) {
    throw new CliError('E_MODEL_PATH', `--model_path ${opts.modelPath}: not a directory`);
  }
  const target = resolve(opts.saveDirectory);
  const realSource = realpathSync(source);
  const realTargetParent = existsSync(dirname(target)) ? realpathSync(dirname(target)) : dirname(target);
  const realTarget = join(realTargetParent, basename(target));
  if (isInside(realTarget, realSource) || isInside(realSource, realTarget)) {
    throw new CliError('E_TARGET_IS_SOURCE', `--save_directory ${opts.saveDirectory} overlaps --model_path ${opts.modelPath}; the input is never modified`);
  }
  if (existsSync(target)) {
    if (!statSync(target).isDirectory()) throw new CliError('E_TARGET_EXISTS', `--save_directory ${opts.saveDirectory} exists and is not a directory`);
    if (readdirSync(target).length > 0 && !opts.force) {
      throw new CliError('E_TARGET_NOT_EMPTY', `--save_directory ${opts.saveDirectory} is not empty; pass --force to replace it`);
    }
  }
  return { source, target };
}

const BYTES: Record<FloatDType, number> = { F32: 4, F16: 2, BF16: 2 };

/** Converts a checkpoint. Throws CliError / FormatError / QuantError with a code on bad input. */
export async function convertCheckpoint(opts: ConvertOptions, hooks: ConvertHooks = {}): Promise<ConvertSummary> {
  const started = performance.now();
  const { source, target } = checkPaths(opts);
  const { config } = readLlamaConfig(source);
  const ckpt = Checkpoint.open(source);
  let tmp: string | undefined;
  let writer: SafetensorsWriter | undefined;
  const threads = Math.max(1, opts.threads ?? availableParallelism());
  const executor = createExecutor(threads);
  let backend: Backend | undefined;
  let calib: CalibrationRun | undefined;
  // Stops the calibration when the conversion fails or the user interrupts (it checks between samples).
  const calibAbort = new AbortController();
  const onAbort = () => calibAbort.abort();
  hooks.signal?.addEventListener('abort', onAbort);
  try {
    const m3 = opts.antiMethod === 'm3';
    const kvCache = opts.kvCache === true;
    const plan = buildConvertPlan(ckpt.tensors, config, { ...opts, m3, kvCache }, source);
    for (const w of plan.warnings) hooks.onWarning?.(w);
    if (m3 || kvCache) {
      const samples = loadCalibSamples(opts, source, config.vocabSize, (m) => hooks.onWarning?.(m));
      // --device_type npu: the forward pass on the NPU when CANN is found, else on the host (one line says so).
      backend = selectCalibrationBackend({ deviceType: opts.deviceType, threads, kernels: 'auto', log: (m) => hooks.onWarning?.(m) });
      calib = startCalibration(ckpt, config, samples, {
        backend,
        m3: m3 ? { scheme: plan.scheme, compute: plan.compute } : undefined,
        kv: kvCache ? { sym: opts.kvSym ?? true, postRope: opts.kvPostRope ?? false } : undefined,
        runUnit: (u: M3SearchUnit) => executor.run(u),
        onLayer: hooks.onCalibrate,
        signal: calibAbort.signal,
      });
    }
    const calibration = calib;
    const outPlan = planSafetensors(plan.tensors, {
      baseName: WEIGHT_BASE_NAME,
      partFileSizeBytes: opts.partFileSize === undefined ? undefined : Math.max(1, Math.round(opts.partFileSize * PART_FILE_UNIT_BYTES)),
    });
    mkdirSync(dirname(target), { recursive: true });
    tmp = mkdtempSync(join(dirname(target), `.${basename(target)}.partial-`));
    writer = SafetensorsWriter.create(tmp, outPlan);
    const w = writer;

    const bytesTotal = plan.jobs.reduce((s, j) => s + (j.kind === 'calib' ? 0 : j.source.byteLength), 0);
    let bytesDone = 0;
    let tensorsDone = 0;
    let stats: QuantErrorStats = emptyQuantErrorStats();
    let maxAbsError: WorstRow | undefined;
    let minSqnrDb: WorstRow | undefined;

    const done = (target: string, kind: ConvertProgress['kind']) => {
      tensorsDone++;
      hooks.onProgress?.({ tensor: target, tensorsDone, tensorsTotal: plan.jobs.length, bytesDone, bytesTotal, kind });
    };

    const runJob = async (job: TensorJob): Promise<void> => {
      if (job.kind === 'calib') {
        w.write(job.target, await calibTensorBytes(job, calibration));
        done(job.target, job.value.kind === 'kv' ? 'C8' : 'FLOAT');
        return;
      }
      let smooth: UnitSmoothing | undefined;
      if (job.smooth) {
        if (!calibration) throw new CliError('E_INTERNAL', `${job.source.name} needs m3 scales but no calibration ran`);
        const choice = (await calibration.layer(job.smooth.layer))[job.smooth.subgraph];
        if (!choice) throw new CliError('E_INTERNAL', `calibration of layer ${job.smooth.layer} has no m3 ${job.smooth.subgraph} choice`);
        smooth = { op: job.kind === 'quantize' ? 'mul-cols' : job.smooth.op, s: choice.scales, compute: plan.compute };
      }
      const srcDType = job.source.dtype as FloatDType;
      const rowBytes = job.cols * BYTES[srcDType];
      const per = rowsPerUnit(job.cols, srcDType);
      const target = job.kind === 'quantize' ? job.weight : job.target;
      const dst = w.locate(target);
      const dstRowBytes = job.kind === 'quantize' ? job.cols : job.cols * BYTES[job.targetDType];
      const units: Promise<[Unit, UnitResult]>[] = [];
      for (let rowStart = 0; rowStart < job.rows; rowStart += per) {
        const rowCount = Math.min(per, job.rows - rowStart);
        const base = {
          tensor: job.source.name,
          srcPath: job.source.file,
          srcOffset: job.source.byteOffset + rowStart * rowBytes,
          srcDType,
          rowStart,
          rowCount,
          cols: job.cols,
          dstPath: dst.path,
          dstOffset: dst.byteOffset + rowStart * dstRowBytes,
        };
        const unit: Unit =
          job.kind === 'quantize'
            ? { ...base, kind: 'quantize', compute: plan.compute, scheme: plan.scheme, ...(smooth ? { smooth } : {}) }
            : { ...base, kind: 'copy', dstDType: job.targetDType, ...(smooth ? { smooth } : {}) };
        units.push(
          executor.run(unit).then((r) => {
            if (hooks.signal?.aborted) throw new CliError('E_INTERRUPTED', 'conversion interrupted');
            w.markWritten(target, rowStart * dstRowBytes, rowCount * dstRowBytes);
            bytesDone += r.bytesIn;
            return [unit, r];
          }),
        );
      }
      const results = await Promise.all(units);
      if (job.kind === 'quantize') {
        const scale = new Float32Array(job.rows);
        const offset = new Float32Array(job.rows);
        let jobStats = emptyQuantErrorStats();
        for (const [u, r] of results) {
          scale.set(r.scale as Float32Array, u.rowStart);
          offset.set(r.offset as Float32Array, u.rowStart);
          jobStats = mergeQuantErrorStats(jobStats, r.stats as QuantErrorStats);
        }
        w.write(job.scale, new Uint8Array(scale.buffer));
        w.write(job.offset, new Uint8Array(offset.buffer));
        if (!maxAbsError || jobStats.maxAbsError > maxAbsError.value) {
          maxAbsError = { tensor: job.weight, row: jobStats.worstRow, value: jobStats.maxAbsError };
        }
        if (!minSqnrDb || jobStats.minSqnrDb < minSqnrDb.value) {
          minSqnrDb = { tensor: job.weight, row: jobStats.worstSqnrRow, value: jobStats.minSqnrDb };
        }
        stats = mergeQuantErrorStats(stats, jobStats);
      }
      done(target, job.kind === 'quantize' ? 'W8A16' : 'FLOAT');
    };

    // A small window of tensors in flight keeps every worker busy across tensor boundaries
    // without queueing the whole model.
    const window = Math.max(2, threads * 2);
    const inFlight = new Set<Promise<void>>();
    // Ready first: a tensor that waits for a layer's calibration would hold a window slot idle, so the next job
    // is the first in plan order whose calibration (if any) is done, and a waiting one only when none is.
    const calibrated = new Set<number>();
    if (calibration) {
      for (let l = 0; l < config.nLayers; l++) calibration.layer(l).then(() => calibrated.add(l), () => undefined);
    }
    const isReady = (job: TensorJob): boolean => {
      if (job.kind === 'calib') return job.value.kind !== 'kv' || calibrated.has(job.value.layer);
      return !job.smooth || calibrated.has(job.smooth.layer);
    };
    const queue = [...plan.jobs];
    while (queue.length > 0) {
      if (hooks.signal?.aborted) throw new CliError('E_INTERRUPTED', 'conversion interrupted');
      const i = queue.findIndex(isReady);
      const [job] = queue.splice(Math.max(i, 0), 1);
      const p = runJob(job).finally(() => inFlight.delete(p));
      inFlight.add(p);
      if (inFlight.size >= window) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    const calibResult = calibration ? await calibration.done : undefined;
    if (calibResult && opts.calibReport) writeFileSync(opts.calibReport, `${JSON.stringify(calibReportJson(calibResult, opts), null, 2)}\n`);

    const written = writer.finish();
    writer = undefined;
    for (const f of written.files) if (f.endsWith('.safetensors')) chmodSync(f, WEIGHT_FILE_MODE);
    const descPath = join(tmp, DESCRIPTION_FILE_NAME);
    const topLevel: [string, string][] = [
      ['version', '1.0.0'],
      ['model_quant_type', 'W8A16'],
      // llm_ptq_utils.py::change_kvcache_type adds both, right after model_quant_type (spec §4.2).
      ...(kvCache
        ? ([
            ['kv_cache_type', 'C8'],
            ['kv_quant_type', 'C8'],
          ] as [string, string][])
        : []),
    ];
    writeFileSync(descPath, serializeDescription([...topLevel, ...plan.description]), { mode: DESCRIPTION_FILE_MODE });
    const aux = copyAuxiliaryFiles(source, tmp);
    // Copies keep the source's mode, which may be read-only; the copies are ours to own.
    for (const f of aux) chmodSync(join(tmp, f), AUX_FILE_MODE);

    // Swap into place: the old target (if --force) is moved aside first and removed only after the rename.
    let old: string | undefined;
    if (existsSync(target)) {
      old = `${tmp}.old`;
      renameSync(target, old);
    }
    renameSync(tmp, target);
    tmp = undefined;
    if (old) rmSync(old, { recursive: true, force: true });

    const meanDb = meanSqnrDb(stats);
    return {
      saveDirectory: target,
      files: [...written.files.map((f) => basename(f)), DESCRIPTION_FILE_NAME, ...aux].sort(),
      tensorsWritten: plan.tensors.length,
      linearsQuantized: plan.quantizedLinears,
      linearsFloat: plan.floatLinears,
      floatTensors: plan.description.filter(([, v]) => v === 'FLOAT').length,
      bytesIn: bytesTotal,
      bytesOut: written.totalBytes,
      seconds: (performance.now() - started) / 1000,
      threads: executor.threads,
      compute: plan.compute,
      scheme: plan.scheme,
      maxAbsError,
      minSqnrDb,
      meanSqnrDb: meanDb,
      calibration: calibResult ? calibrationSummary(calibResult, opts) : undefined,
      warnings: plan.warnings,
    };
  } finally {
    writer?.abort();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    // A failed conversion must not leave the calibration running against a closed checkpoint.
    calibAbort.abort();
    hooks.signal?.removeEventListener('abort', onAbort);
    if (calib) await calib.done.catch(() => undefined);
    backend?.dispose();
    ckpt.close();
    await executor.close();
  }
}

/** The calibration samples of --calib_file / --calib_texts, tokenized with the checkpoint's tokenizer when needed. */
function loadCalibSamples(opts: ConvertOptions, source: string, vocabSize: number, warn: (m: string) => void): CalibSample[] {
  // Built on first use only: a file of input_ids never pays for loading a 128k-entry tokenizer.
  let tokenizer: CalibTokenizer | undefined;
  if (existsSync(join(source, TOKENIZER_FILE))) {
    let real: CalibTokenizer | undefined;
    tokenizer = {
      encode: (text) => {
        real ??= calibTokenizer(LlamaTokenizer.fromDir(source) as LlamaTokenizer, opts.tokenizerArgs ?? {}, warn);
        return real.encode(text);
      },
    };
  }
  const samples: CalibSample[] = [];
  if (opts.calibFile) samples.push(...readCalibFile(opts.calibFile, vocabSize, tokenizer));
  if (opts.calibTexts) samples.push(...calibSamplesFromTexts(opts.calibTexts, vocabSize, tokenizer));
  if (samples.length === 0) throw new CliError('E_USAGE', 'calibration needs data: give --calib_file or --calib_texts');
  return capCalibSamples(samples, warn);
}

/** Bytes of a tensor made by calibration (F32): a zero NormBias, or one layer's C8 scale / offset. */
async function calibTensorBytes(job: CalibJob, calibration: CalibrationRun | undefined): Promise<Uint8Array> {
  const v = job.value;
  if (v.kind === 'zeros') return new Uint8Array(4 * v.count);
  if (!calibration) throw new CliError('E_INTERNAL', `${job.target} needs KV statistics but no calibration ran`);
  const stats = (await calibration.layer(v.layer))[v.proj];
  if (!stats) throw new CliError('E_INTERNAL', `calibration of layer ${v.layer} has no ${v.proj}_proj statistics`);
  const data = v.field === 'scale' ? stats.scale : stats.offset;
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

function calibrationSummary(r: CalibrationResult, opts: ConvertOptions): CalibrationSummary {
  const m3: M3ChoiceSummary[] = [];
  for (const l of r.layers) {
    for (const c of [l.qkv, l.gateup]) if (c) m3.push({ layer: c.layer, subgraph: c.subgraph, ratio: c.ratio, gridIndex: c.gridIndex, losses: c.losses });
  }
  const kvLayers = r.layers.filter((l) => l.k && l.v).length;
  return {
    backend: r.backend,
    activations: r.activations,
    samples: r.samples,
    tokens: r.tokens,
    forwardSeconds: r.forwardSeconds,
    seconds: r.seconds,
    m3,
    kvLayers,
    ...(kvLayers > 0 ? { kvSym: opts.kvSym ?? true, kvPostRope: opts.kvPostRope ?? false } : {}),
  };
}

/** --calib_report: m3 choices in m3-choices.json's vocabulary, and each layer's observed K / V ranges. */
function calibReportJson(r: CalibrationResult, opts: ConvertOptions): unknown {
  const m3 = r.layers.flatMap((l) =>
    [l.qkv, l.gateup]
      .filter((c) => c !== undefined)
      .map((c) => ({ layer: c.layer, subgraph: c.subgraph, norm: c.norm, linears: c.linears, ratio: c.ratio, grid_index: c.gridIndex, grid_losses: c.losses })),
  );
  const range = (a: Float32Array) => [Math.min(...a), Math.max(...a)];
  const kv = r.layers
    .filter((l) => l.k && l.v)
    .map((l) => ({ layer: l.layer, k_min: range(l.k!.min)[0], k_max: range(l.k!.max)[1], v_min: range(l.v!.min)[0], v_max: range(l.v!.max)[1] }));
  return {
    backend: r.backend,
    activations: r.activations,
    samples: r.samples,
    tokens: r.tokens,
    forward_seconds: r.forwardSeconds,
    seconds: r.seconds,
    anti_method: opts.antiMethod ?? null,
    kv_sym: opts.kvCache ? (opts.kvSym ?? true) : null,
    kv_post_rope: opts.kvCache ? (opts.kvPostRope ?? false) : null,
    m3,
    kv,
  };
}
