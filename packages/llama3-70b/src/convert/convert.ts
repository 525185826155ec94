// `convert`: a Hugging Face LLaMA checkpoint in, an msModelSlim-layout W8A16 directory out.
// Streams tensor by tensor in row chunks; writes into a temporary directory beside the target and
// renames it into place only when everything is written, so an interrupted run leaves nothing that looks complete.

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
import { emptyQuantErrorStats, meanSqnrDb, mergeQuantErrorStats, type FloatDType, type QuantErrorStats } from '@w8a16/quant-core';
import { CliError } from '../cli/errors';
import { buildConvertPlan, type TensorJob } from './plan';
import { createExecutor } from './pool';
import { rowsPerUnit, type Unit, type UnitResult } from './units';

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
}

export interface ConvertProgress {
  readonly tensor: string;
  readonly tensorsDone: number;
  readonly tensorsTotal: number;
  readonly bytesDone: number;
  readonly bytesTotal: number;
  readonly kind: 'W8A16' | 'FLOAT';
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
  readonly warnings: string[];
}

export interface ConvertHooks {
  readonly onProgress?: (p: ConvertProgress) => void;
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
  try {
    const plan = buildConvertPlan(ckpt.tensors, config, opts, source);
    for (const w of plan.warnings) hooks.onWarning?.(w);
    const outPlan = planSafetensors(plan.tensors, {
      baseName: WEIGHT_BASE_NAME,
      partFileSizeBytes: opts.partFileSize === undefined ? undefined : Math.max(1, Math.round(opts.partFileSize * PART_FILE_UNIT_BYTES)),
    });
    mkdirSync(dirname(target), { recursive: true });
    tmp = mkdtempSync(join(dirname(target), `.${basename(target)}.partial-`));
    writer = SafetensorsWriter.create(tmp, outPlan);
    const w = writer;

    const bytesTotal = plan.jobs.reduce((s, j) => s + j.source.byteLength, 0);
    let bytesDone = 0;
    let tensorsDone = 0;
    let stats: QuantErrorStats = emptyQuantErrorStats();
    let maxAbsError: WorstRow | undefined;
    let minSqnrDb: WorstRow | undefined;

    const runJob = async (job: TensorJob): Promise<void> => {
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
            ? { ...base, kind: 'quantize', compute: plan.compute, scheme: plan.scheme }
            : { ...base, kind: 'copy', dstDType: job.targetDType };
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
      tensorsDone++;
      hooks.onProgress?.({
        tensor: target,
        tensorsDone,
        tensorsTotal: plan.jobs.length,
        bytesDone,
        bytesTotal,
        kind: job.kind === 'quantize' ? 'W8A16' : 'FLOAT',
      });
    };

    // A small window of tensors in flight keeps every worker busy across tensor boundaries
    // without queueing the whole model.
    const window = Math.max(2, threads * 2);
    const inFlight = new Set<Promise<void>>();
    for (const job of plan.jobs) {
      if (hooks.signal?.aborted) throw new CliError('E_INTERRUPTED', 'conversion interrupted');
      const p = runJob(job).finally(() => inFlight.delete(p));
      inFlight.add(p);
      if (inFlight.size >= window) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);

    const written = writer.finish();
    writer = undefined;
    for (const f of written.files) if (f.endsWith('.safetensors')) chmodSync(f, WEIGHT_FILE_MODE);
    const descPath = join(tmp, DESCRIPTION_FILE_NAME);
    const topLevel: [string, string][] = [
      ['version', '1.0.0'],
      ['model_quant_type', 'W8A16'],
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
      warnings: plan.warnings,
    };
  } finally {
    writer?.abort();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
    ckpt.close();
    await executor.close();
  }
}
