// The three faces of an eval report: a fixed-width table for the terminal, a JSON document (snake_case, the
// numbers as computed) and a small self-contained HTML page (inline CSS and SVG, no scripts, no external assets).

import { basename } from 'node:path';
import type { EvalReport, VariantResult } from './evaluate';
import type { WeightErrorReport } from './weight-error';

/** Where the sequences came from, as the command saw them. */
export interface TokenSource {
  kind: 'calib_file' | 'input_ids' | 'input_texts';
  /** The calibration file, for kind calib_file. */
  path?: string;
  /** True when the tokens are tokenized text (perplexity then means something). */
  text: boolean;
}

export const JSON_REPORT_VERSION = 1;

const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;
const sci = (x: number): string => (x === 0 ? '0' : x.toExponential(3));
const num = (x: number | null, digits = 4): string => (x === null ? '-' : x.toFixed(digits));

function pplDelta(v: VariantResult): string {
  if (v.ppl === null || v.pplFloat === null) return '-';
  const d = (100 * (v.ppl - v.pplFloat)) / v.pplFloat;
  return `${d >= 0 ? '+' : ''}${d.toFixed(3)}%`;
}

function describeSource(r: EvalReport, src: TokenSource): string {
  const from = src.kind === 'calib_file' ? src.path : `--${src.kind}`;
  return `${r.sequences} sequence(s), ${r.positions} positions (${r.predicted} with a next token) from ${from}${src.text ? '' : ' (token ids)'}`;
}

/** The terminal table. Perplexity columns only when `showPpl` (text input, or asked for). */
export function formatEvalTable(r: EvalReport, src: TokenSource, showPpl: boolean): string {
  const head = ['variant', 'KV', 'int8 linears', 'top-1 agree', 'KL mean', 'KL max', ...(showPpl ? ['PPL', 'PPL float', 'ΔPPL'] : []), 'dir'];
  const rows = r.variants.map((v) => [
    v.label,
    v.kvCache,
    String(v.scheme.w8a16Linears),
    pct(v.top1Agreement),
    sci(v.klMean),
    sci(v.klMax),
    ...(showPpl ? [num(v.ppl), num(v.pplFloat), pplDelta(v)] : []),
    v.dir,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : i >= 2 && i < cells.length - 1 ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  const out = [`eval against ${r.modelPath}: ${describeSource(r, src)}`, '', line(head), ...rows.map(line)];
  if (showPpl && !src.text) out.push('', 'note: the tokens are ids, not text: perplexity on them says little about the model.');
  out.push('', 'KL = KL(float ‖ variant) of next-token distributions at every position; top-1 = argmax agreement with the float model.');
  if (r.weightErrors) {
    out.push('', 'weight error ‖W − W_eff‖/‖W‖ over quantized linears (m3: smoothing scale divided out):');
    for (const w of r.weightErrors) out.push(`  ${w.label.padEnd(8)} mean ${sci(w.mean)}  max ${sci(w.max)}  (${w.linears.length} linears)  ${w.dir}`);
  }
  return out.join('\n');
}

/** The JSON document `--json` writes. */
export function evalReportJson(r: EvalReport, src: TokenSource): Record<string, unknown> {
  return {
    version: JSON_REPORT_VERSION,
    model_path: r.modelPath,
    reference: r.reference.label,
    token_source: { kind: src.kind, ...(src.path !== undefined ? { path: src.path } : {}), text: src.text },
    sequences: r.sequences,
    positions: r.positions,
    predicted_positions: r.predicted,
    float: { nll_mean: r.float.nllMean, perplexity: r.float.ppl, seconds: r.float.seconds },
    variants: r.variants.map((v) => ({
      label: v.label,
      quant_path: v.dir,
      weights: v.scheme.weights,
      c8: v.scheme.c8,
      w8a16_linears: v.scheme.w8a16Linears,
      kv_cache: v.kvCache,
      positions: v.positions,
      predicted_positions: v.predicted,
      top1_agreement: v.top1Agreement,
      kl_mean: v.klMean,
      kl_max: v.klMax,
      kl_max_at: v.klMaxAt,
      nll_mean: v.nllMean,
      perplexity: v.ppl,
      perplexity_float: v.pplFloat,
      seconds: v.seconds,
      sequences: v.sequences.map((s) => ({
        index: s.index,
        source: s.source,
        tokens: s.tokens,
        top1_agreement: s.top1Agreement,
        kl_mean: s.klMean,
        kl_max: s.klMax,
        kl_last: s.klLast,
        nll_mean: s.nllMean,
        nll_mean_float: s.nllMeanFloat,
      })),
    })),
    ...(r.weightErrors
      ? {
          weight_error: r.weightErrors.map((w) => ({
            quant_path: w.dir,
            label: w.label,
            mean: w.mean,
            max: w.max,
            linears: w.linears.map((l) => ({ name: l.name, layer: l.layer, kind: l.kind, rows: l.rows, cols: l.cols, rel_error: l.relError, m3_unfolded: l.unfolded })),
          })),
        }
      : {}),
  };
}

// --- HTML ------------------------------------------------------------------------------------------------

export function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

/** Series colors (matplotlib's tab10), one per linear kind. */
const KIND_COLORS: Record<string, string> = {
  q: '#1f77b4',
  k: '#ff7f0e',
  v: '#2ca02c',
  o: '#d62728',
  gate: '#9467bd',
  up: '#8c564b',
  down: '#e377c2',
  lm_head: '#7f7f7f',
};
const KIND_ORDER = ['q', 'k', 'v', 'o', 'gate', 'up', 'down', 'lm_head'];

/** A round axis maximum at or above x: 1, 2 or 5 times a power of ten. */
export function niceCeil(x: number): number {
  if (!(x > 0) || !Number.isFinite(x)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 5, 10]) if (m * p >= x * (1 - 1e-12)) return m * p;
  return 10 * p;
}

/** Inline SVG: relative weight error per layer, one line per linear kind (lm_head as a last point). */
export function weightErrorSvg(w: WeightErrorReport): string {
  const W = 720;
  const H = 300;
  const m = { left: 64, right: 110, top: 16, bottom: 40 };
  const layers = w.linears.filter((l) => l.layer !== null).map((l) => l.layer!);
  const nLayers = layers.length ? Math.max(...layers) + 1 : 0;
  const hasHead = w.linears.some((l) => l.layer === null);
  const slots = Math.max(1, nLayers + (hasHead ? 1 : 0));
  const yMax = niceCeil(Math.max(...w.linears.map((l) => (Number.isFinite(l.relError) ? l.relError : 0)), 0));
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const x = (slot: number) => m.left + (slots === 1 ? pw / 2 : (slot * pw) / (slots - 1));
  const y = (v: number) => m.top + ph - (Math.min(v, yMax) / yMax) * ph;
  const f = (v: number) => v.toFixed(1);
  const parts: string[] = [];
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${escapeHtml(`weight error per layer, ${w.label}`)}">`);
  parts.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="#fff" stroke="#999"/>`);
  for (let i = 0; i <= 5; i++) {
    const v = (yMax * i) / 5;
    parts.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${f(y(v))}" y2="${f(y(v))}" stroke="#eee"/>`);
    parts.push(`<text x="${m.left - 6}" y="${f(y(v) + 4)}" text-anchor="end" font-size="11">${v === 0 ? '0' : v.toExponential(1)}</text>`);
  }
  const every = Math.max(1, Math.ceil(nLayers / 16));
  for (let l = 0; l < nLayers; l += every) parts.push(`<text x="${f(x(l))}" y="${H - m.bottom + 16}" text-anchor="middle" font-size="11">${l}</text>`);
  if (hasHead) parts.push(`<text x="${f(x(nLayers))}" y="${H - m.bottom + 16}" text-anchor="middle" font-size="11">head</text>`);
  parts.push(`<text x="${m.left + pw / 2}" y="${H - 6}" text-anchor="middle" font-size="12">layer</text>`);
  parts.push(`<text x="14" y="${m.top + ph / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 14 ${m.top + ph / 2})">‖W − W_eff‖ / ‖W‖</text>`);
  const kinds = KIND_ORDER.filter((k) => w.linears.some((l) => l.kind === k));
  kinds.forEach((kind, ki) => {
    const color = KIND_COLORS[kind];
    const pts = w.linears
      .filter((l) => l.kind === kind)
      .map((l) => ({ slot: l.layer ?? nLayers, l }))
      .sort((a, b) => a.slot - b.slot);
    if (pts.length > 1) parts.push(`<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${pts.map((p) => `${f(x(p.slot))},${f(y(p.l.relError))}`).join(' ')}"/>`);
    for (const p of pts) {
      parts.push(`<circle cx="${f(x(p.slot))}" cy="${f(y(p.l.relError))}" r="3" fill="${color}"><title>${escapeHtml(`${p.l.name}: ${p.l.relError.toExponential(3)}`)}</title></circle>`);
    }
    const ly = m.top + 8 + ki * 16;
    parts.push(`<line x1="${W - m.right + 12}" x2="${W - m.right + 32}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2"/>`);
    parts.push(`<text x="${W - m.right + 38}" y="${ly + 4}" font-size="11">${kind}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n');
}

/** Run labels, with the directory's name added where two runs share a label (e.g. two RTN directories). */
export function displayNames(variants: readonly VariantResult[]): string[] {
  const count = new Map<string, number>();
  for (const v of variants) count.set(v.label, (count.get(v.label) ?? 0) + 1);
  return variants.map((v) => (count.get(v.label)! > 1 ? `${v.label} (${basename(v.dir)})` : v.label));
}

const CSS = `body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td{white-space:nowrap}td.l,th.l{text-align:left;white-space:normal}code{font-size:90%}p.note{color:#555;font-size:90%}`;

/** The `--html` page: the summary table, per-sequence KL, and one weight-error chart per converted directory. */
export function renderEvalHtml(r: EvalReport, src: TokenSource, showPpl: boolean, title = 'W8A16 eval report'): string {
  const e = escapeHtml;
  const head = ['variant', 'KV cache', 'int8 linears', 'top-1 agreement', 'KL mean', 'KL max', ...(showPpl ? ['PPL', 'PPL float', 'ΔPPL'] : []), 'directory'];
  const rows = r.variants.map(
    (v) =>
      `<tr><td class="l">${e(v.label)}</td><td class="l">${e(v.kvCache)}</td><td>${v.scheme.w8a16Linears}</td><td>${pct(v.top1Agreement)}</td><td>${sci(v.klMean)}</td><td>${sci(v.klMax)}</td>` +
      (showPpl ? `<td>${num(v.ppl)}</td><td>${num(v.pplFloat)}</td><td>${pplDelta(v)}</td>` : '') +
      `<td class="l"><code>${e(v.dir)}</code></td></tr>`,
  );
  const seqHead = ['sequence', 'tokens', ...displayNames(r.variants).map((n) => `KL mean · ${n}`)];
  const seqRows = r.variants.length
    ? r.variants[0].sequences.map(
        (s, i) => `<tr><td class="l">${e(basename(s.source))}</td><td>${s.tokens}</td>${r.variants.map((v) => `<td>${sci(v.sequences[i].klMean)}</td>`).join('')}</tr>`,
      )
    : [];
  const charts = (r.weightErrors ?? []).map(
    (w) =>
      `<h3>${e(w.label)} <code>${e(w.dir)}</code></h3>\n<p>mean ${sci(w.mean)}, max ${sci(w.max)} over ${w.linears.length} quantized linears` +
      `${w.linears.some((l) => l.unfolded) ? '; q/k/v/gate/up have the m3 scale divided out (s = γ_source / γ_smoothed per input column)' : ''}.</p>\n${weightErrorSvg(w)}`,
  );
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"/>
<title>${e(title)}</title>
<style>${CSS}</style>
</head>
<body>
<h1>${e(title)}</h1>
<p>Float source <code>${e(r.modelPath)}</code>; ${e(describeSource(r, src))}.</p>
<h2>Next-token agreement with the float model</h2>
<table>
<thead><tr>${head.map((h, i) => `<th${i < 2 || i === head.length - 1 ? ' class="l"' : ''}>${e(h)}</th>`).join('')}</tr></thead>
<tbody>
${rows.join('\n')}
</tbody>
</table>
<p class="note">Teacher-forced: every sequence is prefilled (in chunks through the KV cache when long) and each position's next-token distribution is compared.
KL = KL(float ‖ variant) in nats, computed in f64 from f32 logits. Top-1 = share of positions whose argmax equals the float model's.
PPL = exp(mean NLL of the actual next token).${showPpl && !src.text ? ' The tokens are ids, not text: perplexity on them says little.' : ''}
A C8 directory is run twice: with the float KV cache ([f32 KV], its weight error alone) and with its int8 KV cache.</p>
<h2>Per sequence</h2>
<table>
<thead><tr>${seqHead.map((h, i) => `<th${i === 0 ? ' class="l"' : ''}>${e(h)}</th>`).join('')}</tr></thead>
<tbody>
${seqRows.join('\n')}
</tbody>
</table>
<h2>Weight quantization error per layer</h2>
${charts.length ? charts.join('\n') : '<p>No quantized linears to measure.</p>'}
</body>
</html>
`;
}
