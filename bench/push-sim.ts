// N simulated sidecars in one process (forked by bench/push-scale.ts): one Discover stream each, Hello, then ACK every Snapshot.
// Talks to its parent over the fork IPC channel; every time is process.hrtime (CLOCK_MONOTONIC), comparable across processes.
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { KEEPALIVE_OPTIONS, meshService, type DiscoveryRequest, type SnapshotMessage } from '../api/protocol.js';

/** Messages the parent sends. */
export type SimCommand =
  | { cmd: 'await'; version: number; timeoutMs: number }
  | { cmd: 'cancel' }
  | { cmd: 'close' };

/** Messages the simulator sends. */
export type SimEvent =
  | { type: 'progress'; opened: number; firstSnapshots: number; errors: number }
  | { type: 'connected'; n: number; startedMs: number; allFirstMs: number; firstVersions: string[]; errors: number; errorSamples: string[]; cpuMs: number }
  | {
      type: 'received';
      version: number;
      /** Per stream: when the first snapshot with version ≥ the awaited one arrived (and was ACKed), NaN if it never did. */
      receivedMs: number[];
      /** Versions those snapshots carried ('' when none arrived). */
      versions: string[];
      /** Snapshots per stream after the first one (pushes that were not the awaited change count here too). */
      extraSnapshots: number;
      /** A Route weight check on one received snapshot: the JSON of the first stream's new snapshot, cut to its routes. */
      sampleRoutesJson: string;
      errors: number;
      errorSamples: string[];
      timedOut: boolean;
      /** This process's CPU time (user + system) from the 'await' to this report: compared with the push's wall time, was the simulator the bottleneck? */
      pushCpuMs: number;
    }
  | { type: 'cancelled'; at: number }
  | { type: 'closed'; cpuUserMs: number; cpuSystemMs: number; maxRssKb: number };

const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;
const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

interface Sim {
  readonly stream: grpc.ClientDuplexStream<DiscoveryRequest, SnapshotMessage>;
  firstAt: number;
  firstVersion: string;
  snapshots: number;
  /** Every snapshot after the first: version and arrival time. */
  later: { version: string; at: number; json: string | undefined }[];
}

function send(ev: SimEvent): void {
  process.send?.(ev);
}

function main(): void {
  const { values } = parseArgs({
    options: {
      address: { type: 'string' }, ca: { type: 'string' }, 'trust-domain': { type: 'string', default: 'mesh.local' },
      n: { type: 'string' }, 'per-channel': { type: 'string', default: '500' }, service: { type: 'string', default: 'sim' },
    },
    strict: true,
  });
  if (!values.address || !values.ca || !values.n) throw new Error('push-sim: --address, --ca and --n are required');
  const n = Number(values.n);
  const perChannel = Math.max(1, Number(values['per-channel']));
  const caPem = readFileSync(values.ca, 'utf8');
  const expected = `spiffe://${values['trust-domain']}/ns/mesh-system/sa/control-plane`;
  const creds = grpc.credentials.createSsl(Buffer.from(caPem), null, null, {
    checkServerIdentity: (_host, cert) => {
      const sans = new X509Certificate(cert.raw).subjectAltName ?? '';
      return sans.split(', ').includes(`URI:${expected}`) ? undefined : new Error(`control plane identity is not ${expected}`);
    },
  });
  const Ctor = meshService();
  const channels: grpc.Client[] = [];
  for (let i = 0; i < Math.ceil(n / perChannel); i++) {
    channels.push(new Ctor(values.address, creds, {
      ...KEEPALIVE_OPTIONS,
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      'grpc.ssl_target_name_override': 'control-plane.mesh',
      // grpc-js shares one connection between clients with equal options; a local pool gives each channel its own.
      'grpc.use_local_subchannel_pool': 1,
    }));
  }

  const sims: Sim[] = [];
  let firstSnapshots = 0;
  let errors = 0;
  const errorSamples: string[] = [];
  let connectedSent = false;
  let awaiting: { version: number; done: () => void } | undefined;
  let closing = false;
  let cpuAtAwait = NaN;
  const startedMs = nowMs();

  const reached = (s: Sim, version: number) => s.later.some((l) => Number(l.version) >= version) || Number(s.firstVersion) >= version;

  const checkConnected = () => {
    if (connectedSent || firstSnapshots < n) return;
    connectedSent = true;
    const allFirstMs = Math.max(...sims.map((s) => s.firstAt));
    send({ type: 'connected', n, startedMs, allFirstMs, firstVersions: [...new Set(sims.map((s) => s.firstVersion))], errors, errorSamples, cpuMs: cpuMs() });
  };

  for (let i = 0; i < n; i++) {
    const client = channels[Math.floor(i / perChannel)] as unknown as Record<string, () => grpc.ClientDuplexStream<DiscoveryRequest, SnapshotMessage>>;
    const stream = client.Discover();
    const sim: Sim = { stream, firstAt: NaN, firstVersion: '', snapshots: 0, later: [] };
    sims.push(sim);
    stream.on('data', (snap: SnapshotMessage) => {
      const at = nowMs();
      stream.write({ ack: { version: snap.version, nonce: snap.nonce } });
      sim.snapshots++;
      if (sim.snapshots === 1) {
        sim.firstAt = at;
        sim.firstVersion = snap.version;
        firstSnapshots++;
        checkConnected();
      } else {
        // Keep the JSON of the first stream only (the weight check); the rest need just version and time.
        sim.later.push({ version: snap.version, at, json: i === 0 ? snap.snapshotJson : undefined });
        if (awaiting && Number(snap.version) >= awaiting.version) awaiting.done();
      }
    });
    stream.on('error', (err: grpc.ServiceError) => {
      if (closing && err.code === grpc.status.CANCELLED) return;
      errors++;
      if (errorSamples.length < 5) errorSamples.push(`stream ${i}: ${err.code} ${err.details || err.message}`);
    });
    stream.write({ hello: { service: values.service, namespace: 'default', instance: `sim-${i}`, address: '127.0.0.1:1', labels: {}, version: '', certExpiryUnix: 0 } });
  }

  const progress = setInterval(() => send({ type: 'progress', opened: sims.length, firstSnapshots, errors }), 500);

  const report = (version: number, timedOut: boolean) => {
    const receivedMs: number[] = [];
    const versions: string[] = [];
    let extraSnapshots = 0;
    let sampleRoutesJson = '';
    for (const s of sims) {
      extraSnapshots += s.later.length;
      const hit = s.later.find((l) => Number(l.version) >= version);
      receivedMs.push(hit ? hit.at : NaN);
      versions.push(hit ? hit.version : '');
      if (s === sims[0] && hit?.json) {
        const parsed = JSON.parse(hit.json) as { routes?: unknown };
        sampleRoutesJson = JSON.stringify(parsed.routes ?? parsed);
      }
    }
    send({ type: 'received', version, receivedMs, versions, extraSnapshots, sampleRoutesJson, errors, errorSamples, timedOut, pushCpuMs: cpuMs() - cpuAtAwait });
  };

  process.on('message', (m: SimCommand) => {
    if (m.cmd === 'await') {
      cpuAtAwait = cpuMs();
      let remaining = sims.filter((s) => !reached(s, m.version)).length;
      if (remaining === 0) return report(m.version, false);
      const timer = setTimeout(() => {
        awaiting = undefined;
        report(m.version, true);
      }, m.timeoutMs);
      awaiting = {
        version: m.version,
        // Called once per stream on its first snapshot at/after the version (later ones for the same stream do not reach here
        // twice for the same version in practice; the count is re-derived to be safe).
        done: () => {
          remaining--;
          if (remaining > 0) return;
          remaining = sims.filter((s) => !reached(s, m.version)).length;
          if (remaining > 0) return;
          clearTimeout(timer);
          awaiting = undefined;
          report(m.version, false);
        },
      };
    } else if (m.cmd === 'cancel') {
      // Every simulated sidecar goes away at once (a node drain, a network partition healing elsewhere, …).
      closing = true;
      const at = nowMs();
      for (const s of sims) s.stream.cancel();
      send({ type: 'cancelled', at });
    } else if (m.cmd === 'close') {
      closing = true;
      clearInterval(progress);
      for (const s of sims) s.stream.cancel();
      for (const c of channels) c.close();
      const u = process.resourceUsage();
      send({ type: 'closed', cpuUserMs: u.userCPUTime / 1000, cpuSystemMs: u.systemCPUTime / 1000, maxRssKb: u.maxRSS });
      // Let the IPC message flush, then go.
      setTimeout(() => process.exit(0), 100);
    }
  });
  process.on('disconnect', () => process.exit(0));
}

main();
