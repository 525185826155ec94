// Programmatic entry of the app: conversion, the built-in model generator, and model loading.
// The CLI (`llama3-70b`) is src/cli.ts; everything here is also usable from scripts and benchmarks.

export { convertCheckpoint, type ConvertOptions, type ConvertSummary, type ConvertProgress } from './convert/convert';
export {
  generateLlamaCheckpoint,
  ensureGeneratedModel,
  ensureBuiltinModel,
  GENERATOR_SPECS,
  BUILTIN_SEED,
  resolveCacheDir,
  type LlamaCheckpointSpec,
  type GenerateSummary,
  type EnsuredModel,
} from './builtin';
export { loadLlamaWeights } from './model/load';
export { LlamaModel } from './model/llama';
export { generate } from './generate/generate';
export { LlamaTokenizer } from './tokenizer/tokenizer';
