// @w8a16/anti-outlier: msModelSlim's m3 anti-outlier method (AWQ-style smoothing scale search, spec §2.3)
// and folding the scales into norm and linear weights. Pure functions on typed arrays; depends only on quant-core.

export { AntiOutlierError, type AntiOutlierErrorCode } from './errors';
export {
  M3_MIN_SCALE,
  M3_N_GRID,
  foldM3Scales,
  m3ScalesForRatio,
  m3ScalesInto,
  meanAbsPerChannel,
  unfoldM3Scales,
} from './scales';
export {
  M3_LOSS_REF_REL_TOL,
  M3_LOSS_REF_REL_TOL_F32,
  M3_ROW_BLOCK,
  searchM3Scales,
  searchM3ScalesRef,
  sumSquaredProducts,
  sumSquaredProductsRef,
  type M3ErrorKernel,
  type M3ErrorKernelF32,
  type M3Options,
  type M3Result,
  type SmoothGroupInput,
  type SmoothLinear,
} from './search';
