// The shared Backend suite (src/backend-suite.ts) against the Ascend backend bound to the C stand-in, with f32
// activations so every op compares with the f32 Refs. The stand-in computes attention in f64, as the Ref does.
import { buildStandin } from '../../test/standin/build';
import { describeBackendSuite } from '../backend-suite';
import { createAscendBackend } from './backend';

const libDir = buildStandin();

describeBackendSuite('ascend (stand-in, f32 activations)', () => createAscendBackend({ libDir, actDType: 'f32' }), { f64Attention: true });
