// HF LlamaRMSNorm in float32 exactly as PyTorch's CPU (AVX2) kernels round it, for calibration: the m3 scales
// are a function of the norm output, and msModelSlim's folded γ/s is reproduced to the bit only from bit-identical
// activations. Not the runtime's norm (the Backend's rmsNorm sums in float64, which is closer to exact, not to torch).

/** Float32 lanes of an AVX2 vector: PyTorch's default CPU capability on x86 (the fixtures were made with it). */
export const TORCH_F32_LANES = 8;
/** row_sum's ILP factor in aten/src/ATen/native/cpu/SumKernel.cpp: four vector accumulators interleaved. */
const ILP = 4;
/** multi_row_sum's cascade depth (num_levels). */
const LEVELS = 4;

const f = Math.fround;

/** c10's CeilLog2 as SumKernel uses it (1 for x <= 2). */
function ceilLog2(x: number): number {
  return x <= 2 ? 1 : Math.ceil(Math.log2(x));
}

/**
 * Σ p[start .. start+len) in PyTorch's order for a contiguous float32 sum (`vectorized_inner_sum` → `row_sum` →
 * `multi_row_sum`): the row is read as groups of ILP·lanes floats; each of the ILP·lanes accumulators sums its
 * column with the cascade of `multi_row_sum` (chunks of 2^levelPower groups carried up to four levels); the ILP
 * vectors are folded onto the first, the scalar tail is added onto 0, then the lanes left to right.
 * `acc` is scratch of at least LEVELS·ILP·lanes floats.
 */
export function torchInnerSumF32(p: Float32Array, start: number, len: number, acc: Float32Array): number {
  const V = TORCH_F32_LANES;
  const W = ILP * V; // floats per multi_row_sum "row"
  const vecSize = Math.floor(len / V);
  const size = Math.floor(vecSize / ILP); // multi_row_sum rows
  const levelPower = Math.max(4, Math.floor(ceilLog2(size) / LEVELS));
  const levelStep = 2 ** levelPower;
  const levelMask = levelStep - 1;
  acc.fill(0, 0, LEVELS * W);
  let i = 0;
  for (; i + levelStep <= size; ) {
    for (let j = 0; j < levelStep; j++, i++) {
      const base = start + i * W;
      for (let k = 0; k < W; k++) acc[k] += p[base + k]; // level 0; the Float32Array store rounds each add
    }
    for (let l = 1; l < LEVELS; l++) {
      for (let k = 0; k < W; k++) {
        acc[l * W + k] += acc[(l - 1) * W + k];
        acc[(l - 1) * W + k] = 0;
      }
      if ((i & (levelMask << (l * levelPower))) !== 0) break;
    }
  }
  for (; i < size; i++) {
    const base = start + i * W;
    for (let k = 0; k < W; k++) acc[k] += p[base + k];
  }
  for (let l = 1; l < LEVELS; l++) for (let k = 0; k < W; k++) acc[k] += acc[l * W + k];
  // row_sum: vectors left over after the ILP groups go onto accumulator 0, then the ILP vectors fold onto it.
  for (let vI = size * ILP; vI < vecSize; vI++) for (let l = 0; l < V; l++) acc[l] += p[start + vI * V + l];
  for (let k = 1; k < ILP; k++) for (let l = 0; l < V; l++) acc[l] += acc[k * V + l];
  let total = 0;
  for (let j = vecSize * V; j < len; j++) total = f(total + p[start + j]);
  for (let l = 0; l < V; l++) total = f(total + acc[l]);
  return total;
}

/**
 * out = weight · (x · rsqrt(mean(x²) + eps)), per row of `x [rows, cols]`, float32 op by op as transformers'
 * LlamaRMSNorm on PyTorch CPU: squares rounded, summed by torchInnerSumF32, divided by cols; `+ eps` with eps
 * as a float32 scalar; rsqrt as 1 / sqrt (ATen's vectorised rsqrt); then two rounded products.
 * `out` may be `x`. `scratch` holds at least `cols` floats.
 */
export function rmsNormTorchF32(out: Float32Array, x: Float32Array, rows: number, cols: number, weight: Float32Array, eps: number, scratch: Float32Array): void {
  const acc = new Float32Array(LEVELS * ILP * TORCH_F32_LANES);
  const epsF = f(eps);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let j = 0; j < cols; j++) scratch[j] = x[base + j] * x[base + j];
    const variance = f(torchInnerSumF32(scratch, 0, cols, acc) / cols);
    const rs = f(1 / f(Math.sqrt(f(variance + epsF))));
    for (let j = 0; j < cols; j++) out[base + j] = weight[j] * f(x[base + j] * rs);
  }
}
