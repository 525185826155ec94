// Token choice from logits: argmax, and seeded sampling (temperature, top-k, top-p) in HF warper order.
// One implementation for every host kernel path, so a seed gives the same tokens whatever the kernels.

import type { Rng, SamplingParams } from './backend';

/** xoshiro128** seeded through splitmix32: small, fast, and the same stream on every platform. */
export function createRng(seed: number): Rng {
  let s = seed >>> 0;
  const split = (): number => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = split();
  let b = split();
  let c = split();
  let d = split();
  const next = (): number => {
    const r = Math.imul(rotl(Math.imul(b, 5) >>> 0, 7), 9) >>> 0;
    const t = (b << 9) >>> 0;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11);
    return r;
  };
  return {
    // 53 random bits -> a double in [0, 1)
    nextFloat: () => ((next() >>> 5) * 67108864 + (next() >>> 6)) / 9007199254740992,
  };
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** Index of the largest value of `row` (lowest index on ties; NaN never wins). */
export function argmaxRef(row: Float32Array): number {
  let best = 0;
  let bestV = -Infinity;
  for (let i = 0; i < row.length; i++) {
    if (row[i] > bestV) {
      bestV = row[i];
      best = i;
    }
  }
  return best;
}

/**
 * One token from `row` (logits): greedy when temperature <= 0; else softmax(logits / temperature), keep the top k,
 * then the smallest most-likely prefix whose renormalized mass reaches top p (at least one token), and draw with
 * one `rng.nextFloat()`. Ties order by lower index. Works in f64.
 */
export function sampleRef(row: Float32Array, params: SamplingParams, rng: Rng): number {
  const { temperature } = params;
  if (!(temperature > 0)) return argmaxRef(row);
  const vocab = row.length;
  const topK = params.topK && params.topK > 0 && params.topK < vocab ? params.topK : vocab;
  const topP = params.topP !== undefined && params.topP < 1 ? Math.max(params.topP, 0) : 1;

  const maxLogit = row[argmaxRef(row)];
  let z = 0;
  for (let i = 0; i < vocab; i++) z += Math.exp((row[i] - maxLogit) / temperature);

  // Candidates: a most-likely prefix that certainly contains the kept set, so only it needs sorting. With top-k,
  // the k largest (ties by index). Otherwise, for top-p, tokens with probability below eps = (1-p)/(2·vocab)
  // carry less than (1-p)/2 of the mass in total, so the sorted prefix reaching p·z ends before any of them.
  let cand: number[];
  let mass: number; // the mass top-p is measured against: all tokens, or the top-k set
  const weight = (i: number): number => Math.exp((row[i] - maxLogit) / temperature);
  if (topK < vocab) {
    cand = topKIndices(row, topK);
    mass = 0;
    for (const i of cand) mass += weight(i);
  } else if (topP < 1) {
    const eps = (1 - topP) / (2 * vocab);
    cand = [];
    for (let i = 0; i < vocab; i++) if (weight(i) / z >= eps) cand.push(i);
    mass = z;
  } else {
    cand = Array.from({ length: vocab }, (_, i) => i);
    mass = z;
  }
  cand.sort((i, j) => row[j] - row[i] || i - j);

  const w = cand.map(weight);
  let keep = w.length;
  if (topP < 1) {
    let cum = 0;
    for (let r = 0; r < w.length; r++) {
      cum += w[r];
      if (cum >= topP * mass) {
        keep = r + 1;
        break;
      }
    }
  }
  let total = 0;
  for (let r = 0; r < keep; r++) total += w[r];
  const u = rng.nextFloat() * total;
  let cum = 0;
  for (let r = 0; r < keep; r++) {
    cum += w[r];
    if (u < cum) return cand[r];
  }
  return cand[keep - 1];
}

/** The k largest entries (ties by lower index), unordered. O(vocab · log k) with a small heap. */
function topKIndices(row: Float32Array, k: number): number[] {
  // min-heap on (value asc, index desc): the root is the weakest kept entry
  const heap: number[] = [];
  const weaker = (a: number, b: number): boolean => row[a] < row[b] || (row[a] === row[b] && a > b);
  const down = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < heap.length && weaker(heap[l], heap[m])) m = l;
      if (r < heap.length && weaker(heap[r], heap[m])) m = r;
      if (m === i) return;
      [heap[i], heap[m]] = [heap[m], heap[i]];
      i = m;
    }
  };
  for (let i = 0; i < row.length; i++) {
    if (heap.length < k) {
      heap.push(i);
      for (let c = heap.length - 1; c > 0; ) {
        const p = (c - 1) >> 1;
        if (!weaker(heap[c], heap[p])) break;
        [heap[c], heap[p]] = [heap[p], heap[c]];
        c = p;
      }
    } else if (weaker(heap[0], i)) {
      heap[0] = i;
      down(0);
    }
  }
  return heap;
}
