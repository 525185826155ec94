// Rotary-embedding inverse frequencies as HF transformers computes them (default and `rope_type: llama3`).
// Pure functions, and the cos/sin table both backends build from them (Backend.createRope).

/** LLaMA-3.x frequency scaling (transformers `_compute_llama3_parameters`). */
export interface Llama3RopeScaling {
  ropeType: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

export interface RopeConfig {
  headDim: number;
  /** `rope_theta` (10000 for LLaMA-2, 500000 for LLaMA-3). */
  theta: number;
  /** Absent / null / `{ropeType: 'default'}` = plain RoPE. */
  scaling?: Llama3RopeScaling | { ropeType: 'default' } | null;
}

const f = Math.fround;

/**
 * `headDim / 2` inverse frequencies in float32, each step rounded to f32 as torch does:
 * `inv[i] = 1 / theta^(2i/headDim)`; with llama3 scaling, wavelengths above `orig/low` are divided by `factor`,
 * those below `orig/high` kept, and the ones between blended with `smooth = (orig/wavelen − low)/(high − low)`.
 */
export function computeInvFreq(config: RopeConfig): Float32Array {
  const { headDim, theta } = config;
  if (!Number.isInteger(headDim) || headDim <= 0 || headDim % 2 !== 0) {
    throw new RangeError(`computeInvFreq: headDim must be a positive even integer, found ${headDim}`);
  }
  const half = headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = f(1 / f(Math.pow(theta, f(f(2 * i) / headDim))));
  const scaling = config.scaling;
  if (!scaling || scaling.ropeType === 'default') return inv;

  const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: old } = scaling;
  // Python floats (f64) for the thresholds, f32 tensors for everything derived from inv_freq.
  const lowFreqWavelen = old / lowFreqFactor;
  const highFreqWavelen = old / highFreqFactor;
  for (let i = 0; i < half; i++) {
    // torch evaluates `scalar / tensor` as `tensor.reciprocal() * scalar`, the scalar cast to f32.
    const wavelen = f(f(1 / inv[i]) * f(2 * Math.PI));
    const llama = wavelen > lowFreqWavelen ? f(inv[i] / factor) : inv[i];
    if (!(wavelen < highFreqWavelen) && !(wavelen > lowFreqWavelen)) {
      const smooth = f(f(f(f(1 / wavelen) * old) - lowFreqFactor) / (highFreqFactor - lowFreqFactor));
      inv[i] = f(f(f(f(1 - smooth) * llama) / factor) + f(smooth * llama));
    } else {
      inv[i] = llama;
    }
  }
  return inv;
}

/**
 * cos/sin of pos·invFreq for positions 0..filled-1 (headDim/2 pairs per position), grown on demand by doubling.
 * The angle is rounded to f32 first, as torch computes `inv_freq @ position_ids` in f32. Each backend subclasses
 * it so its own rope handles stay distinguishable (a handle from another backend is refused).
 */
export class RopeAngleTable {
  freed = false;
  cos = new Float32Array(0);
  sin = new Float32Array(0);
  filled = 0;
  constructor(
    readonly headDim: number,
    readonly invFreq: Float32Array,
  ) {}
  ensure(maxPos: number): void {
    if (maxPos < this.filled) return;
    const half = this.headDim / 2;
    const want = Math.max(maxPos + 1, this.filled * 2, 256);
    const cos = new Float32Array(want * half);
    const sin = new Float32Array(want * half);
    cos.set(this.cos);
    sin.set(this.sin);
    for (let p = this.filled; p < want; p++) {
      for (let i = 0; i < half; i++) {
        const a = Math.fround(p * this.invFreq[i]);
        cos[p * half + i] = Math.cos(a);
        sin[p * half + i] = Math.sin(a);
      }
    }
    this.cos = cos;
    this.sin = sin;
    this.filled = want;
  }
}
