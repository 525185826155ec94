// Every native function the Ascend backend calls, declared in this one file, and the loader that finds the CANN libraries.
// Nothing loads on import: koffi and the libraries are opened by loadAscendLibraries(), on the first backend created.
//
// Libraries (CANN toolkit, `<toolkit>/lib64`): libascendcl.so (runtime: init, device, stream, memory, error text),
// libnnopbase.so (aclTensor / aclIntArray / aclScalar / aclTensorList descriptors), libopapi.so (the aclnn operators),
// libhccl.so (collective communication, opened only when a communicator is made).
// Operators that exist only in ATB's C++ API (atb::infer::PagedAttentionParam, ReshapeAndCacheParam, the fused
// SelfAttention / RmsNormQuant graphs MindIE builds) are NOT bound: they are C++ classes (atb::Operation with
// Setup/Execute over a VariantPack), so reaching them takes a small C shim compiled against ATB (libatb.so under
// ATB_HOME_PATH) that exports extern "C" create/setup/execute/destroy functions; koffi would then bind the shim like
// any of the C functions below. The aclnn operators used here cover the same math without one.
//
// Status conventions: every AscendCL / aclnn / HCCL function returns 0 on success. Pointers and opaque handles
// (device memory, aclTensor*, aclOpExecutor*, aclrtStream, HcclComm) are koffi `void *`, i.e. BigInt addresses.

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type * as Koffi from 'koffi';
import { AscendError } from './errors';

/** A device pointer or opaque native handle, as koffi represents `void *`. */
export type Ptr = bigint;

// --- constants (values from the CANN headers cited beside each) ---------------------------------------------------

/** aclDataType (acl/acl_base.h; the same enum is printed in hicann ops docs and in CANN 8.1 headers). */
export const ACL_DTYPE = { f32: 0, f16: 1, i8: 2, i32: 3, u8: 4, i64: 9, bool: 12, bf16: 27 } as const;
/** aclFormat ACL_FORMAT_ND (acl/acl_base.h). Every tensor here is ND; FRACTAL_NZ (29) is for Atlas 300I/310P. */
export const ACL_FORMAT_ND = 2;
/** aclrtMemcpyKind (AscendCL API reference, "aclrtMemcpy", hiascend.com CANN 8.0 appdevgapi aclcppdevg_03_0105). */
export const ACL_MEMCPY = { hostToHost: 0, hostToDevice: 1, deviceToHost: 2, deviceToDevice: 3 } as const;
/** aclrtMemMallocPolicy ACL_MEM_MALLOC_HUGE_FIRST (AscendCL API reference, "aclrtMalloc"). */
export const ACL_MEM_MALLOC_HUGE_FIRST = 0;
/** aclError codes the backend reacts to (acl_base.h / rt_error_codes.h). */
export const ACL_STATUS = { repeatInitialize: 100002, badAlloc: 200000, memoryAllocation: 207001 } as const;
/** HcclDataType and HcclReduceOp (hccl/hccl_types.h; HCCL_DATA_TYPE_FP16 = 3, FP32 = 4, BFP16 = 11; HCCL_REDUCE_SUM = 0). */
export const HCCL_DTYPE = { f16: 3, f32: 4, bf16: 11 } as const;
export const HCCL_REDUCE_SUM = 0;
/** sizeof(HcclRootInfo): `char internal[HCCL_ROOT_INFO_BYTES]`, HCCL_ROOT_INFO_BYTES = 4108 (hccl/hccl_types.h). */
export const HCCL_ROOT_INFO_BYTES = 4108;

// --- signatures -------------------------------------------------------------------------------------------------
// Out-parameters follow koffi's convention: pass a one-element array, read element 0 after the call.

/** libascendcl.so */
export interface AclRuntimeApi {
  aclInit(configPath: string | null): number;
  aclFinalize(): number;
  aclrtSetDevice(deviceId: number): number;
  aclrtResetDevice(deviceId: number): number;
  aclrtCreateStream(stream: [Ptr | null]): number;
  aclrtDestroyStream(stream: Ptr): number;
  aclrtSynchronizeStream(stream: Ptr): number;
  aclrtMalloc(devPtr: [Ptr | null], size: number, policy: number): number;
  aclrtFree(devPtr: Ptr): number;
  aclrtMemsetAsync(devPtr: Ptr, maxCount: number, value: number, count: number, stream: Ptr): number;
  aclrtMemcpy(dst: Ptr | ArrayBufferView, destMax: number, src: Ptr | ArrayBufferView, count: number, kind: number): number;
  aclGetRecentErrMsg(): string | null;
}

const ACL_RUNTIME_PROTOS: Record<keyof AclRuntimeApi, string> = {
  // aclError aclInit(const char *configPath), aclrtSetDevice(int32_t deviceId), aclrtCreateStream(aclrtStream *stream):
  // CANN runtime samples (gitcode.com cann/runtime example/runtime_init_utils.h; Ascend/msserviceprofiler
  // 3rdparty/ascend/src/BuildAcl.cpp); aclrtDestroyStream(aclrtStream), aclrtResetDevice(int32_t), aclFinalize()
  // as called in Ascend/mspti samples/common/util_acl.h; aclrtStream is an opaque pointer.
  aclInit: 'int aclInit(const char *configPath)',
  aclFinalize: 'int aclFinalize()',
  aclrtSetDevice: 'int aclrtSetDevice(int32_t deviceId)',
  aclrtResetDevice: 'int aclrtResetDevice(int32_t deviceId)',
  aclrtCreateStream: 'int aclrtCreateStream(_Out_ void **stream)',
  aclrtDestroyStream: 'int aclrtDestroyStream(void *stream)',
  aclrtSynchronizeStream: 'int aclrtSynchronizeStream(void *stream)',
  // "aclrtMalloc": aclError aclrtMalloc(void **devPtr, size_t size, aclrtMemMallocPolicy policy)
  // (hiascend.com canncommercial 601 inferapplicationdev aclcppdevg_03_0072; CANN 8.1 aclcppdevg_03_0095).
  aclrtMalloc: 'int aclrtMalloc(_Out_ void **devPtr, size_t size, int policy)',
  aclrtFree: 'int aclrtFree(void *devPtr)',
  // aclError aclrtMemsetAsync(void *devPtr, size_t maxCount, int32_t value, size_t count, aclrtStream stream),
  // queued on the stream (hiascend.com CANN 8.0 RC3 appdevgapi aclcppdevg_03_0104); zero-fills new KV caches.
  aclrtMemsetAsync: 'int aclrtMemsetAsync(void *devPtr, size_t maxCount, int32_t value, size_t count, void *stream)',
  // "aclrtMemcpy": aclError aclrtMemcpy(void *dst, size_t destMax, const void *src, size_t count,
  // aclrtMemcpyKind kind); synchronous for the host, "no implicit device or stream synchronization" (CANN 8.0 RC3
  // aclcppdevg_03_0103), so the backend synchronizes its stream before every copy.
  aclrtMemcpy: 'int aclrtMemcpy(void *dst, size_t destMax, const void *src, size_t count, int kind)',
  // "aclGetRecentErrMsg": const char *aclGetRecentErrMsg(); returns and clears this thread's error text, NULL if
  // none (hiascend.com CANN 8.0 RC3 aclcppdevg_03_0027).
  aclGetRecentErrMsg: 'const char *aclGetRecentErrMsg()',
};

/** libnnopbase.so: aclnn descriptors. */
export interface NnopBaseApi {
  aclCreateTensor(
    viewDims: number[],
    viewDimsNum: number,
    dataType: number,
    stride: number[],
    offset: number,
    format: number,
    storageDims: number[],
    storageDimsNum: number,
    tensorData: Ptr,
  ): Ptr | null;
  aclDestroyTensor(tensor: Ptr): number;
  aclCreateIntArray(value: number[], size: number): Ptr | null;
  aclDestroyIntArray(array: Ptr): number;
  aclCreateScalar(value: ArrayBufferView, dataType: number): Ptr | null;
  aclDestroyScalar(scalar: Ptr): number;
  aclCreateTensorList(value: Ptr[], size: number): Ptr | null;
  aclDestroyTensorList(list: Ptr): number;
}

const NNOPBASE_PROTOS: Record<keyof NnopBaseApi, string> = {
  // aclnn/acl_meta.h (CANN op-api common external header, "OP_API_OP_API_COMMON_INC_EXTERNAL_ACL_META_H"):
  // aclTensor *aclCreateTensor(const int64_t *viewDims, uint64_t viewDimsNum, aclDataType dataType,
  //   const int64_t *stride, int64_t offset, aclFormat format, const int64_t *storageDims, uint64_t storageDimsNum,
  //   void *tensorData); `offset` is in elements from tensorData. The library split (descriptors in
  // libnnopbase.so, operators in libopapi.so) as in mindspore-lab/mindnlp src/mindtorch_v2/_backends/npu/aclnn.py.
  aclCreateTensor:
    'void *aclCreateTensor(const int64_t *viewDims, uint64_t viewDimsNum, int dataType, const int64_t *stride, int64_t offset, int format, const int64_t *storageDims, uint64_t storageDimsNum, void *tensorData)',
  aclDestroyTensor: 'int aclDestroyTensor(void *tensor)',
  aclCreateIntArray: 'void *aclCreateIntArray(const int64_t *value, uint64_t size)',
  aclDestroyIntArray: 'int aclDestroyIntArray(void *array)',
  aclCreateScalar: 'void *aclCreateScalar(void *value, int dataType)',
  aclDestroyScalar: 'int aclDestroyScalar(void *scalar)',
  // aclTensorList *aclCreateTensorList(const aclTensor *const *value, uint64_t size) (acl_meta.h);
  // aclDestroyTensorList also destroys the tensors in it ("对于aclTensorList内的aclTensor不需要重复释放",
  // hiascend.com CANN 8.0 aolapi operatorlist_00028).
  aclCreateTensorList: 'void *aclCreateTensorList(void **value, uint64_t size)',
  aclDestroyTensorList: 'int aclDestroyTensorList(void *list)',
};

/**
 * libopapi.so: the aclnn operators, each a two-phase pair (CANN "两段式接口"): `XGetWorkspaceSize(..., uint64_t
 * *workspaceSize, aclOpExecutor **executor)` validates and plans, then `X(void *workspace, uint64_t workspaceSize,
 * aclOpExecutor *executor, aclrtStream stream)` queues the kernel on the stream and consumes the executor.
 */
export interface OpApi {
  aclnnWeightQuantBatchMatmulV2GetWorkspaceSize(
    x: Ptr, weight: Ptr, antiquantScale: Ptr, antiquantOffset: Ptr | null, quantScale: null, quantOffset: null,
    bias: Ptr | null, antiquantGroupSize: number, y: Ptr, workspaceSize: [number], executor: [Ptr | null],
  ): number;
  aclnnWeightQuantBatchMatmulV2: LaunchFn;
  aclnnMatmulGetWorkspaceSize(self: Ptr, mat2: Ptr, out: Ptr, cubeMathType: number, workspaceSize: [number], executor: [Ptr | null]): number;
  aclnnMatmul: LaunchFn;
  aclnnRmsNormGetWorkspaceSize(x: Ptr, gamma: Ptr, epsilon: number, yOut: Ptr, rstdOut: Ptr, workspaceSize: [number], executor: [Ptr | null]): number;
  aclnnRmsNorm: LaunchFn;
  aclnnApplyRotaryPosEmbGetWorkspaceSize(queryRef: Ptr, keyRef: Ptr, cos: Ptr, sin: Ptr, layout: number, workspaceSize: [number], executor: [Ptr | null]): number;
  aclnnApplyRotaryPosEmb: LaunchFn;
  aclnnFusedInferAttentionScoreV2GetWorkspaceSize(
    query: Ptr, key: Ptr, value: Ptr, pseShift: null, attenMask: Ptr | null, actualSeqLengths: Ptr | null,
    actualSeqLengthsKv: Ptr, deqScale1: null, quantScale1: null, deqScale2: null, quantScale2: null,
    quantOffset2: null, antiquantScale: Ptr | null, antiquantOffset: Ptr | null, blockTable: Ptr,
    queryPaddingSize: null, kvPaddingSize: null, keyAntiquantScale: null, keyAntiquantOffset: null,
    valueAntiquantScale: null, valueAntiquantOffset: null, keySharedPrefix: null, valueSharedPrefix: null,
    actualSharedPrefixLen: null, numHeads: number, scaleValue: number, preTokens: number, nextTokens: number,
    inputLayout: string, numKeyValueHeads: number, sparseMode: number, innerPrecise: number, blockSize: number,
    antiquantMode: number, softmaxLseFlag: boolean, keyAntiquantMode: number, valueAntiquantMode: number,
    attentionOut: Ptr, softmaxLse: null, workspaceSize: [number], executor: [Ptr | null],
  ): number;
  aclnnFusedInferAttentionScoreV2: LaunchFn;
  aclnnScatterPaKvCacheGetWorkspaceSize(
    key: Ptr, keyCacheRef: Ptr, slotMapping: Ptr, value: Ptr, valueCacheRef: Ptr, compressLens: null,
    compressSeqOffset: null, seqLens: null, cacheMode: string, scatterMode: string, strides: null, offsets: null,
    workspaceSize: [number], executor: [Ptr | null],
  ): number;
  aclnnScatterPaKvCache: LaunchFn;
  aclnnQuantizeGetWorkspaceSize(x: Ptr, scales: Ptr, zeroPoints: Ptr | null, dtype: number, axis: number, out: Ptr, workspaceSize: [number], executor: [Ptr | null]): number;
  aclnnQuantize: LaunchFn;
  aclnnSiluGetWorkspaceSize(self: Ptr, out: Ptr, workspaceSize: [number], executor: [Ptr | null]): number;
  aclnnSilu: LaunchFn;
  aclnnMulGetWorkspaceSize(self: Ptr, other: Ptr, out: Ptr, workspaceSize: [number], executor: [Ptr | null]): number;
  aclnnMul: LaunchFn;
  aclnnAddGetWorkspaceSize(self: Ptr, other: Ptr, alpha: Ptr, out: Ptr, workspaceSize: [number], executor: [Ptr | null]): number;
  aclnnAdd: LaunchFn;
  aclnnCastGetWorkspaceSize(self: Ptr, dtype: number, out: Ptr, workspaceSize: [number], executor: [Ptr | null]): number;
  aclnnCast: LaunchFn;
  aclnnEmbeddingGetWorkspaceSize(weight: Ptr, indices: Ptr, out: Ptr, workspaceSize: [number], executor: [Ptr | null]): number;
  aclnnEmbedding: LaunchFn;
  aclnnIndexSelectGetWorkspaceSize(self: Ptr, dim: number, index: Ptr, out: Ptr, workspaceSize: [number], executor: [Ptr | null]): number;
  aclnnIndexSelect: LaunchFn;
  aclnnArgMaxGetWorkspaceSize(self: Ptr, dim: number, keepdim: boolean, out: Ptr, workspaceSize: [number], executor: [Ptr | null]): number;
  aclnnArgMax: LaunchFn;
  aclnnInplaceCopyGetWorkspaceSize(selfRef: Ptr, src: Ptr, workspaceSize: [number], executor: [Ptr | null]): number;
  aclnnInplaceCopy: LaunchFn;
}

/** The second phase every aclnn operator shares. */
export type LaunchFn = (workspace: Ptr | null, workspaceSize: number, executor: Ptr, stream: Ptr) => number;

const PHASE1 = 'uint64_t *workspaceSize, _Out_ void **executor';
const launch = (name: string): string => `int ${name}(void *workspace, uint64_t workspaceSize, void *executor, void *stream)`;

const OPAPI_PROTOS: Record<keyof OpApi, string> = {
  // aclnnWeightQuantBatchMatmulV2: hicann/ops-nn matmul/weight_quant_batch_matmul_v2/docs/aclnnWeightQuantBatchMatmulV2.md
  // and hiascend.com CANN 8.2.RC1 aolapi "aclnnWeightQuantBatchMatmulV2". ANTIQUANT(weight) = (weight +
  // antiquantOffset) * antiquantScale; weight is (k, n) and may be the transposed view of an (n, k) buffer, which is
  // how MindIE passes transposeB (Ascend/MindIE-LLM examples/atb_models/atb_framework/operations/aclnn/ops/
  // quant_batch_matmul_operation.cpp, read at verylucky01/MindIE-LLM); the backend passes antiquantOffset =
  // -weight_offset as MindIE's loader does (spec §1.3).
  aclnnWeightQuantBatchMatmulV2GetWorkspaceSize: `int aclnnWeightQuantBatchMatmulV2GetWorkspaceSize(void *x, void *weight, void *antiquantScale, void *antiquantOffsetOptional, void *quantScaleOptional, void *quantOffsetOptional, void *biasOptional, int antiquantGroupSize, void *y, _Out_ ${PHASE1})`,
  aclnnWeightQuantBatchMatmulV2: launch('aclnnWeightQuantBatchMatmulV2'),
  // aclnnMatmul(self, mat2, out, int8_t cubeMathType): CANN 8.1.RC1 header op_api/include/aclnnop/level2/aclnn_matmul.h
  // (read at leideng/CANN-8.1.RC1). cubeMathType 0 = KEEP_DTYPE.
  aclnnMatmulGetWorkspaceSize: `int aclnnMatmulGetWorkspaceSize(void *self, void *mat2, void *out, int8_t cubeMathType, _Out_ ${PHASE1})`,
  aclnnMatmul: launch('aclnnMatmul'),
  // aclnnRmsNorm(x, gamma, double epsilon, yOut, rstdOut): CANN 8.1.RC1 aclnnop/aclnn_rms_norm.h (leideng/CANN-8.1.RC1);
  // gamma_shape = x_shape[n:], yOut like x (hiascend.com CANN 8.0 RC3 aolapi "aclnnRmsNorm"); rstdOut is given as FLOAT
  // (T, 1), x's leading dims with the normalized dim kept as 1 [INF: the doc page text read here was cut before it].
  aclnnRmsNormGetWorkspaceSize: `int aclnnRmsNormGetWorkspaceSize(void *x, void *gamma, double epsilon, void *yOut, void *rstdOut, _Out_ ${PHASE1})`,
  aclnnRmsNorm: launch('aclnnRmsNorm'),
  // aclnnApplyRotaryPosEmb(queryRef, keyRef, cos, sin, int64_t layout), in place, HF rotate_half formula
  // q*cos + cat(-q2, q1)*sin; layout 1 = BSND with cos/sin (B, S, 1, D): CANN 8.1.RC1
  // aclnnop/aclnn_apply_rotary_pos_emb.h (leideng/CANN-8.1.RC1) and hiascend.com CANN 8.0 aolapi "aclnnApplyRotaryPosEmb".
  aclnnApplyRotaryPosEmbGetWorkspaceSize: `int aclnnApplyRotaryPosEmbGetWorkspaceSize(void *queryRef, void *keyRef, void *cos, void *sin, int64_t layout, _Out_ ${PHASE1})`,
  aclnnApplyRotaryPosEmb: launch('aclnnApplyRotaryPosEmb'),
  // aclnnFusedInferAttentionScoreV2: the prompt (PromptFlashAttention) and incremental (IncreFlashAttention) paths
  // in one op, page attention via blockTable, int8 KV via antiquantScale/antiquantOffset (2, H):
  // header yueliang13/cann-ops-adv-vllm src_kernel_base/transformer/fused_infer_attention_score/ophost/
  // aclnn_fused_infer_attention_score_v2.h; constraints hicann/ops-transformer attention/fused_infer_attention_score/
  // docs/aclnnFusedInferAttentionScoreV2.md (BnBsH cache with BSH query, blockSize a multiple of 128 for Q_S > 1 on
  // A2, sparseMode 3 = rightDownCausal with a 2048x2048 mask, separate K/V antiquant params NOT with page attention
  // on A2). IncreFlashAttentionV4 / PromptFlashAttentionV3 are the same kernels behind single-purpose entry points
  // (hicann/ops-transformer attention/incre_flash_attention/docs/aclnnIncreFlashAttentionV4_en.md), so they are not
  // declared separately.
  aclnnFusedInferAttentionScoreV2GetWorkspaceSize: `int aclnnFusedInferAttentionScoreV2GetWorkspaceSize(void *query, void *key, void *value, void *pseShiftOptional, void *attenMaskOptional, void *actualSeqLengthsOptional, void *actualSeqLengthsKvOptional, void *deqScale1Optional, void *quantScale1Optional, void *deqScale2Optional, void *quantScale2Optional, void *quantOffset2Optional, void *antiquantScaleOptional, void *antiquantOffsetOptional, void *blockTableOptional, void *queryPaddingSizeOptional, void *kvPaddingSizeOptional, void *keyAntiquantScaleOptional, void *keyAntiquantOffsetOptional, void *valueAntiquantScaleOptional, void *valueAntiquantOffsetOptional, void *keySharedPrefixOptional, void *valueSharedPrefixOptional, void *actualSharedPrefixLenOptional, int64_t numHeads, double scaleValue, int64_t preTokens, int64_t nextTokens, const char *inputLayout, int64_t numKeyValueHeads, int64_t sparseMode, int64_t innerPrecise, int64_t blockSize, int64_t antiquantMode, bool softmaxLseFlag, int64_t keyAntiquantMode, int64_t valueAntiquantMode, void *attentionOut, void *softmaxLse, _Out_ ${PHASE1})`,
  aclnnFusedInferAttentionScoreV2: launch('aclnnFusedInferAttentionScoreV2'),
  // aclnnScatterPaKvCache(key, keyCacheRef, slotMapping, value, valueCacheRef, compressLens, compressSeqOffset,
  // seqLens, char *cacheMode, char *scatterMode, aclIntArray *strides, aclIntArray *offsets): scenario 2 ("Norm"):
  // key (T, N, D) into (blocks, blockSize, N, D); FLOAT16/BFLOAT16/INT8 on A2 (hicann/ops-transformer
  // attention/scatter_pa_kv_cache/docs/aclnnScatterPaKvCache.md). The aclnn counterpart of ATB's ReshapeAndCache.
  aclnnScatterPaKvCacheGetWorkspaceSize: `int aclnnScatterPaKvCacheGetWorkspaceSize(void *key, void *keyCacheRef, void *slotMapping, void *value, void *valueCacheRef, void *compressLensOptional, void *compressSeqOffsetOptional, void *seqLensOptional, const char *cacheModeOptional, const char *scatterModeOptional, void *stridesOptional, void *offsetsOptional, _Out_ ${PHASE1})`,
  aclnnScatterPaKvCache: launch('aclnnScatterPaKvCache'),
  // aclnnQuantize(x, scales, zeroPoints, aclDataType dtype, int32_t axis, out): out = round(x / scales + zeroPoints)
  // (CANN 8.1.RC1 aclnnop/aclnn_quantize.h at leideng/CANN-8.1.RC1; formula hiascend.com CANN 8.0 aolapi
  // "aclnnQuantize") — the KV-int8 write, spec §3.2 q = round(x/scale + offset).
  aclnnQuantizeGetWorkspaceSize: `int aclnnQuantizeGetWorkspaceSize(void *x, void *scales, void *zeroPoints, int dtype, int32_t axis, void *out, _Out_ ${PHASE1})`,
  aclnnQuantize: launch('aclnnQuantize'),
  // aclnnSilu(self, out): hiascend.com CANN 8.0 (canncommercial 800) aolapi "aclnnSilu". SiLU then Mul rather than aclnnSwiGlu, which
  // needs gate and up concatenated in one tensor.
  aclnnSiluGetWorkspaceSize: `int aclnnSiluGetWorkspaceSize(void *self, void *out, _Out_ ${PHASE1})`,
  aclnnSilu: launch('aclnnSilu'),
  // aclnnMul(self, other, out): as bound in mindspore-ai/mindspore_test tests/st/graph_kernel/custom/custom_ascendc/
  // infer_file/custom_callback.cc (FuncType int (*)(aclTensor *, aclTensor *, aclTensor *, uint64_t *, aclOpExecutor **)).
  aclnnMulGetWorkspaceSize: `int aclnnMulGetWorkspaceSize(void *self, void *other, void *out, _Out_ ${PHASE1})`,
  aclnnMul: launch('aclnnMul'),
  // aclnnAdd(self, other, const aclScalar *alpha, out): out = self + alpha*other, broadcasting: CANN 8.1.RC1
  // aclnnop/aclnn_add.h (leideng/CANN-8.1.RC1).
  aclnnAddGetWorkspaceSize: `int aclnnAddGetWorkspaceSize(void *self, void *other, void *alpha, void *out, _Out_ ${PHASE1})`,
  aclnnAdd: launch('aclnnAdd'),
  // aclnnCast(self, const aclDataType dtype, out): CANN 8.1.RC1 aclnnop/level2/aclnn_cast.h (leideng/CANN-8.1.RC1).
  aclnnCastGetWorkspaceSize: `int aclnnCastGetWorkspaceSize(void *self, int dtype, void *out, _Out_ ${PHASE1})`,
  aclnnCast: launch('aclnnCast'),
  // aclnnEmbedding(weight, indices INT32/INT64, out): CANN 8.1.RC1 aclnnop/level2/aclnn_embedding.h (leideng/CANN-8.1.RC1).
  aclnnEmbeddingGetWorkspaceSize: `int aclnnEmbeddingGetWorkspaceSize(void *weight, void *indices, void *out, _Out_ ${PHASE1})`,
  aclnnEmbedding: launch('aclnnEmbedding'),
  // aclnnIndexSelect(self, int64_t dim, index, out): CANN 8.1.RC1 aclnnop/level2/aclnn_index_select.h (leideng/CANN-8.1.RC1).
  aclnnIndexSelectGetWorkspaceSize: `int aclnnIndexSelectGetWorkspaceSize(void *self, int64_t dim, void *index, void *out, _Out_ ${PHASE1})`,
  aclnnIndexSelect: launch('aclnnIndexSelect'),
  // aclnnArgMax(self, int64_t dim, bool keepdim, out INT32/INT64): CANN 8.1.RC1 aclnnop/aclnn_argmax.h (leideng/CANN-8.1.RC1).
  aclnnArgMaxGetWorkspaceSize: `int aclnnArgMaxGetWorkspaceSize(void *self, int64_t dim, bool keepdim, void *out, _Out_ ${PHASE1})`,
  aclnnArgMax: launch('aclnnArgMax'),
  // aclnnInplaceCopy(selfRef, src): strided copy on the stream (CANN 8.1.RC1 aclnnop/aclnn_copy.h, leideng/CANN-8.1.RC1;
  // hicann/ops-math conversion/view_copy/docs/aclnnInplaceCopy.md). Used where an output aliases an input. Not
  // aclrtMemcpyAsync: that wants 64-byte aligned addresses, which a row view rarely has.
  aclnnInplaceCopyGetWorkspaceSize: `int aclnnInplaceCopyGetWorkspaceSize(void *selfRef, void *src, _Out_ ${PHASE1})`,
  aclnnInplaceCopy: launch('aclnnInplaceCopy'),
};

/** libhccl.so */
export interface HcclApi {
  HcclGetRootInfo(rootInfo: Uint8Array): number;
  HcclCommInitRootInfo(nRanks: number, rootInfo: Uint8Array, rank: number, comm: [Ptr | null]): number;
  HcclAllReduce(sendBuf: Ptr, recvBuf: Ptr, count: number, dataType: number, op: number, comm: Ptr, stream: Ptr): number;
  HcclCommDestroy(comm: Ptr): number;
  HcclGetErrorString(code: number): string | null;
}

const HCCL_PROTOS: Record<keyof HcclApi, string> = {
  // hccl.h (CANN HCCL, read at chenzomi12/AIFoundation 05XCCL/02CommLibrary/code/cann-hccl-master/inc/hccl/hccl.h
  // and hicann/hccl include/hccl.h): HcclResult HcclGetRootInfo(HcclRootInfo *rootInfo);
  // HcclCommInitRootInfo(uint32_t nRanks, const HcclRootInfo *rootInfo, uint32_t rank, HcclComm *comm);
  // HcclAllReduce(void *sendBuf, void *recvBuf, uint64_t count, HcclDataType, HcclReduceOp, HcclComm, aclrtStream);
  // HcclCommDestroy(HcclComm); const char *HcclGetErrorString(HcclResult).
  HcclGetRootInfo: 'int HcclGetRootInfo(void *rootInfo)',
  HcclCommInitRootInfo: 'int HcclCommInitRootInfo(uint32_t nRanks, const void *rootInfo, uint32_t rank, _Out_ void **comm)',
  HcclAllReduce: 'int HcclAllReduce(void *sendBuf, void *recvBuf, uint64_t count, int dataType, int op, void *comm, void *stream)',
  HcclCommDestroy: 'int HcclCommDestroy(void *comm)',
  HcclGetErrorString: 'const char *HcclGetErrorString(int code)',
};

// --- library discovery ------------------------------------------------------------------------------------------

export type AscendLibraryName = 'ascendcl' | 'nnopbase' | 'opapi' | 'hccl';

const LIBRARY_FILES: Record<AscendLibraryName, string> = {
  ascendcl: 'libascendcl.so',
  nnopbase: 'libnnopbase.so',
  opapi: 'libopapi.so',
  hccl: 'libhccl.so',
};

/** The default CANN toolkit prefix (`ascend-toolkit/set_env.sh` points ASCEND_TOOLKIT_HOME here). */
export const DEFAULT_TOOLKIT_PREFIX = '/usr/local/Ascend/ascend-toolkit/latest';

/** The variables that move the search, in the order they are tried. */
export const LIBRARY_ENV_VARS = ['W8A16_ASCEND_LIB_DIR', 'ASCEND_TOOLKIT_HOME', 'ASCEND_HOME_PATH', 'ATB_HOME_PATH'] as const;

export interface LibrarySearchOptions {
  /** A directory holding all four libraries; when given, it is the only place searched (tests, unusual installs). */
  libDir?: string;
  /** Environment to read the variables from (default `process.env`). */
  env?: Record<string, string | undefined>;
}

export interface SearchDir {
  dir: string;
  /** Why this directory is searched, e.g. `ASCEND_TOOLKIT_HOME=/opt/x` or `default prefix`. */
  source: string;
}

/** Directories searched for the CANN libraries, in order. */
export function librarySearchDirs(opts: LibrarySearchOptions = {}): SearchDir[] {
  if (opts.libDir) return [{ dir: path.resolve(opts.libDir), source: 'libDir option' }];
  const env = opts.env ?? process.env;
  const dirs: SearchDir[] = [];
  const add = (dir: string, source: string): void => {
    if (!dirs.some((d) => d.dir === dir)) dirs.push({ dir, source });
  };
  if (env.W8A16_ASCEND_LIB_DIR) add(path.resolve(env.W8A16_ASCEND_LIB_DIR), `W8A16_ASCEND_LIB_DIR=${env.W8A16_ASCEND_LIB_DIR}`);
  for (const v of ['ASCEND_TOOLKIT_HOME', 'ASCEND_HOME_PATH'] as const) {
    if (env[v]) add(path.join(env[v] as string, 'lib64'), `${v}=${env[v]}`);
  }
  // ATB (nnal) ships libatb.so under $ATB_HOME_PATH/lib; searched too, for installs that put the CANN runtime there.
  if (env.ATB_HOME_PATH) add(path.join(env.ATB_HOME_PATH, 'lib'), `ATB_HOME_PATH=${env.ATB_HOME_PATH}`);
  add(path.join(DEFAULT_TOOLKIT_PREFIX, 'lib64'), 'default prefix');
  const arch = process.arch === 'arm64' ? 'aarch64' : 'x86_64';
  add(path.join(DEFAULT_TOOLKIT_PREFIX, `${arch}-linux`, 'lib64'), 'default prefix');
  return dirs;
}

/** Full path of one library: the first searched directory that holds it. */
export function resolveAscendLibrary(name: AscendLibraryName, opts: LibrarySearchOptions = {}): string {
  const dirs = librarySearchDirs(opts);
  const file = LIBRARY_FILES[name];
  for (const d of dirs) {
    const p = path.join(d.dir, file);
    if (existsSync(p)) return p;
  }
  const searched = dirs.map((d) => path.join(d.dir, file));
  throw new AscendError(
    'E_ASCEND_LIBRARY_NOT_FOUND',
    `${file} (CANN ${name}) not found. Searched:\n${dirs.map((d) => `  ${path.join(d.dir, file)}  (${d.source})`).join('\n')}\n` +
      `Install the CANN toolkit and run its set_env.sh, or point one of ${LIBRARY_ENV_VARS.join(', ')} ` +
      `(or the libDir option) at the directory that holds ${file}.`,
    { searched },
  );
}

// --- loading ----------------------------------------------------------------------------------------------------

export interface AscendLibraries {
  readonly paths: Readonly<Record<'ascendcl' | 'nnopbase' | 'opapi', string>>;
  readonly acl: AclRuntimeApi;
  readonly nn: NnopBaseApi;
  readonly op: OpApi;
  /** libhccl.so, opened on first use (single-card runs never need it). */
  hccl(): HcclApi;
}

type KoffiModule = typeof Koffi;
let koffiModule: KoffiModule | undefined;

/** koffi is required here, on first use, so importing the package never loads native code. */
function koffi(): KoffiModule {
  if (!koffiModule) {
    const require = createRequire(import.meta.url);
    koffiModule = require('koffi') as KoffiModule;
  }
  return koffiModule;
}

function bind<T>(file: string, protos: Record<string, string>): T {
  let lib: Koffi.LibraryHandle;
  try {
    // global: later libraries (libopapi.so) resolve symbols of earlier ones (libnnopbase.so, libascendcl.so).
    lib = koffi().load(file, { global: true });
  } catch (e) {
    throw new AscendError('E_ASCEND_LIBRARY_LOAD', `${file}: dlopen failed: ${(e as Error).message}. ` +
      `The CANN libraries depend on each other; run the toolkit's set_env.sh so LD_LIBRARY_PATH finds them.`, { fn: 'dlopen' });
  }
  const out: Record<string, unknown> = {};
  for (const [name, proto] of Object.entries(protos)) {
    try {
      out[name] = lib.func(proto);
    } catch (e) {
      throw new AscendError('E_ASCEND_LIBRARY_LOAD', `${file}: symbol ${name} missing or not bindable (${(e as Error).message}); ` +
        `this CANN version may predate it (aclnnScatterPaKvCache and aclnnFusedInferAttentionScoreV2 need CANN 8.x).`, { fn: name });
    }
  }
  return out as T;
}

const loaded = new Map<string, AscendLibraries>();

/** Find and open the CANN libraries (once per set of paths); throws AscendError with every searched path when absent. */
export function loadAscendLibraries(opts: LibrarySearchOptions = {}): AscendLibraries {
  const paths = {
    ascendcl: resolveAscendLibrary('ascendcl', opts),
    nnopbase: resolveAscendLibrary('nnopbase', opts),
    opapi: resolveAscendLibrary('opapi', opts),
  };
  const key = `${paths.ascendcl}|${paths.nnopbase}|${paths.opapi}`;
  const cached = loaded.get(key);
  if (cached) return cached;
  const acl = bind<AclRuntimeApi>(paths.ascendcl, ACL_RUNTIME_PROTOS);
  const nn = bind<NnopBaseApi>(paths.nnopbase, NNOPBASE_PROTOS);
  const op = bind<OpApi>(paths.opapi, OPAPI_PROTOS);
  let hccl: HcclApi | undefined;
  const libs: AscendLibraries = {
    paths,
    acl,
    nn,
    op,
    hccl: () => (hccl ??= bind<HcclApi>(resolveAscendLibrary('hccl', opts), HCCL_PROTOS)),
  };
  loaded.set(key, libs);
  return libs;
}

/** The names of every bound native function, per library (tests check the stand-in exports them all). */
export const BOUND_SYMBOLS: Readonly<Record<AscendLibraryName, readonly string[]>> = {
  ascendcl: Object.keys(ACL_RUNTIME_PROTOS),
  nnopbase: Object.keys(NNOPBASE_PROTOS),
  opapi: Object.keys(OPAPI_PROTOS),
  hccl: Object.keys(HCCL_PROTOS),
};
