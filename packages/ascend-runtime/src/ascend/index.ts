// Public surface of the Ascend (NPU) backend: the factory, its error, and the library discovery it uses.
// Importing this module loads no native code; createAscendBackend / loadAscendLibraries do, on call.

export { createAscendBackend, type AscendBackend, type AscendBackendOptions } from './backend';
export { AscendError, type AscendErrorCode, type AscendErrorDetails } from './errors';
export {
  DEFAULT_TOOLKIT_PREFIX,
  HCCL_ROOT_INFO_BYTES,
  LIBRARY_ENV_VARS,
  librarySearchDirs,
  loadAscendLibraries,
  resolveAscendLibrary,
  type AscendLibraries,
  type AscendLibraryName,
  type LibrarySearchOptions,
  type SearchDir,
} from './bindings';
