// HARDENING.md rows 1–13 as data: every case in corpus/http1/ sent as raw bytes to one real sidecar (outbound, some inbound over mTLS), checked for its answer, for desync (a canary on the same connection) and for what the upstream saw.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadCorpus, type CorpusCase } from '../../bench/fuzz-corpus.js';
import { startRecordingUpstream, type RecordingUpstream } from '../../bench/fuzz-upstream.js';
import { accessPolicy, issueClientCert, meshCa, meshService, spiffeOf } from '../harness/mtls.js';
import { service, toYaml } from '../harness/resources.js';
import { startSidecar, stopAllSidecars, type Sidecar } from '../harness/sidecar.js';
import { freshCanary, HEADERS_TIMEOUT_BOUND_MS, runCase, type Target } from './http1-runner.js';

const cases = loadCorpus();
let upstream: RecordingUpstream;
let sidecar: Sidecar;
let target: Target;

beforeAll(async () => {
  upstream = await startRecordingUpstream();
  sidecar = await startSidecar({
    service: 'web',
    app: upstream.address,
    resources: toYaml([
      ...meshService({ name: 'web' }),
      ...service({ name: 'echo', endpoints: [{ address: upstream.address }] }),
      // Inbound row 4 cases try to reach /admin through an allow rule for /public/*.
      accessPolicy('web-public', 'web', 'allow', [{ from: ['client'], to: [{ paths: ['/public/*', '/canary-*'] }] }]),
    ]),
  });
  const cert = await issueClientCert('client');
  target = {
    outbound: sidecar.outbound,
    inbound: sidecar.inbound,
    // The sidecar's certificate names a SPIFFE id, not a host; the chain is still checked against the mesh CA.
    inboundTls: { ca: (await meshCa()).certPem, key: cert.keyPem, cert: cert.certPem, checkServerIdentity: () => undefined },
    upstream,
    inboundXfcc: `By=${spiffeOf('web')};URI=${spiffeOf('client')}`,
    outboundHost: 'echo',
  };
}, 60_000);

afterAll(async () => {
  await stopAllSidecars();
  await upstream?.close();
});

const slow = (c: CorpusCase): boolean => c.expect.closedBy !== undefined;

function define(c: CorpusCase, concurrent: boolean): void {
  const title = `${c.file}: ${c.why}`;
  const timeout = slow(c) ? HEADERS_TIMEOUT_BOUND_MS + 20_000 : 40_000;
  const fn = async (): Promise<void> => {
    const problems = await runCase(target, c);
    expect(problems, `${c.file} (row ${c.row})`).toEqual([]);
  };
  if (c.knownFailure) it.fails(`${title} [known failure: ${c.knownFailure}]`, fn, timeout);
  else if (concurrent) it.concurrent(title, fn, timeout);
  else it(title, fn, timeout);
}

// Slow clients that must get nothing forwarded run side by side: each waits out the headers timeout.
describe('slow clients (row 11), side by side', () => {
  for (const c of cases.filter((x) => slow(x) && x.expect.noUpstream)) define(c, true);
});

describe('HTTP/1.1 attack corpus', () => {
  for (const c of cases.filter((x) => !(slow(x) && x.expect.noUpstream))) define(c, false);
});

describe('the corpus as a whole', () => {
  it('covers every HTTP/1.1 row of HARDENING.md (1–13) with several cases', () => {
    expect(cases.length).toBeGreaterThanOrEqual(60);
    for (let row = 1; row <= 13; row++) {
      expect(cases.filter((c) => c.row === row).length, `row ${row}`).toBeGreaterThanOrEqual(3);
    }
  });

  it('leaves the sidecar alive and serving', async () => {
    expect(sidecar.running(), sidecar.stderr().slice(-2_000)).toBe(true);
    expect(await freshCanary(target)).toBeUndefined();
  });
});
