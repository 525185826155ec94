// Device selection for run, eval and calibration: the Ascend NPU backend when asked for (or, with `auto`,
// when its libraries are found), the host backend otherwise. Nothing native is loaded before this is called.

import { AscendError, createAscendBackend, createHostBackend, type Backend, type HostKernels } from '@w8a16/ascend-runtime';
import { CliError } from './cli/errors';

export type DeviceType = 'cpu' | 'npu' | 'auto';

export interface DeviceOptions {
  readonly deviceType: DeviceType;
  /** Host backend: threads per operation. */
  readonly threads?: number;
  /** Host backend: native kernels, TypeScript kernels, or native when built. */
  readonly kernels?: HostKernels;
  /** Ascend backend: the card to use. */
  readonly deviceId?: number;
  readonly log: (line: string) => void;
}

export function selectBackend(opts: DeviceOptions): Backend {
  const logger = { warn: opts.log, info: opts.log };
  if (opts.deviceType === 'npu') return createAscendBackend({ deviceId: opts.deviceId, logger });
  if (opts.deviceType === 'auto') {
    try {
      return createAscendBackend({ deviceId: opts.deviceId, logger });
    } catch (err) {
      if (!(err instanceof AscendError) || err.code !== 'E_ASCEND_LIBRARY_NOT_FOUND') throw err;
      opts.log('device auto: no Ascend libraries found (see --device_type npu for the paths searched); using the host CPU');
    }
  }
  if (opts.deviceType !== 'cpu' && opts.deviceType !== 'auto') {
    throw new CliError('E_USAGE', `--device_type expects cpu, npu or auto, got '${String(opts.deviceType)}'`);
  }
  return createHostBackend({ threads: opts.threads, kernels: opts.kernels, logger });
}
