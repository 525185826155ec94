// The checkpoint's tokenizer (tokenizer.json + tokenizer_config.json, through @huggingface/tokenizers) with the
// LLaMA-3 conventions run_pa relies on: BOS once, the chat format (the checkpoint's own Jinja chat_template through
// @huggingface/jinja, as transformers' apply_chat_template renders it; the LLaMA-3 Instruct format when it has none),
// `<|eot_id|>` as a stop token, and a streaming decoder.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { CliError } from '../cli/errors';

export const TOKENIZER_FILE = 'tokenizer.json';
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';
export const GENERATION_CONFIG_FILE = 'generation_config.json';

/** LLaMA-3 special tokens. */
export const LLAMA3_SPECIAL = {
  bos: '<|begin_of_text|>',
  eos: '<|end_of_text|>',
  eot: '<|eot_id|>',
  startHeader: '<|start_header_id|>',
  endHeader: '<|end_header_id|>',
} as const;

/** U+FFFD: what the byte-level decoder yields for an incomplete UTF-8 sequence; streaming holds it back. */
const REPLACEMENT_CHAR = '\ufffd';

type Json = Record<string, unknown>;

function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as Json).content === 'string') return (v as Json).content as string;
  return undefined;
}

function readJsonFile(file: string): Json {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Json;
  } catch (e) {
    throw new CliError('E_TOKENIZER', `${file}: cannot read or parse: ${(e as Error).message}`);
  }
}

/** tokenizer_config.json's `chat_template`: a string, or transformers' list of `{ name, template }` (the `default` one). */
function chatTemplateOf(cfg: Json): string | undefined {
  const t = cfg.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    const named = t.find((e) => e && typeof e === 'object' && (e as Json).name === 'default');
    const template = named && (named as Json).template;
    return typeof template === 'string' ? template : undefined;
  }
  return undefined;
}

export class LlamaTokenizer {
  /** BOS id prepended to every prompt (null when the tokenizer has none or says not to add it). */
  readonly bosId: number | null;
  /** `<|eot_id|>` when the vocabulary has it. */
  readonly eotId: number | null;
  /** The tokenizer's own eos (tokenizer_config `eos_token`). */
  readonly eosId: number | null;
  /** tokenizer_config.json's chat template (the `default` one of a named list), when it has one. */
  readonly chatTemplate: string | undefined;
  private readonly tok: Tokenizer;
  private readonly bosToken: string;
  private readonly eosToken: string;
  private compiledChat: Template | undefined;

  constructor(
    tokenizerJson: Json,
    tokenizerConfig: Json = {},
    /** Where tokenizerConfig came from, for error messages. */
    private readonly configFile = TOKENIZER_CONFIG_FILE,
  ) {
    try {
      this.tok = new Tokenizer(tokenizerJson, tokenizerConfig);
    } catch (e) {
      throw new CliError('E_TOKENIZER', `cannot build the tokenizer from tokenizer.json: ${(e as Error).message}`);
    }
    const id = (t: string | undefined): number | null => (t === undefined ? null : (this.tok.token_to_id(t) ?? null));
    const addBos = tokenizerConfig.add_bos_token !== false;
    this.bosId = addBos ? (id(tokenContent(tokenizerConfig.bos_token)) ?? id(LLAMA3_SPECIAL.bos)) : null;
    this.eosId = id(tokenContent(tokenizerConfig.eos_token)) ?? id(LLAMA3_SPECIAL.eos);
    this.eotId = id(LLAMA3_SPECIAL.eot);
    this.bosToken = tokenContent(tokenizerConfig.bos_token) ?? LLAMA3_SPECIAL.bos;
    this.eosToken = tokenContent(tokenizerConfig.eos_token) ?? LLAMA3_SPECIAL.eos;
    this.chatTemplate = chatTemplateOf(tokenizerConfig);
  }

  /** `<dir>/tokenizer.json` (+ tokenizer_config.json when present), or undefined when the checkpoint has none. */
  static fromDir(dir: string): LlamaTokenizer | undefined {
    const file = join(dir, TOKENIZER_FILE);
    if (!existsSync(file)) return undefined;
    const cfgFile = join(dir, TOKENIZER_CONFIG_FILE);
    return new LlamaTokenizer(readJsonFile(file), existsSync(cfgFile) ? readJsonFile(cfgFile) : {}, cfgFile);
  }

  /**
   * Token ids of `text` with BOS first, exactly once: a TemplateProcessing post-processor (LLaMA-3 tokenizer.json
   * since 2024) adds it itself; older tokenizer.json files (ByteLevel post-processor) do not, so it is added here.
   */
  encode(text: string): number[] {
    const ids = this.tok.encode(text, { add_special_tokens: true }).ids;
    if (this.bosId !== null && ids[0] !== this.bosId) ids.unshift(this.bosId);
    return ids;
  }

  /**
   * One user turn in the checkpoint's chat format, ready for generation: tokenizer_config.json's `chat_template`
   * rendered with `messages = [{ role: 'user', content: text }]`, `add_generation_prompt = true` and the bos / eos
   * tokens (transformers' apply_chat_template, which run_pa's `--is_chat_model` uses), then tokenized without adding
   * special tokens (the template writes them). Without a template: the LLaMA-3 Instruct format,
   * `<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{text}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n`
   * (content trimmed), which is what LLaMA-3's own template renders.
   */
  encodeChat(text: string): number[] {
    if (this.chatTemplate !== undefined) {
      let rendered: string;
      try {
        this.compiledChat ??= new Template(this.chatTemplate);
        rendered = this.compiledChat.render({
          messages: [{ role: 'user', content: text }],
          add_generation_prompt: true,
          bos_token: this.bosToken,
          eos_token: this.eosToken,
        });
      } catch (e) {
        throw new CliError('E_CHAT_TEMPLATE', `${this.configFile}: chat_template cannot be rendered: ${(e as Error).message}`);
      }
      return this.tok.encode(rendered, { add_special_tokens: false }).ids;
    }
    for (const t of [LLAMA3_SPECIAL.startHeader, LLAMA3_SPECIAL.endHeader, LLAMA3_SPECIAL.eot]) {
      if (this.tok.token_to_id(t) === undefined) {
        throw new CliError('E_CHAT_FORMAT', `--is_chat_model needs a chat_template in ${this.configFile} or the LLaMA-3 Instruct special tokens, but the tokenizer has no ${t}`);
      }
    }
    const { startHeader: sh, endHeader: eh, eot } = LLAMA3_SPECIAL;
    return this.encode(`${sh}user${eh}\n\n${text.trim()}${eot}${sh}assistant${eh}\n\n`);
  }

  /** Text of `ids`, special tokens dropped unless asked for. Spaces are not "cleaned up" so streaming stays a prefix. */
  decode(ids: readonly number[], keepSpecial = false): string {
    return this.tok.decode([...ids], { skip_special_tokens: !keepSpecial, clean_up_tokenization_spaces: false });
  }

  /** Token string of an id (e.g. `<|eot_id|>`), undefined outside the vocabulary. */
  idToToken(id: number): string | undefined {
    return this.tok.id_to_token(id);
  }

  /** Stop ids: the config's eos ids, the tokenizer's eos, `<|eot_id|>`, and generation_config.json's eos ids. */
  stopIds(configEos: readonly number[], generationConfigEos: readonly number[] = []): number[] {
    const s = new Set<number>([...configEos, ...generationConfigEos]);
    if (this.eosId !== null) s.add(this.eosId);
    if (this.eotId !== null) s.add(this.eotId);
    return [...s].sort((a, b) => a - b);
  }

  /** A decoder fed one id at a time that returns only the new text (UTF-8 sequences split over tokens held back). */
  streamDecoder(): StreamDecoder {
    return new StreamDecoder(this);
  }
}

export class StreamDecoder {
  private readonly ids: number[] = [];
  private emitted = '';
  constructor(private readonly tokenizer: LlamaTokenizer) {}

  /** Adds a token; returns the text it completes (may be empty). */
  push(id: number): string {
    this.ids.push(id);
    const text = this.tokenizer.decode(this.ids);
    if (text.endsWith(REPLACEMENT_CHAR) || !text.startsWith(this.emitted)) return '';
    const delta = text.slice(this.emitted.length);
    this.emitted = text;
    return delta;
  }

  /** Whatever is still held back (a dangling partial character comes out as U+FFFD). */
  flush(): string {
    const text = this.tokenizer.decode(this.ids);
    const delta = text.startsWith(this.emitted) ? text.slice(this.emitted.length) : '';
    this.emitted = text;
    return delta;
  }

  get text(): string {
    return this.tokenizer.decode(this.ids);
  }
}

/** eos ids listed in `<dir>/generation_config.json` (LLaMA-3 Instruct lists `<|eot_id|>` there), [] when absent. */
export function readGenerationEos(dir: string): number[] {
  const file = join(dir, GENERATION_CONFIG_FILE);
  if (!existsSync(file)) return [];
  const eos = readJsonFile(file).eos_token_id;
  const list = Array.isArray(eos) ? eos : eos === undefined || eos === null ? [] : [eos];
  return list.filter((x): x is number => Number.isSafeInteger(x) && (x as number) >= 0);
}
