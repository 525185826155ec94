// The `convert` flag table (msModelSlim's quantifier.py flags, same names and spellings) and its
// translation into ConvertOptions. Flags that would change the output in ways this build cannot
// reproduce fail at once; flags that have no effect on W8A16 in msModelSlim either are accepted.

import { CliError } from '../cli/errors';
import { parseFlags, type FlagSpec, type ParsedFlags } from '../cli/args';
import type { ConvertOptions } from './convert';
import { DISABLE_PRESETS } from './names';

export const CONVERT_FLAGS: Readonly<Record<string, FlagSpec>> = {
  model_path: { kind: 'string', help: 'Hugging Face checkpoint directory (config.json + *.safetensors)' },
  save_directory: { kind: 'string', help: 'output directory (written atomically; must be empty or absent unless --force)' },
  w_bit: { kind: 'int', help: 'weight bits (8)' },
  a_bit: { kind: 'int', help: 'activation bits (16; this tool makes W8A16 checkpoints; msModelSlim defaults to 8)' },
  w_sym: { kind: 'bool', help: 'symmetric weights (offset 0, codes ±127) or asymmetric (default True, as msModelSlim)' },
  mm_tensor: { kind: 'bool', help: 'accepted for compatibility; quantifier.py always passes mm_tensor=False (per-channel)' },
  disable_names: { kind: 'list', help: 'linear layers kept in float, e.g. model.layers.0.mlp.down_proj lm_head' },
  disable_preset: { kind: 'string', choices: Object.keys(DISABLE_PRESETS), help: 'adds a recipe\'s disable_names (llama3-70b: all linears of layers 0-4, lm_head)' },
  disable_last_linear: { kind: 'bool', help: 'keep lm_head in float (default True)' },
  device_type: { kind: 'string', choices: ['cpu', 'npu'], help: 'cpu: quantize in float32 (msModelSlim CPU path), calibrate on the host; npu: quantize in the model dtype, calibrate on the Ascend NPU when its libraries are found (else on the host, with a warning)' },
  part_file_size: { kind: 'number', help: 'shard the weights: GiB per file (msModelSlim semantics)' },
  calib_file: { kind: 'string', help: 'JSON Lines calibration data (needed by --anti_method m3 and --use_kvcache_quant)' },
  calib_texts: { kind: 'list', help: 'calibration texts given inline' },
  anti_method: { kind: 'string', help: "anti-outlier method: '' (none) or m3 (AWQ-style smoothing; needs --calib_file or --calib_texts)" },
  act_method: { kind: 'int', help: 'activation observer 1|2|3 (no effect on W8A16, as in msModelSlim)' },
  use_kvcache_quant: { kind: 'bool', help: 'calibrate an int8 KV cache (C8; needs --calib_file or --calib_texts)' },
  kv_sym: { kind: 'bool', help: 'C8 scales symmetric, offsets 0 (default True, as msModelSlim) or asymmetric (False); not a quantifier.py flag' },
  kv_calibrate_post_rope: {
    kind: 'bool',
    help: 'C8 K scales from K after RoPE, as the cache stores it (True), or from the k_proj output as msModelSlim (default False); not a quantifier.py flag',
  },
  calib_report: { kind: 'string', help: 'also write the calibration choices (m3 ratios and grid losses, K/V ranges) as JSON to this file' },
  tokenizer_args: { kind: 'string', help: 'JSON object of tokenizer options for calibration, e.g. {"padding_side":"left"}' },
  use_fa_quant: { kind: 'bool', help: 'FA3 attention quantization (not supported)' },
  fa_amp: { kind: 'int', help: 'FA quant amplification (only with --use_fa_quant)' },
  use_reduce_quant: { kind: 'bool', help: 'communication quantization (not supported)' },
  disable_level: { kind: 'string', help: "automatic rollback level; W8A16 supports only manual rollback: 'L0'" },
  fraction: { kind: 'number', help: 'accepted; sparse/outlier option with no effect on W8A16' },
  co_sparse: { kind: 'bool', help: 'accepted; only used by W4A8 sparse quantization' },
  is_lowbit: { kind: 'bool', help: 'accepted; only used by W4A8 low-bit quantization' },
  do_smooth: { kind: 'bool', help: 'accepted; activation smoothing, no effect on W8A16' },
  use_sigma: { kind: 'bool', help: 'accepted; activation outlier option, no effect on W8A16' },
  sigma_factor: { kind: 'number', help: 'accepted; activation outlier option, no effect on W8A16' },
  open_outlier: { kind: 'bool', help: 'accepted; activation outlier option, no effect on W8A16' },
  group_size: { kind: 'int', help: 'accepted; per-channel W8A16 forces group_size -1 (absent from the description)' },
  is_dynamic: { kind: 'bool', help: 'accepted; only used by W8A8 dynamic quantization' },
  tp_size: { kind: 'int', help: 'accepted; tensor parallelism is applied at load time, not in the checkpoint' },
  input_ids_name: { kind: 'string', help: 'accepted for compatibility (input_ids)' },
  attention_mask_name: { kind: 'string', help: 'accepted for compatibility (attention_mask)' },
  trust_remote_code: { kind: 'switch', help: 'accepted; no remote code is ever run' },
  force: { kind: 'switch', help: 'replace a non-empty --save_directory (the old one is removed only after success)' },
  threads: { kind: 'int', help: 'worker threads (default: one per core)' },
  help: { kind: 'switch', help: 'show this help' },
};

function get<T>(flags: ParsedFlags, name: string, fallback: T): T {
  return flags.has(name) ? (flags.get(name) as T) : fallback;
}

export function convertOptionsFromFlags(flags: ParsedFlags): ConvertOptions {
  const modelPath = get<string | undefined>(flags, 'model_path', undefined);
  const saveDirectory = get<string | undefined>(flags, 'save_directory', undefined);
  if (!modelPath) throw new CliError('E_USAGE', 'convert needs --model_path');
  if (!saveDirectory) throw new CliError('E_USAGE', 'convert needs --save_directory');

  const wBit = get(flags, 'w_bit', 8);
  if (wBit !== 8) throw new CliError('E_UNSUPPORTED', `--w_bit ${wBit}: this build writes 8-bit weights only (W8A16)`);
  const aBit = get(flags, 'a_bit', 16);
  if (aBit !== 16) {
    throw new CliError('E_UNSUPPORTED', `--a_bit ${aBit}: this build makes W8A16 checkpoints only (activations stay 16-bit); W8A8 is not supported`);
  }
  const anti = get<string>(flags, 'anti_method', '');
  if (anti !== '' && anti !== 'm3') throw new CliError('E_UNSUPPORTED', `--anti_method ${anti}: msModelSlim allows only m3 with --a_bit 16`);
  const kvCache = get(flags, 'use_kvcache_quant', false);
  const calibFile = get<string | undefined>(flags, 'calib_file', undefined);
  const calibTexts = get<string[] | undefined>(flags, 'calib_texts', undefined);
  if ((anti === 'm3' || kvCache) && !calibFile && !calibTexts) {
    const what = anti === 'm3' ? '--anti_method m3' : '--use_kvcache_quant True';
    throw new CliError('E_USAGE', `${what} needs calibration data: give --calib_file FILE.jsonl or --calib_texts TEXT [TEXT ...]`);
  }
  if (flags.has('kv_sym') && !kvCache) throw new CliError('E_USAGE', '--kv_sym only applies with --use_kvcache_quant True');
  if (flags.has('kv_calibrate_post_rope') && !kvCache) throw new CliError('E_USAGE', '--kv_calibrate_post_rope only applies with --use_kvcache_quant True');
  if (get(flags, 'use_fa_quant', false)) throw new CliError('E_UNSUPPORTED', '--use_fa_quant True is not supported (W8A16 only)');
  if (get(flags, 'use_reduce_quant', false)) throw new CliError('E_UNSUPPORTED', '--use_reduce_quant True is not supported (W8A16 only)');
  const level = get(flags, 'disable_level', 'L0');
  if (level !== 'L0') throw new CliError('E_UNSUPPORTED', `--disable_level ${level}: W8A16 supports only manual rollback (L0, use --disable_names)`);
  const act = get(flags, 'act_method', 1);
  if (![1, 2, 3].includes(act)) throw new CliError('E_USAGE', `--act_method expects 1, 2 or 3, got ${act}`);
  const tokenizerArgsText = get(flags, 'tokenizer_args', '{}');
  let tokenizerArgs: Record<string, unknown>;
  try {
    const v: unknown = JSON.parse(tokenizerArgsText);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
    tokenizerArgs = v as Record<string, unknown>;
  } catch {
    throw new CliError('E_USAGE', `--tokenizer_args expects a JSON object, got '${tokenizerArgsText}'`);
  }
  const part = get<number | undefined>(flags, 'part_file_size', undefined);
  if (part !== undefined && !(part > 0)) throw new CliError('E_USAGE', `--part_file_size expects a positive size in GiB, got ${part}`);
  const threads = get<number | undefined>(flags, 'threads', undefined);
  if (threads !== undefined && threads < 1) throw new CliError('E_USAGE', `--threads expects at least 1, got ${threads}`);

  const preset = get<string | undefined>(flags, 'disable_preset', undefined);
  const disableNames = [...get<string[]>(flags, 'disable_names', []), ...(preset ? DISABLE_PRESETS[preset] : [])];
  return {
    modelPath,
    saveDirectory,
    disableNames: [...new Set(disableNames)],
    disableLastLinear: get(flags, 'disable_last_linear', true),
    wSym: get(flags, 'w_sym', true),
    deviceType: get(flags, 'device_type', 'cpu') as 'cpu' | 'npu',
    partFileSize: part,
    force: get(flags, 'force', false),
    threads,
    ...(anti === 'm3' ? { antiMethod: 'm3' as const } : {}),
    ...(kvCache ? { kvCache: true, kvSym: get(flags, 'kv_sym', true), kvPostRope: get(flags, 'kv_calibrate_post_rope', false) } : {}),
    ...(calibFile ? { calibFile } : {}),
    ...(calibTexts ? { calibTexts } : {}),
    tokenizerArgs,
    ...(flags.has('calib_report') ? { calibReport: get<string>(flags, 'calib_report', '') } : {}),
  };
}

export function parseConvertArgs(argv: readonly string[]): ConvertOptions | 'help' {
  const { flags, positionals } = parseFlags(argv, CONVERT_FLAGS);
  if (flags.get('help')) return 'help';
  if (positionals.length > 0) throw new CliError('E_USAGE', `convert takes flags only; unexpected argument '${positionals[0]}'`);
  return convertOptionsFromFlags(flags);
}
