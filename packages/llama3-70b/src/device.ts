// Device selection for run, eval and convert's calibration: the Ascend NPU backend when asked for (or, with `auto`,
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

/**
 * The line convert prints when `--device_type npu` finds no Ascend libraries. Conversion never needed an NPU
 * (`npu` also picks msModelSlim's NPU arithmetic for the quantizer, which runs on the host either way), so only the
 * calibration forward pass moves to the host.
 */
export const CALIBRATION_HOST_FALLBACK =
  '--device_type npu: no Ascend libraries found (see `run --device_type npu` for the paths searched); the calibration forward pass runs on the host CPU';

/**
 * convert's calibration forward pass: `npu` = the Ascend backend when its libraries are found, else the host with one
 * CALIBRATION_HOST_FALLBACK line; `cpu` = the host. Any other Ascend failure (a device that does not open) is thrown.
 */
export function selectCalibrationBackend(opts: DeviceOptions & { readonly deviceType: 'cpu' | 'npu' }): Backend {
  const logger = { warn: opts.log };
  if (opts.deviceType === 'npu') {
    try {
      return createAscendBackend({ deviceId: opts.deviceId, logger });
    } catch (err) {
      if (!(err instanceof AscendError) || err.code !== 'E_ASCEND_LIBRARY_NOT_FOUND') throw err;
      opts.log(CALIBRATION_HOST_FALLBACK);
    }
  } else if (opts.deviceType !== 'cpu') {
    throw new CliError('E_USAGE', `convert --device_type expects cpu or npu, got '${String(opts.deviceType)}'`);
  }
  return createHostBackend({ threads: opts.threads, kernels: opts.kernels, logger });
}
