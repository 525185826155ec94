// @w8a16/quant-core: msModelSlim-exact per-output-channel int8 (W8A16) quantization, fp16/bf16
// emulation and the shared dtype vocabulary. Depends on nothing; every other package may use it.

export const VERSION = '0.1.0';

export {
  DTYPE_TRAITS,
  RNE_MAGIC,
  bf16ToF32,
  computeDTypeOf,
  decodeFloats,
  decodeFloatsRef,
  encodeFloats,
  encodeFloatsRef,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  isDType,
  isFloatDType,
  roundBf16Fast,
  roundF16Fast,
  roundTo,
  type ComputeDType,
  type DType,
  type DTypeTraits,
  type FloatDType,
  type QuantScheme,
} from './dtype';
export { QuantError, type QuantErrorDetails } from './errors';
export {
  FUSED_SUM_REL_TOL,
  FUSED_SUM_REL_TOL_PER_ELEMENT,
  fusedQuantBackend,
  fusedSqnrDbTolerance,
  quantizeRowsFromBytes,
  quantizeRowsFromBytesRef,
} from './fused';
export {
  ASYM_LEVELS,
  ASYM_Q_MAX,
  ASYM_Q_MIN,
  QUANT_EPS,
  SYM_Q_MAX,
  dequantizeRows,
  fakeQuantizeRows,
  fakeQuantizeRowsRef,
  quantizePerChannel,
  quantizeRows,
  quantizeRowsRef,
  roundHalfEven,
  roundHalfEvenRef,
  type QuantOptions,
  type QuantizedRows,
} from './quantize';
export {
  emptyQuantErrorStats,
  maxAbsError,
  meanSqnrDb,
  mergeQuantErrorStats,
  quantErrorStats,
  sqnrDb,
  sqnrPerRow,
  type QuantErrorStats,
} from './stats';
