// The load generator's metronome (a worker thread): sleeps until each intended send time and wakes the main thread, which sends what is due.
// libuv timers have millisecond granularity, which would make every request up to ~1.1 ms late; a futex wait here is late by ~0.1 ms.
import { parentPort, workerData } from 'node:worker_threads';

export interface ClockSchedule {
  /** First intended send time, on the process.hrtime clock in ms (shared by every thread of the process). */
  readonly t0: number;
  /** Milliseconds between intended send times. */
  readonly interval: number;
  /** How many sends the schedule has. */
  readonly count: number;
}

export const hrMs = (): number => Number(process.hrtime.bigint()) / 1e6;

if (parentPort && workerData) {
  const { t0, interval, count } = workerData as ClockSchedule;
  const cell = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < count; i++) {
    const wait = t0 + i * interval - hrMs();
    // Atomics.wait blocks only this thread, costs no CPU while asleep, and takes a fractional-ms timeout.
    if (wait > 0) Atomics.wait(cell, 0, 0, wait);
    parentPort.postMessage(i);
  }
  parentPort.close();
}
