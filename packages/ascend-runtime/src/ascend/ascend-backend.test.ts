// The shared Backend suite against the Ascend backend bound to the C stand-in (f32 activations, exact Refs), and
// against the host backend's js kernels, so the suite's own expectations are checked on the reference backend too.
import { createHostBackend } from '../host/host-backend';
import { buildStandin } from '../../test/standin/build';
import { describeBackendSuite } from './backend-suite';
import { createAscendBackend } from './backend';

const libDir = buildStandin();

describeBackendSuite('ascend (stand-in, f32 activations)', () => createAscendBackend({ libDir, actDType: 'f32' }));
describeBackendSuite('host (js kernels)', () => createHostBackend({ kernels: 'js' }));
