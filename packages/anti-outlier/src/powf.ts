// float32 x^y exactly as PyTorch's CPU kernel computes `tensor.pow(scalar)` for float tensors: SLEEF's
// `xpowf` (1-ulp, not correctly rounded) with FMA, as in SLEEF's AVX2/AVX-512 builds. m3's scales are
// a^r, and msModelSlim's folded γ/s is only reproducible to the bit with this rounding.
// Only the finite, non-negative base path is emulated (m3's a = mean |X|); not a general libm.

const f = Math.fround;

// SLEEF constants (misc.h / sleefsimdsp.c), as float32 (literals shortened to the same float32 values).
const L2U = f(0.693145751953125);
const L2L = f(1.428606765330187045e-6);
const R_LN2 = f(Math.LOG2E); // SLEEF's R_LN2f literal, 1/ln 2
const FOUR_THIRDS = f(1 / 0.75);
const LN2_HI = f(0.69314718246459960938);
const LN2_LO = f(-1.904654323148236017e-9);
const FLT_MIN = 2 ** -126;

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/** The float32 neighbour of float32 `r` towards `toward`. */
function nextF32(r: number, toward: number): number {
  F32[0] = r;
  if (r === 0) {
    U32[0] = 1;
    return toward > 0 ? F32[0] : -F32[0];
  }
  if (toward > r === r > 0) U32[0]++;
  else U32[0]--;
  return F32[0];
}

/**
 * fmaf(a, b, c): a·b + c with one float32 rounding. a·b of two float32s is exact in float64; the
 * float64 sum s = a·b + c may round, so its error e is recovered (TwoSum) and decides the one case
 * where rounding s to float32 differs from rounding the exact sum: s exactly halfway between two floats.
 */
export function fmaF32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const bp = s - c;
  const e = p - bp + (c - (s - bp));
  const r = f(s);
  if (e === 0 || r === s || !Number.isFinite(s)) return r;
  const other = nextF32(r, s);
  if (s - Math.min(r, other) !== Math.max(r, other) - s) return r; // not a tie: s's rounding is right
  return e > 0 ? Math.max(r, other) : Math.min(r, other);
}

// Double-float helpers of SLEEF's df.h (ENABLE_FMA_SP variants). Each returns [hi, lo].
type DF = [number, number];
const fmapn = (x: number, y: number, z: number): number => fmaF32(x, y, -z); // x·y − z
const fmanp = (x: number, y: number, z: number): number => fmaF32(-x, y, z); // −x·y + z

function dfnormalize(t: DF): DF {
  const x = f(t[0] + t[1]);
  return [x, f(f(t[0] - x) + t[1])];
}
function dfscale(d: DF, s: number): DF {
  return [f(d[0] * s), f(d[1] * s)];
}
function dfadd2FF(x: number, y: number): DF {
  const rx = f(x + y);
  const v = f(rx - x);
  return [rx, f(f(x - f(rx - v)) + f(y - v))];
}
function dfadd2DF_F(x: DF, y: number): DF {
  const rx = f(x[0] + y);
  const v = f(rx - x[0]);
  const ry = f(f(x[0] - f(rx - v)) + f(y - v));
  return [rx, f(ry + x[1])];
}
function dfadd2DF_DF(x: DF, y: DF): DF {
  const rx = f(x[0] + y[0]);
  const v = f(rx - x[0]);
  const ry = f(f(x[0] - f(rx - v)) + f(y[0] - v));
  return [rx, f(ry + f(x[1] + y[1]))];
}
/** Assumes |x| >= |y|. */
function dfaddDF_DF(x: DF, y: DF): DF {
  const rx = f(x[0] + y[0]);
  return [rx, f(f(f(f(x[0] - rx) + y[0]) + x[1]) + y[1])];
}
function dfaddF_DF(x: number, y: DF): DF {
  const rx = f(x + y[0]);
  return [rx, f(f(f(x - rx) + y[0]) + y[1])];
}
function dfdiv(n: DF, d: DF): DF {
  const t = f(1 / d[0]);
  const qx = f(n[0] * t);
  const u = fmapn(t, n[0], qx);
  let qy = fmanp(d[1], t, fmanp(d[0], t, 1));
  qy = fmaF32(qx, qy, fmaF32(n[1], t, u));
  return [qx, qy];
}
function dfsqu(x: DF): DF {
  const rx = f(x[0] * x[0]);
  return [rx, fmaF32(f(x[0] + x[0]), x[1], fmapn(x[0], x[0], rx))];
}
function dfmulDF_DF(x: DF, y: DF): DF {
  const rx = f(x[0] * y[0]);
  return [rx, fmaF32(x[0], y[1], fmaF32(x[1], y[0], fmapn(x[0], y[0], rx)))];
}
function dfmulDF_F(x: DF, y: number): DF {
  const rx = f(x[0] * y);
  return [rx, fmaF32(x[1], y, fmapn(x[0], y, rx))];
}

/** SLEEF logkf: log(d) as a double-float, d finite and > 0. */
function logkf(d: number): DF {
  const tiny = d < FLT_MIN;
  if (tiny) d = f(d * 2 ** 64);
  F32[0] = f(d * FOUR_THIRDS);
  let e = ((U32[0] >>> 23) & 0xff) - 0x7f; // vilogb2k
  const m = d * 2 ** -e; // vldexp3: an exponent shift, exact
  if (tiny) e -= 64;
  const x = dfdiv(dfadd2FF(-1, m), dfadd2FF(1, m));
  const x2 = dfsqu(x);
  let t = f(0.2403203547000885);
  t = fmaF32(t, x2[0], f(0.285112679004669189453125));
  t = fmaF32(t, x2[0], f(0.4000079929828644));
  const c: DF = [f(0.66666662693023681640625), f(3.69183861259614332084311e-9)];
  let s = dfmulDF_F([LN2_HI, LN2_LO], e);
  s = dfaddDF_DF(s, dfscale(x, 2));
  s = dfaddDF_DF(s, dfmulDF_DF(dfmulDF_DF(x2, x), dfadd2DF_DF(dfmulDF_F(x2, t), c)));
  return s;
}

/** SLEEF expkf: exp(d) rounded to float32. */
function expkf(d: DF): number {
  const u0 = f(f(d[0] + d[1]) * R_LN2);
  const q = u0 + 6755399441055744 - 6755399441055744; // vrint: round half to even
  let s = dfadd2DF_F(d, f(q * -L2U));
  s = dfadd2DF_F(s, f(q * -L2L));
  s = dfnormalize(s);
  let u = f(0.00136324646882712841033936);
  u = fmaF32(u, s[0], f(0.00836596917361021041870117));
  u = fmaF32(u, s[0], f(0.0416710823774337768554688));
  u = fmaF32(u, s[0], f(0.166665524244308471679688));
  u = fmaF32(u, s[0], f(0.499999850988388061523438));
  let t = dfaddDF_DF(s, dfmulDF_F(dfsqu(s), u));
  t = dfaddF_DF(1, t);
  u = f(t[0] + t[1]);
  u = f(u * 2 ** q); // vldexp: exact while the result stays a normal float
  return d[0] < -104 ? 0 : u;
}

/**
 * PyTorch CPU `base.pow(exponent)` for a float32 base >= 0 and a float32 exponent, as used by m3:
 * exponent 0 → 1 and 1 → base (torch copies), 0.5 → correctly rounded sqrt (torch dispatches to sqrt),
 * 2 → base·base; otherwise SLEEF's xpowf (u10), which differs from the correctly rounded result in
 * a fraction of a percent of inputs, by one ulp.
 */
export function torchPowF32(base: number, exponent: number): number {
  if (exponent === 0) return 1;
  if (exponent === 1) return base;
  if (exponent === 0.5) return f(Math.sqrt(base));
  if (exponent === 2) return f(base * base);
  if (base === 1) return 1;
  if (base === 0) return exponent > 0 ? 0 : Infinity;
  if (base === Infinity) return exponent > 0 ? Infinity : 0;
  const r = expkf(dfmulDF_F(logkf(base), exponent));
  return Number.isNaN(r) ? Infinity : r;
}
