#!/usr/bin/env node
// Decode benchmark of `llama3-70b run` on the generated LLaMA-3.2-1B-shaped checkpoint: prefill and decode tokens/s
// of the float original and two W8A16 conversions at 1 and 2 threads, the effective weight bandwidth against the
// machine's measured read bandwidth, and the issue's targets. Measures the BUILT app; it does not tune anything.
//
// Usage: node tools/bench/decode/bench.mjs [--quick] [--threads 1,2] [--tokens 64] [--repeat 5] [--prompt_len 8] [--wait_quiet 60]
//   --quick: smoke check on the small built-in-shaped model (8 layers, hidden 256), 16 tokens, one repeat.
//   --wait_quiet S: before each measurement wait up to S seconds for other processes to use < QUIET_CORES (0 = never).
// Env:   BENCH_DIR (default /tmp/w8a16-bench): generated checkpoints (shared with tools/bench/convert), the
//        converted W8A16 copies (cached, re-made when the source or the flags change) and decode-last-run.json.
//        BENCH_APP_MODULE / BENCH_CLI / BENCH_RUNTIME_MODULE: the built app module, CLI and runtime to use.

import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { machine, machineCpu, waitQuiet } from '../common.mjs';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const CLI = resolve(process.env.BENCH_CLI || join(REPO, 'packages/llama3-70b/bin/llama3-70b.js'));
const APP_MODULE = resolve(process.env.BENCH_APP_MODULE || join(REPO, 'packages/llama3-70b/dist/index.js'));
const RUNTIME_MODULE = resolve(process.env.BENCH_RUNTIME_MODULE || join(REPO, 'packages/ascend-runtime/dist/index.js'));
const BENCH_DIR = resolve(process.env.BENCH_DIR || '/tmp/w8a16-bench');
/** Seed of the generated checkpoints: the same as tools/bench/convert, so the 3 GB checkpoint is shared. */
const BENCH_SEED = 1;
/** Bumped when the conversion recipe below changes, so cached conversions are re-made. */
const CONVERT_RECIPE_VERSION = 1;
/** A load average above this while measuring means other processes competed for the 2 cores. */
const LOAD_WARN = 0.5;
/**
 * CPU (in cores) that processes other than the measured one may use while we measure: above it, the run is flagged
 * and, with --wait_quiet, we wait for the machine to calm down first. 0.25: a core's quarter already costs a
 * 2-thread decode several percent.
 */
const QUIET_CORES = 0.25;
/** Bandwidth probe: a buffer far larger than the caches (L3 is 32 MiB on this kind of machine). */
const PROBE_BYTES = { full: 1024 ** 3, quick: 256 * 1024 ** 2 };
/** Probe timing: best of ROUNDS rounds of at least ROUND_SECONDS each (other processes only ever slow a round). */
const PROBE_TIMING = { full: { rounds: 8, seconds: 0.25 }, quick: { rounds: 3, seconds: 0.1 } };
/** The short probe taken right before each run, at the run's thread count (about a second). */
const LOCAL_PROBE_TIMING = { rounds: 4, seconds: 0.2 };
/**
 * Prompt ids (ids from LLaMA-3's vocabulary, BOS first); the checkpoint is random, so only the length matters.
 * 8 tokens: a short prompt, so the decode context stays short and the weights dominate what a step reads.
 */
const PROMPT_IDS = [128000, 791, 4062, 14198, 39935, 35308, 927, 279, 16053, 5679, 13, 578, 4062, 374, 3249, 1606];

const TARGETS = {
  /** W8A16 decode tokens/s over our own fp16 decode tokens/s, same threads. */
  vsFp16: 1.7,
  /** Effective bandwidth of the lm_head-fp16 W8A16 decode over the measured read bandwidth, same threads. */
  ofReadBandwidth: 0.8,
};
/**
 * llama.cpp decode tokens/s on the same shapes, measured by the issue author with node-llama-cpp's prebuilt
 * llama.cpp on this kind of machine (issue 3). Quoted, not measured here.
 */
const LLAMA_CPP_QUOTED = {
  Q8_0: { 1: [11, 14], 2: [17, 20] },
  F16: { 1: [9, 10], 2: [11, 12.7] },
};

function parseArgs(argv) {
  const opts = { quick: false, threads: [1, 2], tokens: undefined, repeat: undefined, promptLen: 8, waitQuiet: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--quick') opts.quick = true;
    else if (a === '--threads') opts.threads = next().split(',').map(Number);
    else if (a === '--tokens') opts.tokens = Number(next());
    else if (a === '--repeat') opts.repeat = Number(next());
    else if (a === '--prompt_len') opts.promptLen = Number(next());
    else if (a === '--wait_quiet') opts.waitQuiet = Number(next());
    else throw new Error(`unknown argument ${a}; usage: bench.mjs [--quick] [--threads 1,2] [--tokens 64] [--repeat 5] [--prompt_len 8] [--wait_quiet 60]`);
  }
  opts.tokens ??= opts.quick ? 16 : 64;
  opts.repeat ??= opts.quick ? 1 : 5;
  opts.waitQuiet ??= opts.quick ? 0 : 60;
  if (!(opts.waitQuiet >= 0)) throw new Error(`--wait_quiet must be >= 0 seconds, got ${opts.waitQuiet}`);
  for (const t of opts.threads) if (!(Number.isInteger(t) && t >= 1)) throw new Error(`--threads expects positive integers, got ${opts.threads.join(',')}`);
  if (!(Number.isInteger(opts.tokens) && opts.tokens >= 4)) throw new Error(`--tokens must be an integer >= 4, got ${opts.tokens}`);
  if (!(Number.isInteger(opts.repeat) && opts.repeat >= 1)) throw new Error(`--repeat must be an integer >= 1, got ${opts.repeat}`);
  if (!(Number.isInteger(opts.promptLen) && opts.promptLen >= 1 && opts.promptLen <= PROMPT_IDS.length)) {
    throw new Error(`--prompt_len must be 1..${PROMPT_IDS.length}, got ${opts.promptLen}`);
  }
  return opts;
}

const fmt = (x, d = 2) => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(d));
const load = () => os.loadavg().map((x) => x.toFixed(2)).join(' ');
const log = (s) => process.stderr.write(`${s}\n`);

// --- safetensors headers: bytes of weights read per decoded token ------------------------------------------

const DTYPE_BYTES = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** Every tensor of every *.safetensors file in dir: { name: { dtype, shape, bytes } }. */
function readTensorTable(dir) {
  const table = {};
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.safetensors'))) {
    const fd = openSync(join(dir, f), 'r');
    try {
      const len = Buffer.alloc(8);
      readSync(fd, len, 0, 8, 0);
      const n = Number(len.readBigUInt64LE(0));
      const head = Buffer.alloc(n);
      readSync(fd, head, 0, n, 8);
      for (const [name, t] of Object.entries(JSON.parse(head.toString('utf8')))) {
        if (name === '__metadata__') continue;
        if (!(t.dtype in DTYPE_BYTES)) throw new Error(`${join(dir, f)}: tensor ${name} has dtype ${t.dtype}, not one this benchmark sizes`);
        table[name] = { dtype: t.dtype, shape: t.shape, bytes: t.data_offsets[1] - t.data_offsets[0] };
      }
    } finally {
      closeSync(fd);
    }
  }
  return table;
}

/**
 * Bytes of weights one decode step of one sequence reads: every tensor (linears with their scales/offsets, norms,
 * lm_head) except the embedding table, of which one row is read (unless it also serves as a tied lm_head).
 * The KV cache read by attention is not included (about 2·16·ctx·512·4 B: under 5 MB at ctx 72).
 */
function bytesPerToken(dir) {
  const table = readTensorTable(dir);
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  const embed = table['model.embed_tokens.weight'];
  if (!embed) throw new Error(`${dir}: no model.embed_tokens.weight`);
  const tied = !table['lm_head.weight'] && config.tie_word_embeddings !== false;
  let total = 0;
  const parts = { int8: 0, float: 0 };
  for (const [name, t] of Object.entries(table)) {
    if (name === 'model.embed_tokens.weight') continue;
    total += t.bytes;
    parts[t.dtype === 'I8' ? 'int8' : 'float'] += t.bytes;
  }
  total += tied ? embed.bytes : embed.bytes / embed.shape[0];
  const lm = table['lm_head.weight'] ?? embed;
  return { total, lmHead: { dtype: lm.dtype, bytes: lm.bytes }, parts };
}

// --- other processes' CPU --------------------------------------------------------------------------------

// --- read bandwidth --------------------------------------------------------------------------------------

function bestOf(fn, { rounds, seconds }) {
  fn(); // warm up: spin up the thread pool, touch the pages
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    let calls = 0;
    const t0 = performance.now();
    let t = t0;
    while (t - t0 < seconds * 1000 || calls < 2) {
      fn();
      calls++;
      t = performance.now();
    }
    best = Math.min(best, (t - t0) / 1000 / calls);
  }
  return best;
}

/**
 * A read-bandwidth prober (GB/s at a thread count) over one large buffer: the runtime addon's readSum (u64 sum,
 * the same probe as tools/bench/kernels); without the addon, a one-thread JS Float64Array sum stands in for all.
 */
async function makeProber(quick) {
  const bytes = quick ? PROBE_BYTES.quick : PROBE_BYTES.full;
  const buf = new Uint8Array(bytes);
  for (let i = 0; i < buf.length; i += 4096) buf[i] = i & 0xff; // commit every page
  try {
    const rt = await import(pathToFileURL(RUNTIME_MODULE).href);
    const addon = rt.loadHostAddon();
    const isa = addon.bestIsa();
    return {
      how: `@w8a16/ascend-runtime addon readSum (u64 sum, isa ${['scalar', 'avx2', 'avx512'][isa] ?? isa}) over ${bytes / 2 ** 20} MiB`,
      measure: (threads, timing) => bytes / bestOf(() => addon.readSum(buf, threads, isa), timing) / 1e9,
    };
  } catch (e) {
    const f64 = new Float64Array(buf.buffer);
    const sum = () => {
      let s = 0;
      for (let i = 0; i < f64.length; i++) s += f64[i];
      return s;
    };
    return { how: `JS Float64Array sum over ${bytes / 2 ** 20} MiB, ONE thread for every row (addon unavailable: ${e.message})`, measure: (_threads, timing) => bytes / bestOf(sum, timing) / 1e9 };
  }
}

// --- conversions and runs --------------------------------------------------------------------------------

/** The two W8A16 recipes: every decoder linear quantized, asymmetric, lm_head fp16 (seed recipe) or int8 too. */
const RECIPES = [
  { key: 'w8a16-lmfp16', label: 'W8A16, lm_head fp16', args: ['--w_sym', 'False'] },
  { key: 'w8a16-int8', label: 'W8A16, all int8', args: ['--w_sym', 'False', '--disable_last_linear', 'False'] },
];
const CONVERT_MARKER = '.bench-decode-convert.json';

function ensureConverted(source, sourceMarker, recipe) {
  const out = join(BENCH_DIR, `decode-${source.name}-${recipe.key}`);
  const want = { recipeVersion: CONVERT_RECIPE_VERSION, args: recipe.args, source: source.dir, sourceCreatedAt: sourceMarker.createdAt, sourceSeed: sourceMarker.seed };
  const markerPath = join(out, CONVERT_MARKER);
  if (existsSync(markerPath)) {
    const have = JSON.parse(readFileSync(markerPath, 'utf8'));
    if (JSON.stringify(have.want) === JSON.stringify(want)) return { dir: out, converted: false, seconds: have.seconds };
  }
  const args = [CLI, 'convert', '--model_path', source.dir, '--save_directory', out, '--force', ...recipe.args];
  log(`converting (${recipe.label}): node ${args.join(' ')}`);
  const t0 = performance.now();
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  const seconds = (performance.now() - t0) / 1000;
  if (r.status !== 0) throw new Error(`convert (${recipe.label}) exited with ${r.status}:\n${r.stderr}`);
  writeFileSync(markerPath, `${JSON.stringify({ want, seconds }, null, 2)}\n`);
  return { dir: out, converted: true, seconds };
}

const HAS_TIME = existsSync('/usr/bin/time');

/**
 * One `run --json` of one prompt; returns its timings, the load average just before, and the CPU other processes
 * used meanwhile (machine busy time minus the child's user+sys from /usr/bin/time, per second of wall time).
 */
function runOnce(dir, threads, opts) {
  const ids = PROMPT_IDS.slice(0, opts.promptLen).join(',');
  const args = [CLI, 'run', dir, '--input_ids', ids, '--ignore_eos', '--max_output_length', String(opts.tokens), '--threads', String(threads), '--kernels', 'native', '--json'];
  const timeFile = join(BENCH_DIR, '.decode-time');
  const loadBefore = os.loadavg()[0];
  const cpu0 = machineCpu();
  const t0 = performance.now();
  const r = HAS_TIME
    ? spawnSync('/usr/bin/time', ['-f', '%U %S', '-o', timeFile, process.execPath, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 })
    : spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  const wall = (performance.now() - t0) / 1000;
  const cpu1 = machineCpu();
  if (r.status !== 0) throw new Error(`node ${args.join(' ')} exited with ${r.status}:\n${r.stderr}`);
  const line = r.stdout.trim().split('\n').pop();
  const j = JSON.parse(line);
  if (j.output_ids.length !== opts.tokens) throw new Error(`expected ${opts.tokens} output tokens (--ignore_eos), got ${j.output_ids.length}: ${line}`);
  let others;
  let steal;
  if (cpu0 && cpu1) {
    steal = (cpu1.steal - cpu0.steal) / wall;
    if (HAS_TIME) {
      const [u, s] = readFileSync(timeFile, 'utf8').trim().split('\n').pop().split(/\s+/).map(Number);
      others = Math.max(0, (cpu1.busy - cpu0.busy - u - s) / wall);
    }
  }
  return { wall, loadBefore, others, steal, prefill: j.prefill, decode: j.decode, stderr: r.stderr.trim() };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

// --- main ------------------------------------------------------------------------------------------------

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  for (const f of [CLI, APP_MODULE, RUNTIME_MODULE]) {
    if (!existsSync(f)) throw new Error(`build the app first: ${f} not found (cd ${REPO} && NX_DAEMON=false npx nx run-many -t build)`);
  }
  const app = await import(pathToFileURL(APP_MODULE).href);
  for (const name of ['ensureGeneratedModel', 'GENERATOR_SPECS']) {
    if (!(name in app)) throw new Error(`${APP_MODULE} does not export ${name}`);
  }
  mkdirSync(BENCH_DIR, { recursive: true });
  const loadStart = load();
  const loadSamples = [os.loadavg()[0]];
  console.log(`machine: ${machine()}`);
  console.log(`load average at start: ${loadStart}`);

  const spec = app.GENERATOR_SPECS[opts.quick ? 'builtin' : 'llama-3.2-1b'];
  const tg = performance.now();
  const model = await app.ensureGeneratedModel({ cacheDir: BENCH_DIR, name: spec.name, spec, seed: BENCH_SEED });
  console.log(`model: ${spec.description}${opts.quick ? '  [--quick: smoke check, NOT the issue shapes]' : ''}`);
  console.log(`  ${model.generated ? `generated in ${((performance.now() - tg) / 1000).toFixed(1)} s` : 'cached'}: ${model.dir}`);

  const checkpoints = [{ key: 'fp16', label: 'fp16 original', dir: model.dir }];
  for (const recipe of RECIPES) {
    const c = ensureConverted({ name: spec.name, dir: model.dir }, model.marker, recipe);
    console.log(`  ${recipe.label}: ${c.converted ? `converted in ${fmt(c.seconds, 1)} s` : 'cached'}: ${c.dir} (convert ${recipe.args.join(' ')})`);
    checkpoints.push({ key: recipe.key, label: recipe.label, dir: c.dir });
  }
  for (const c of checkpoints) c.bytes = bytesPerToken(c.dir);

  // A bandwidth probe before every repeat and after the last: with 2 threads this machine's read bandwidth swings
  // from run to run (other guests of the host), so the table pairs best with best and median with median.
  const prober = await makeProber(opts.quick);
  const probes = [];
  const probe = async (when) => {
    log(`measuring read bandwidth (${when}) ...`);
    const gate = await waitQuiet(opts.waitQuiet, QUIET_CORES);
    const timing = opts.quick ? PROBE_TIMING.quick : PROBE_TIMING.full;
    probes.push({ when, othersBefore: gate.sample?.cores, gbs: Object.fromEntries(opts.threads.map((t) => [t, prober.measure(t, timing)])) });
    loadSamples.push(os.loadavg()[0]);
  };

  // Repeats are the outer loop, so a burst of load from another process hits different configurations.
  const runs = {};
  for (let rep = 0; rep < opts.repeat; rep++) {
    await probe(`before repeat ${rep + 1}`);
    for (const threads of opts.threads) {
      for (const c of checkpoints) {
        const gate = await waitQuiet(opts.waitQuiet, QUIET_CORES);
        const localBw = prober.measure(threads, LOCAL_PROBE_TIMING);
        const r = { ...runOnce(c.dir, threads, opts), waited: gate.waited, othersBefore: gate.sample?.cores, localBw };
        r.ofLocal = (c.bytes.total * r.decode.tokens_per_second) / 1e9 / localBw;
        loadSamples.push(r.loadBefore);
        (runs[`${c.key}/${threads}`] ??= []).push(r);
        log(
          `  rep ${rep + 1}/${opts.repeat} ${c.label.padEnd(20)} t${threads}: prefill ${fmt(r.prefill.tokens_per_second, 1)} tok/s, decode ${fmt(r.decode.tokens_per_second, 2)} tok/s` +
            ` = ${fmt(100 * r.ofLocal, 0)}% of ${fmt(localBw, 1)} GB/s probed just before (others ${fmt(r.others)} cores, steal ${fmt(r.steal)}, load ${fmt(r.loadBefore)}${gate.waited > 1.5 ? `, waited ${fmt(gate.waited, 0)} s for quiet` : ''})`,
        );
      }
    }
  }
  await probe('after the runs');
  const loadEnd = load();
  loadSamples.push(os.loadavg()[0]);
  const bw = Object.fromEntries(
    opts.threads.map((t) => {
      const xs = probes.map((p) => p.gbs[t]);
      return [t, { best: Math.max(...xs), median: median(xs), min: Math.min(...xs), all: xs }];
    }),
  );

  // --- table ---
  const rows = [];
  for (const threads of opts.threads) {
    const fp16Dec = runs[`fp16/${threads}`].map((r) => r.decode.tokens_per_second);
    for (const c of checkpoints) {
      const rs = runs[`${c.key}/${threads}`];
      const dec = rs.map((r) => r.decode.tokens_per_second);
      const best = Math.max(...dec);
      const med = median(dec);
      const quoted = c.key === 'w8a16-int8' ? LLAMA_CPP_QUOTED.Q8_0[threads] : c.key === 'fp16' ? LLAMA_CPP_QUOTED.F16[threads] : undefined; // quoted for 1 and 2 threads only
      rows.push({
        checkpoint: c.label,
        key: c.key,
        threads,
        gbPerToken: c.bytes.total / 1e9,
        prefillBest: Math.max(...rs.map((r) => r.prefill.tokens_per_second)),
        decodeBest: best,
        decodeMedian: med,
        decodeAll: dec,
        othersBest: rs[dec.indexOf(best)].others,
        othersMax: Math.max(...rs.map((r) => r.others ?? 0)),
        effBest: (c.bytes.total * best) / 1e9,
        effMedian: (c.bytes.total * med) / 1e9,
        ofReadBest: (c.bytes.total * best) / 1e9 / bw[threads].best,
        ofReadMedian: (c.bytes.total * med) / 1e9 / bw[threads].median,
        ofLocalMedian: median(rs.map((r) => r.ofLocal)),
        vsFp16Best: c.key === 'fp16' ? undefined : best / Math.max(...fp16Dec),
        vsFp16Median: c.key === 'fp16' ? undefined : med / median(fp16Dec),
        quoted,
      });
    }
  }

  console.log(`\nread bandwidth: ${prober.how}, ${probes.length} probes (before each repeat, after the runs):`);
  for (const t of opts.threads) {
    console.log(`  ${t} thread(s): best ${fmt(bw[t].best, 1)}, median ${fmt(bw[t].median, 1)}, min ${fmt(bw[t].min, 1)} GB/s  [${bw[t].all.map((x) => fmt(x, 1)).join(', ')}]`);
  }
  console.log(`runs: prompt of ${opts.promptLen} ids, --ignore_eos --max_output_length ${opts.tokens} (${opts.tokens - 1} decode steps), --kernels native, --json; ${opts.repeat} repeats\n`);
  const pair = (a, b, d, scale = 1) => `${fmt(scale * a, d)} / ${fmt(scale * b, d)}`;
  const header = ['checkpoint', 'thr', 'GB/token', 'prefill tok/s', 'decode tok/s best / median', 'others%', 'eff. GB/s', '% read BW', '% local BW', 'x own fp16', 'llama.cpp*', 'x llama.cpp*'];
  const table = rows.map((r) => [
    r.checkpoint,
    String(r.threads),
    fmt(r.gbPerToken, 3),
    fmt(r.prefillBest, 1),
    pair(r.decodeBest, r.decodeMedian, 2),
    `${fmt(100 * r.othersBest, 0)}/${fmt(100 * r.othersMax, 0)}`,
    pair(r.effBest, r.effMedian, 1),
    pair(r.ofReadBest, r.ofReadMedian, 0, 100),
    fmt(100 * r.ofLocalMedian, 0),
    r.vsFp16Best === undefined ? '-' : pair(r.vsFp16Best, r.vsFp16Median, 2),
    r.quoted ? `${r.key === 'fp16' ? 'F16' : 'Q8_0'} ${r.quoted[0]}-${r.quoted[1]}` : '-',
    r.quoted ? `${fmt(r.decodeBest / r.quoted[1])}-${fmt(r.decodeBest / r.quoted[0])}` : '-',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((t) => t[i].length)));
  const line = (cells) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ')} |`;
  console.log(line(header));
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const t of table) console.log(line(t));
  console.log(
    '\nGB/token: weight bytes one decode step reads (safetensors headers: all linears with scales/offsets, norms, lm_head;' +
      ' one embedding row; KV cache not counted). Pairs are best / median over the repeats: eff. GB/s = GB/token x decode tok/s;' +
      ' % read BW = eff. GB/s over the best / median read-bandwidth probe at the same threads; % local BW = median over the' +
      ' repeats of (the run\'s eff. GB/s over a 1 s probe at its thread count taken just before it); x own fp16 = decode over the fp16' +
      " original's at the same threads. prefill: best. others% = CPU used by OTHER processes during the run (% of one core: machine" +
      " busy time minus the run's user+sys), for the best run / the worst repeat.\n* llama.cpp decode tok/s on the same shapes," +
      " measured by the issue author with node-llama-cpp's prebuilt llama.cpp on this kind of machine: QUOTED from issue 3, not" +
      ' measured here. x llama.cpp = our best over their range.',
  );
  for (const c of checkpoints) {
    console.log(`  ${c.label}: ${fmt(c.bytes.total / 1e9, 3)} GB/token (int8 ${fmt(c.bytes.parts.int8 / 1e9, 3)}, float ${fmt(c.bytes.parts.float / 1e9, 3)}; lm_head ${c.bytes.lmHead.dtype} ${fmt(c.bytes.lmHead.bytes / 1e9, 3)})`);
  }

  const verdicts = [];
  const both = (what, best, med, min, show) => verdicts.push([what, best >= min, med >= min, `best ${show(best)}, median ${show(med)}`]);
  for (const r of rows) {
    const thr = `${r.checkpoint}, ${r.threads} thr`;
    if (r.key !== 'fp16') both(`${thr}: decode >= ${TARGETS.vsFp16}x own fp16`, r.vsFp16Best, r.vsFp16Median, TARGETS.vsFp16, (x) => `${fmt(x, 3)}x`);
    if (r.key === 'w8a16-lmfp16') {
      both(`${thr}: >= ${TARGETS.ofReadBandwidth * 100}% of read bandwidth`, r.ofReadBest, r.ofReadMedian, TARGETS.ofReadBandwidth, (x) => `${fmt(100 * x, 1)}%`);
      verdicts.push([`${thr}: >= ${TARGETS.ofReadBandwidth * 100}% of the read bandwidth probed just before each run (median)`, r.ofLocalMedian >= TARGETS.ofReadBandwidth, r.ofLocalMedian >= TARGETS.ofReadBandwidth, `${fmt(100 * r.ofLocalMedian, 1)}%`]);
    }
    if (r.key === 'w8a16-int8' && r.quoted) {
      both(`${thr}: >= llama.cpp Q8_0 (quoted ${r.quoted[0]}-${r.quoted[1]} tok/s)`, r.decodeBest, r.decodeMedian, r.quoted[0], (x) => `${fmt(x)} tok/s`);
    }
  }
  console.log(`\ntargets${opts.quick ? ' (--quick: smoke shapes, verdicts not meaningful)' : ''}:`);
  console.log('  (best / median: PASS or FAIL on the best figures, then on the medians)');
  for (const [what, passBest, passMedian, value] of verdicts) {
    console.log(`  ${passBest ? 'PASS' : 'FAIL'}/${passMedian ? 'PASS' : 'FAIL'}  ${what}: ${value}`);
  }

  const maxLoad = Math.max(...loadSamples);
  const allRuns = Object.values(runs).flat();
  const busyRuns = allRuns.filter((r) => r.others >= QUIET_CORES);
  const maxOthers = Math.max(...allRuns.map((r) => r.others ?? 0));
  console.log(
    `\nload average at start: ${loadStart}; at end: ${loadEnd}; highest 1-min sample before a run: ${fmt(maxLoad)} ` +
      '(the 1-min average counts this benchmark\'s own runs too: up to ~2 after a 2-thread run)',
  );
  console.log(
    `other processes during the runs: up to ${fmt(100 * maxOthers, 0)}% of a core; ${busyRuns.length} of ${allRuns.length} runs had >= ${QUIET_CORES * 100}%` +
      `; host steal up to ${fmt(100 * Math.max(...allRuns.map((r) => r.steal ?? 0)), 0)}%${opts.waitQuiet > 0 ? `; each measurement waited up to ${opts.waitQuiet} s for quiet` : ''}`,
  );
  const why = [
    ...(Number(loadStart.split(' ')[0]) > LOAD_WARN ? [`1-min load average ${loadStart.split(' ')[0]} > ${LOAD_WARN} at start`] : []),
    ...(Number(loadEnd.split(' ')[0]) > LOAD_WARN ? [`${loadEnd.split(' ')[0]} at end (partly this benchmark's own runs)`] : []),
    ...(busyRuns.length > 0 ? [`other processes used >= ${QUIET_CORES * 100}% of a core during ${busyRuns.length} run(s)`] : []),
  ];
  if (why.length > 0) {
    console.log(
      `WARNING: ${why.join('; ')}. This machine is shared with other jobs: figures taken under load are low and noisy, the 2-thread` +
        ' ones most (see others% per row); rerun on a quiet machine.',
    );
  }
  writeFileSync(
    join(BENCH_DIR, `decode-last-run${opts.quick ? '-quick' : ''}.json`),
    JSON.stringify({ machine: machine(), opts, loadStart, loadEnd, loadSamples, bandwidth: { probes, summary: bw }, checkpoints, runs, rows, verdicts }, null, 2),
  );
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 1;
});
