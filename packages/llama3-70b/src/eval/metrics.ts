// Next-token distribution metrics for `eval`, on one logit row at a time: log-sum-exp, KL(P‖Q), argmax, NLL,
// all in f64 from the model's f32 logits. Pure functions; no model, no I/O. Not the sampling code (generate/).

/** log Σ exp(x_i) of `logits[offset .. offset+vocab)`, max-shifted so it neither overflows nor underflows. */
export function logSumExp(logits: Float32Array, offset: number, vocab: number): number {
  let m = -Infinity;
  for (let i = offset; i < offset + vocab; i++) if (logits[i] > m) m = logits[i];
  if (m === -Infinity || !Number.isFinite(m)) return m;
  let s = 0;
  for (let i = offset; i < offset + vocab; i++) s += Math.exp(logits[i] - m);
  return m + Math.log(s);
}

/** Index of the largest logit of the row (the first on ties, as torch.argmax). */
export function argmaxRow(logits: Float32Array, offset: number, vocab: number): number {
  let best = 0;
  let bv = logits[offset];
  for (let i = 1; i < vocab; i++) {
    const v = logits[offset + i];
    if (v > bv) {
      bv = v;
      best = i;
    }
  }
  return best;
}

/**
 * KL(P‖Q) = Σ p_i (log p_i − log q_i) of the softmaxes of two logit rows, with their log-sum-exps given
 * (computed once per row by the caller). Terms with p_i = 0 in f64 contribute 0 (the limit of p log p).
 * Identical rows give exactly 0.
 */
export function klDivergenceRows(
  p: Float32Array,
  pOffset: number,
  lseP: number,
  q: Float32Array,
  qOffset: number,
  lseQ: number,
  vocab: number,
): number {
  let kl = 0;
  for (let i = 0; i < vocab; i++) {
    const lp = p[pOffset + i] - lseP;
    const pi = Math.exp(lp);
    if (pi === 0) continue;
    kl += pi * (lp - (q[qOffset + i] - lseQ));
  }
  return kl;
}

/** Negative log-likelihood of token `id` under the softmax of a row: lse − logit[id]. */
export function nllOf(logits: Float32Array, offset: number, lse: number, id: number): number {
  return lse - logits[offset + id];
}

/** Running totals of one comparison (a sequence, or all of them). */
export interface CompareTotals {
  /** Positions compared (every position of every sequence). */
  positions: number;
  /** Positions where both argmaxes agree. */
  top1Agree: number;
  klSum: number;
  klMax: number;
  /** Where klMax was seen: sequence index and position. */
  klMaxAt: { sequence: number; position: number };
  /** Positions with a known next token (all but each sequence's last). */
  predicted: number;
  nllSumRef: number;
  nllSum: number;
}

export function emptyTotals(): CompareTotals {
  return { positions: 0, top1Agree: 0, klSum: 0, klMax: 0, klMaxAt: { sequence: -1, position: -1 }, predicted: 0, nllSumRef: 0, nllSum: 0 };
}

export function mergeTotals(into: CompareTotals, t: CompareTotals): void {
  into.positions += t.positions;
  into.top1Agree += t.top1Agree;
  into.klSum += t.klSum;
  if (t.klMaxAt.sequence >= 0 && (into.klMaxAt.sequence < 0 || t.klMax > into.klMax)) {
    into.klMax = t.klMax;
    into.klMaxAt = { ...t.klMaxAt };
  }
  into.predicted += t.predicted;
  into.nllSumRef += t.nllSumRef;
  into.nllSum += t.nllSum;
}

/** What the reference (float) pass keeps per position, so a variant can be compared without recomputing it. */
export interface RefRowStats {
  /** (T,) log-sum-exp of each reference row. */
  lse: Float64Array;
  /** (T,) argmax of each reference row. */
  argmax: Int32Array;
}

export function refRowStats(logits: Float32Array, rows: number, vocab: number): RefRowStats {
  const lse = new Float64Array(rows);
  const argmax = new Int32Array(rows);
  for (let t = 0; t < rows; t++) {
    lse[t] = logSumExp(logits, t * vocab, vocab);
    argmax[t] = argmaxRow(logits, t * vocab, vocab);
  }
  return { lse, argmax };
}

/**
 * Compares `rows` positions of one sequence starting at position `pos0`: reference logits `ref` (with their
 * stats) against variant logits `got`, both `(rows, vocab)`. `ids` is the whole sequence, so position t's next
 * token is ids[t+1] (none for the last position). Adds into `totals`; returns the KL of every row.
 */
export function compareRows(
  totals: CompareTotals,
  sequence: number,
  pos0: number,
  ids: ArrayLike<number>,
  ref: Float32Array,
  refStats: RefRowStats,
  got: Float32Array,
  rows: number,
  vocab: number,
): Float64Array {
  const kls = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const t = pos0 + r;
    const off = r * vocab;
    const lseRef = refStats.lse[t];
    const lseGot = logSumExp(got, off, vocab);
    const kl = klDivergenceRows(ref, off, lseRef, got, off, lseGot, vocab);
    kls[r] = kl;
    totals.positions++;
    totals.klSum += kl;
    if (totals.klMaxAt.sequence < 0 || kl > totals.klMax) {
      totals.klMax = kl;
      totals.klMaxAt = { sequence, position: t };
    }
    if (argmaxRow(got, off, vocab) === refStats.argmax[t]) totals.top1Agree++;
    if (t + 1 < ids.length) {
      totals.predicted++;
      totals.nllSumRef += nllOf(ref, off, lseRef, ids[t + 1]);
      totals.nllSum += nllOf(got, off, lseGot, ids[t + 1]);
    }
  }
  return kls;
}
