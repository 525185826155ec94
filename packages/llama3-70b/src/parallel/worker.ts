// Worker-thread entry of a tensor-parallel rank (tsup entry `parallel-worker`): runs runRank on the workerData the
// driver passed, reporting ready / failure to it. The logic is in runtime.ts.

import { parentPort, workerData } from 'node:worker_threads';
import { runRank, type RankInit, type RankMessage } from './runtime';

runRank(workerData as RankInit, (msg: RankMessage) => parentPort?.postMessage(msg));
