// Public surface of @w8a16/ascend-runtime: the Backend interface, the host (CPU) backend, and the Ref kernels.
// Importing this module never loads native code; createHostBackend does, lazily, when asked to.

export type {
  ActDType,
  AttentionBatch,
  Backend,
  BackendInfo,
  EmbeddingDesc,
  EmbeddingTable,
  FloatHostData,
  FloatLinearDesc,
  FloatWeightDType,
  KvCacheDType,
  KvCacheDesc,
  KvCacheLayer,
  KvQuantParams,
  LinearWeight,
  Logger,
  NormWeight,
  Rng,
  RopeTable,
  SamplingParams,
  Tensor,
  W8A16LinearDesc,
} from './backend';
export { BackendError, type BackendErrorCode } from './errors';
export { computeInvFreq, type Llama3RopeScaling, type RopeConfig } from './rope';
export { argmaxRef, createRng, sampleRef } from './sampling';
export {
  addRef,
  attentionContiguousRef,
  embeddingRef,
  floatLinearRef,
  kvDequantRef,
  kvQuantizeRef,
  kvWriteRef,
  pagedAttentionRef,
  rmsNormRef,
  ropeRef,
  siluMulRef,
  w8a16LinearRef,
  type FloatWeightRef,
  type KvStorageRef,
} from './ref';
export { createHostBackend, type HostBackendOptions, type HostKernels, type NativeIsa } from './host/host-backend';
export { loadHostAddon, hostAddonCandidates, type HostAddon } from './host/native';
// The Ascend NPU backend (koffi bindings to AscendCL / aclnn / HCCL), loaded only when created.
export * from './ascend/index';
