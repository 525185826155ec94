// The table, JSON and HTML of a real eval run on tiny-llama3-fp16: JSON shape and values, perplexity columns only
// when asked, and an HTML page that is self-contained, well nested, escaped, with one SVG chart per directory.

import { join } from 'node:path';
import { createHostBackend } from '@w8a16/ascend-runtime';
import { beforeAll, describe, expect, it } from 'vitest';
import { FIXTURES } from '../../test/helpers';
import { readCalibFile } from '../calibrate/calib-data';
import { evaluateCheckpoints, type EvalReport } from './evaluate';
import { displayNames, escapeHtml, evalReportJson, formatEvalTable, niceCeil, renderEvalHtml, weightErrorSvg, type TokenSource } from './report';

const TINY = join(FIXTURES, 'tiny-llama3-fp16');
const RTN = join(TINY, 'reference/w8a16-rtn');
const M3 = join(TINY, 'reference/w8a16-m3-c8');
const SOURCE: TokenSource = { kind: 'calib_file', path: join(TINY, 'calib.jsonl'), text: false };

/** Elements HTML never closes. */
const VOID_ELEMENTS = new Set(['meta', 'br', 'hr', 'img', 'input', 'link']);

/** Checks that every opened element is closed in order; returns the element names seen. */
function checkNesting(html: string): string[] {
  const stack: string[] = [];
  const seen: string[] = [];
  for (const m of html.matchAll(/<(\/?)([a-zA-Z][\w-]*)\b[^>]*?(\/?)>/g)) {
    const [, closing, rawName, selfClosing] = m;
    const name = rawName.toLowerCase();
    if (closing) {
      const open = stack.pop();
      if (open !== name) throw new Error(`</${name}> closes <${open}> at offset ${m.index}`);
    } else {
      seen.push(name);
      if (!selfClosing && !VOID_ELEMENTS.has(name)) stack.push(name);
    }
  }
  if (stack.length) throw new Error(`unclosed: ${stack.join(', ')}`);
  return seen;
}

/** The parts of the JSON document the tests read. */
interface JsonReport {
  reference: string;
  token_source: unknown;
  sequences: number;
  positions: number;
  predicted_positions: number;
  variants: { label: string; weights: string; c8: boolean; kv_cache: string; kl_mean: number; w8a16_linears: number; perplexity_float: number; sequences: object[] }[];
  weight_error: { label: string; linears: { rel_error: unknown }[] }[];
}

let report: EvalReport;
beforeAll(() => {
  const backend = createHostBackend({ kernels: 'js' });
  try {
    const sequences = readCalibFile(join(TINY, 'calib.jsonl'), 256).map((s) => ({ ids: s.ids, source: `calib.jsonl:${s.line}` }));
    report = evaluateCheckpoints({ modelPath: TINY, quantPaths: [RTN, M3], sequences, backend, weightError: true });
  } finally {
    backend.dispose();
  }
});

describe('evalReportJson', () => {
  it('has the documented shape and the report\'s numbers', () => {
    const j = JSON.parse(JSON.stringify(evalReportJson(report, SOURCE))) as JsonReport;
    expect(Object.keys(j)).toEqual(['version', 'model_path', 'reference', 'token_source', 'sequences', 'positions', 'predicted_positions', 'float', 'variants', 'weight_error']);
    expect(j.reference).toBe('FLOAT');
    expect(j.token_source).toEqual({ kind: 'calib_file', path: SOURCE.path, text: false });
    expect([j.sequences, j.positions, j.predicted_positions]).toEqual([4, 72, 68]);
    expect(j.variants.map((v) => [v.label, v.weights, v.c8, v.kv_cache])).toEqual([
      ['RTN', 'rtn', false, 'f32'],
      ['m3+C8 [f32 KV]', 'm3', true, 'f32'],
      ['m3+C8', 'm3', true, 'int8'],
    ]);
    const v = j.variants[0];
    expect(Object.keys(v)).toEqual([
      'label', 'quant_path', 'weights', 'c8', 'w8a16_linears', 'kv_cache', 'positions', 'predicted_positions', 'top1_agreement', 'kl_mean', 'kl_max',
      'kl_max_at', 'nll_mean', 'perplexity', 'perplexity_float', 'seconds', 'sequences',
    ]);
    expect(v.kl_mean).toBe(report.variants[0].klMean);
    expect(v.w8a16_linears).toBe(21);
    expect(v.perplexity_float).toBe(report.float.ppl);
    expect(v.sequences).toHaveLength(4);
    expect(Object.keys(v.sequences[0])).toEqual(['index', 'source', 'tokens', 'top1_agreement', 'kl_mean', 'kl_max', 'kl_last', 'nll_mean', 'nll_mean_float']);
    expect(j.weight_error.map((w) => [w.label, w.linears.length])).toEqual([
      ['RTN', 21],
      ['m3+C8', 21],
    ]);
    expect(j.weight_error[1].linears[0]).toMatchObject({ name: 'model.layers.1.self_attn.q_proj.weight', layer: 1, kind: 'q', rows: 128, cols: 128, m3_unfolded: true });
    for (const w of j.weight_error) for (const l of w.linears) expect(typeof l.rel_error).toBe('number');
  });
});

describe('formatEvalTable', () => {
  it('one row per run; perplexity columns only when asked, with the note for id input', () => {
    const plain = formatEvalTable(report, SOURCE, false);
    const lines = plain.split('\n');
    const header = lines.findIndex((l) => l.startsWith('variant'));
    expect(lines[header]).not.toContain('PPL');
    expect(lines.slice(header + 1, header + 4).map((l) => l.split(/\s{2,}/)[0])).toEqual(['RTN', 'm3+C8 [f32 KV]', 'm3+C8']);
    expect(plain).toContain('weight error');
    const ppl = formatEvalTable(report, SOURCE, true);
    expect(ppl).toMatch(/PPL\s+PPL float\s+ΔPPL/);
    expect(ppl).toContain('perplexity on them says little');
    expect(formatEvalTable(report, { ...SOURCE, text: true }, true)).not.toContain('says little');
  });
});

describe('renderEvalHtml', () => {
  it('is self-contained and well nested, with the table and one SVG chart per converted directory', () => {
    const html = renderEvalHtml(report, SOURCE, true);
    expect(html.startsWith('<!DOCTYPE html>')).toBe(true);
    const elements = checkNesting(html);
    expect(elements.filter((e) => e === 'svg')).toHaveLength(2);
    expect(elements.filter((e) => e === 'table')).toHaveLength(2);
    expect(elements).not.toContain('script');
    expect(html).not.toMatch(/\b(src|href)\s*=|url\(|@import/i);
    for (const label of ['RTN', 'm3+C8 [f32 KV]', 'm3+C8']) expect(html).toContain(`<td class="l">${label}</td>`);
    expect(html).toContain('<polyline');
    expect(html).toContain(report.variants[0].klMean.toExponential(3));
  });

  it('escapes what it quotes', () => {
    expect(escapeHtml(`a<b>&"c'`)).toBe('a&lt;b&gt;&amp;&quot;c&#39;');
    const odd = { ...report, modelPath: '/tmp/<x>&y' };
    const html = renderEvalHtml(odd, SOURCE, false);
    expect(html).toContain('/tmp/&lt;x&gt;&amp;y');
    expect(html).not.toContain('<x>');
    checkNesting(html);
  });
});

describe('displayNames', () => {
  it('adds the directory name only where labels repeat', () => {
    const [a, b, c] = report.variants;
    expect(displayNames([a, b, c])).toEqual(['RTN', 'm3+C8 [f32 KV]', 'm3+C8']);
    expect(displayNames([a, { ...a, dir: '/x/other-rtn' }, c])).toEqual(['RTN (w8a16-rtn)', 'RTN (other-rtn)', 'm3+C8']);
  });
});

describe('weightErrorSvg', () => {
  it('puts lm_head after the last layer and scales the axis to a round maximum', () => {
    expect([niceCeil(0.0063), niceCeil(0.002), niceCeil(0.011), niceCeil(0)]).toEqual([0.01, 0.002, 0.02, 1]);
    const svg = weightErrorSvg({
      dir: 'd',
      label: 'RTN',
      mean: 0.006,
      max: 0.007,
      linears: [
        { name: 'model.layers.0.self_attn.q_proj.weight', layer: 0, kind: 'q', rows: 2, cols: 2, relError: 0.005, unfolded: false },
        { name: 'model.layers.1.self_attn.q_proj.weight', layer: 1, kind: 'q', rows: 2, cols: 2, relError: 0.006, unfolded: false },
        { name: 'lm_head.weight', layer: null, kind: 'lm_head', rows: 2, cols: 2, relError: 0.007, unfolded: false },
      ],
    });
    checkNesting(svg);
    expect(svg).toContain('>head</text>');
    expect(svg).toContain('>1.0e-2</text>');
    expect(svg.match(/<circle/g)).toHaveLength(3);
    expect(svg.match(/<polyline/g)).toHaveLength(1); // one line for q; lm_head is a single point
  });
});
