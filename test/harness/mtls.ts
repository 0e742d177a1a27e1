// Test harness: mTLS helpers for end-to-end tests: mesh-TLS service docs, AccessPolicy docs, client certificates from the shared CA, and a raw node:tls prober.
import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { loadCa, type CertificateAuthority } from '../../certs/ca.js';
import { signCsr } from '../../certs/issue.js';
import { createCsr, createWorkloadKey } from '../../certs/workload.js';
import { parseResponse, splitAddr, type RawResponse } from './client.js';
import type { Doc } from './resources.js';
import { meshDir, type Sidecar } from './sidecar.js';
import { sumWhere } from './prom.js';

export const TRUST_DOMAIN = 'mesh.local';

/** `spiffe://mesh.local/ns/default/sa/<service>` */
export const spiffeOf = (service: string): string => `spiffe://${TRUST_DOMAIN}/ns/default/sa/${service}`;

const doc = (kind: string, name: string, spec: Record<string, unknown>): Doc => ({ apiVersion: 'mesh/v1', kind, metadata: { name }, spec });

/** Service + Endpoints (if any) + TrafficPolicy with `tls: { mode: mutual }` (the mesh default, written out). */
export function meshService(s: { name: string; endpoints?: string[]; policy?: Record<string, unknown> }): Doc[] {
  const docs = [doc('Service', s.name, { protocol: 'http' })];
  if (s.endpoints) docs.push(doc('Endpoints', s.name, { service: s.name, endpoints: s.endpoints.map((address) => ({ address, labels: {} })) }));
  docs.push(doc('TrafficPolicy', s.name, { service: s.name, ...(s.policy ?? {}), tls: { mode: 'mutual' } }));
  return docs;
}

export interface AccessRule {
  from: string[];
  to?: { methods?: string[]; paths?: string[] }[];
}

export function accessPolicy(name: string, service: string, action: 'allow' | 'deny', rules: AccessRule[]): Doc {
  return doc('AccessPolicy', name, {
    service,
    action,
    rules: rules.map((r) => ({ from: r.from, to: (r.to ?? []).map((t) => ({ methods: t.methods ?? [], paths: t.paths ?? [] })) })),
  });
}

let ca: Promise<CertificateAuthority> | undefined;

/** The CA of the shared mesh dir (the one every harness sidecar issues itself from). */
export function meshCa(): Promise<CertificateAuthority> {
  ca ??= meshDir().then(loadCa);
  return ca;
}

export interface ClientCert {
  keyPem: string;
  certPem: string;
}

/** A valid workload certificate for `service` signed by the shared mesh CA (key made here, CSR flow). */
export async function issueClientCert(service: string, ttlMs = 3_600_000): Promise<ClientCert> {
  const authority = await meshCa();
  const key = createWorkloadKey();
  const id = { trustDomain: TRUST_DOMAIN, namespace: 'default', service };
  const certPem = signCsr(authority, createCsr(key, id), { id, ttlMs });
  return { keyPem: key.keyPem, certPem };
}

export interface TlsProbe {
  /** The TLS handshake completed on the client side. */
  handshake: boolean;
  /** Everything the server sent after the handshake (latin1). */
  received: string;
  /** The parsed response when `received` holds a status line. */
  response: RawResponse | undefined;
  /** Serial of the certificate the server presented (upper-case hex as Node prints it). */
  serverSerial: string | undefined;
  serverUri: string | undefined;
  error: string | undefined;
}

export interface ProbeOptions {
  cert?: ClientCert;
  /** Trust anchors for the server; the mesh CA when omitted. */
  caPem?: string;
  maxVersion?: tls.SecureVersion;
  minVersion?: tls.SecureVersion;
  /** Request text written after the handshake (default: GET / with Host). */
  text?: string;
  path?: string;
  host?: string;
  timeoutMs?: number;
}

/**
 * Connects to `addr` with node:tls directly, sends one HTTP/1.1 request after the handshake and returns what came
 * back. Never rejects: a refused handshake, a reset or a silent close all end as a probe with no response.
 */
export async function tlsProbe(addr: string, o: ProbeOptions = {}): Promise<TlsProbe> {
  const [host, port] = splitAddr(addr);
  const caPem = o.caPem ?? (await meshCa()).certPem;
  const text = o.text ?? `GET ${o.path ?? '/'} HTTP/1.1\r\nHost: ${o.host ?? 'probe'}\r\nConnection: close\r\n\r\n`;
  const timeoutMs = o.timeoutMs ?? 5_000;
  return new Promise<TlsProbe>((resolve) => {
    const out: TlsProbe = { handshake: false, received: '', response: undefined, serverSerial: undefined, serverUri: undefined, error: undefined };
    let settled = false;
    const socket = tls.connect({
      host,
      port,
      ca: caPem,
      key: o.cert?.keyPem,
      cert: o.cert?.certPem,
      maxVersion: o.maxVersion,
      minVersion: o.minVersion ?? 'TLSv1.2',
      // The sidecar's certificate names a SPIFFE id, not a host name; the chain is still checked against `ca`.
      checkServerIdentity: () => undefined,
      rejectUnauthorized: true,
    });
    const finish = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      out.response = /^HTTP\/1\.[01] \d{3}/.test(out.received) ? parseResponse(out.received) : undefined;
      resolve(out);
    };
    const timer = setTimeout(() => {
      out.error ??= `no close within ${timeoutMs}ms`;
      finish();
    }, timeoutMs);
    socket.setEncoding('latin1');
    socket.on('secureConnect', () => {
      out.handshake = true;
      const peer = socket.getPeerX509Certificate();
      out.serverSerial = peer?.serialNumber;
      out.serverUri = peer ? /URI:([^,\s]+)/.exec(peer.subjectAltName ?? '')?.[1] : undefined;
      socket.write(text, 'latin1');
    });
    socket.on('data', (d: string) => {
      out.received += d;
      // One whole response with Connection: close: the server closes; no need to parse framing here.
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      out.error ??= `${err.code ?? ''} ${err.message}`.trim();
      finish();
    });
    socket.on('end', finish);
    socket.on('close', finish);
  });
}

/** Serial of a PEM certificate as Node prints it (same form as getPeerX509Certificate().serialNumber). */
export function serialOf(certPem: string): string {
  return new X509Certificate(certPem).serialNumber;
}

/** mesh_tls_handshake_errors_total summed for `direction` (and `reason` when given). */
export async function handshakeErrors(sc: Sidecar, direction: 'inbound' | 'outbound', reason?: string): Promise<number> {
  return sumWhere(await sc.samples('mesh_tls_handshake_errors_total'), reason === undefined ? { direction } : { direction, reason });
}

/** Every non-zero mesh_tls_handshake_errors_total series of a sidecar, as `direction/reason=n` strings (for messages). */
export async function handshakeErrorSeries(sc: Sidecar): Promise<string[]> {
  return (await sc.samples('mesh_tls_handshake_errors_total')).filter((s) => s.value > 0).map((s) => `${s.labels.direction}/${s.labels.reason}=${s.value}`);
}

export interface CertsInfo {
  spiffeId: string;
  serial: string;
  notBefore: string;
  notAfter: string;
  rotations: number;
}

export async function certsOf(sc: Sidecar): Promise<CertsInfo> {
  const r = await sc.adminGet('/certs');
  if (r.status !== 200) throw new Error(`GET /certs answered ${r.status}: ${r.body}`);
  return JSON.parse(r.body) as CertsInfo;
}

/** Case-insensitive serial comparison (X509Certificate prints upper-case hex, forge lower-case). */
export const sameSerial = (a: string | undefined, b: string | undefined): boolean =>
  a !== undefined && b !== undefined && a.replace(/^0+/, '').toUpperCase() === b.replace(/^0+/, '').toUpperCase();
