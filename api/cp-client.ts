// A client of the control plane for the CLI and the sidecar: TLS trusting the mesh CA, the server's SPIFFE id checked, deadlines on every call.
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { uriSans } from '../certs/spiffe.js';
import { KEEPALIVE_OPTIONS, meshService } from './protocol.js';

export interface ClientOptions {
  /** host:port */
  readonly address: string;
  readonly caPem: string;
  readonly trustDomain: string;
  /** Sent as `authorization: Bearer …` on admin calls. */
  readonly adminToken?: string;
}

export type MeshClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

export function createMeshClient(o: ClientOptions): MeshClient {
  const expected = `spiffe://${o.trustDomain}/ns/mesh-system/sa/control-plane`;
  const creds = grpc.credentials.createSsl(Buffer.from(o.caPem), null, null, {
    // The control plane is identified by its SPIFFE id, not by a host name.
    checkServerIdentity: (_host, cert) => {
      return uriSans(new X509Certificate(cert.raw)).includes(expected) ? undefined : new Error(`control plane identity is not ${expected}`);
    },
  });
  const Ctor = meshService();
  return new Ctor(o.address, creds, {
    ...KEEPALIVE_OPTIONS,
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
    // SNI must be a name, not an IP; the identity check above is what matters.
    'grpc.ssl_target_name_override': 'control-plane.mesh',
  }) as unknown as MeshClient;
}

/** One unary call as a promise, with a deadline and the admin token; errors carry the server's one-line details. */
export function call<Res>(client: MeshClient, method: string, req: unknown, opts: { adminToken?: string; timeoutMs?: number } = {}): Promise<Res> {
  const md = new grpc.Metadata();
  if (opts.adminToken) md.set('authorization', `Bearer ${opts.adminToken}`);
  return new Promise((resolve, reject) => {
    client[method](req, md, { deadline: Date.now() + (opts.timeoutMs ?? 10_000) }, (err: grpc.ServiceError | null, res: Res) => {
      if (err) reject(Object.assign(new Error(err.details || err.message), { code: err.code }));
      else resolve(res);
    });
  });
}
