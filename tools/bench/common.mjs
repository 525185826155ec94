// Helpers the benchmark scripts share: the machine line they print, a seeded generator, and how busy the OTHER
// processes are (so a run can wait for a quiet machine and report what disturbed it). Not a benchmark itself.

import { readFileSync } from 'node:fs';
import os from 'node:os';

/** Clock ticks per second of /proc/stat (USER_HZ; 100 on every Linux this runs on). */
const USER_HZ = 100;

/** CPU model × count, RAM, OS and Node: the line every benchmark prints and records. */
export function machine() {
  const cpus = os.cpus();
  return `${cpus[0]?.model ?? '?'} x${cpus.length}, ${(os.totalmem() / 1024 ** 3).toFixed(0)} GiB RAM, ${os.type()} ${os.release()}, Node ${process.version}`;
}

/** A seeded uniform [0, 1) generator (32-bit LCG): benchmark inputs that are the same on every run. */
export function seeded(seed) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

/** Busy and stolen CPU seconds of the whole machine so far (/proc/stat), or undefined off Linux. */
export function machineCpu() {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, , , irq, softirq, steal] = f;
    return { busy: (user + nice + system + irq + softirq) / USER_HZ, steal: (steal ?? 0) / USER_HZ };
  } catch {
    return undefined;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Cores busy over the next `ms` while this process sleeps (so: other processes), and cores stolen by the host. */
async function sampleOthers(ms = 1000) {
  const a = machineCpu();
  const t0 = performance.now();
  await sleep(ms);
  const b = machineCpu();
  const s = (performance.now() - t0) / 1000;
  return a && b ? { cores: (b.busy - a.busy) / s, steal: (b.steal - a.steal) / s } : undefined;
}

/** Waits (up to maxSeconds) until other processes use fewer than `quietCores`; returns seconds waited and the last sample. */
export async function waitQuiet(maxSeconds, quietCores) {
  if (maxSeconds <= 0) return { waited: 0, sample: undefined };
  const t0 = performance.now();
  let sample;
  for (;;) {
    sample = await sampleOthers(1000);
    const waited = (performance.now() - t0) / 1000;
    if (!sample || sample.cores < quietCores || waited >= maxSeconds) return { waited, sample };
    await sleep(2000);
  }
}
