// @w8a16/format: safetensors read/write (streaming, sharded, byte-compatible with the Rust crate),
// msModelSlim's quant_model_description.json, Python-identical JSON text and HF LLaMA config handling.

export { FormatError, type FormatErrorDetails, type FormatLogger } from './errors';
export { PythonFloat, pyFloat, pythonFloatRepr, pythonJsonString, pythonJsonDumps, parseJson, JsonSyntaxError, type ParseJsonOptions } from './json';
export { SAFETENSORS_LIMITS, MAX_IO_CHUNK_BYTES, SafetensorsFile, tensorByteLength, type TensorInfo } from './safetensors-read';
export { Checkpoint, READ_FLOAT32_MAX_ELEMENTS, SINGLE_FILE_NAME, INDEX_FILE_NAME, type CheckpointOptions } from './checkpoint';
export {
  SAFETENSORS_DTYPE_ORDER,
  planSafetensors,
  SafetensorsWriter,
  type PlannedTensor,
  type PlannedFile,
  type OutputPlan,
  type PlanOptions,
  type WriterOptions,
} from './safetensors-write';
export { DESCRIPTION_FILE_NAME, LEGACY_DESCRIPTION_FILE_NAME, serializeDescription, readDescription } from './description';
export {
  CONFIG_FILE_NAME,
  LLAMA_CONFIG_DEFAULTS,
  AUXILIARY_NAME_PARTS,
  normalizeLlamaConfig,
  readLlamaConfig,
  copyAuxiliaryFiles,
  type LlamaConfig,
  type LlamaRopeScaling,
} from './config';
