// Replays every input the fuzzer saved as a crasher (corpus/crashes/*.bin, raw bytes) against a sidecar: it must stay alive, and a plain request on a fresh connection must still be served.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CRASHES_DIR } from '../../bench/fuzz-corpus.js';
import { startRecordingUpstream, type RecordingUpstream } from '../../bench/fuzz-upstream.js';
import { service, toYaml } from '../harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from '../harness/sidecar.js';
import { freshCanary, replay, type Target } from './http1-runner.js';

const crashers = readdirSync(CRASHES_DIR).filter((f) => f.endsWith('.bin')).sort();
let upstream: RecordingUpstream;
let sidecar: Sidecar;
let target: Target;

beforeAll(async () => {
  upstream = await startRecordingUpstream({ keep: 100 });
  sidecar = await startSidecar({
    service: 'web',
    app: upstream.address,
    resources: toYaml([...service({ name: 'web' }), ...service({ name: 'echo', endpoints: [{ address: upstream.address }] })]),
  });
  target = { outbound: sidecar.outbound, inbound: sidecar.inbound, inboundTls: {}, upstream, inboundXfcc: '', outboundHost: 'echo' };
}, 60_000);

afterAll(async () => {
  await stopAllSidecars();
  await upstream?.close();
});

describe('fuzzer crashers', () => {
  it(`replays the ${crashers.length} saved crasher(s); the sidecar is up to begin with`, async () => {
    expect(await freshCanary(target)).toBeUndefined();
  });

  for (const file of crashers) {
    it(`survives ${file}`, async () => {
      // The fuzzer rewrote Host "echo" to "echo:<id>"; that still routes to the upstream.
      await replay(sidecar.outbound, readFileSync(path.join(CRASHES_DIR, file)));
      expect(sidecar.running(), sidecar.stderr().slice(-2_000)).toBe(true);
      expect(await freshCanary(target)).toBeUndefined();
    });
  }
});
