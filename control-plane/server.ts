// The control plane's gRPC server: TLS from the mesh CA, admin calls behind the admin token, Join for certificates, the discovery stream.
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../api/log.js';
import {
  meshService, SERVER_KEEPALIVE_OPTIONS, type ApplyRequest, type DeleteRequest, type GetRequest, type JoinRequest, type StatRequest, type StatResponse, type StatusRequest, type StatusResponse, type TokenRequest,
} from '../api/protocol.js';
import type { CertificateAuthority } from '../certs/ca.js';
import { signCsr } from '../certs/issue.js';
import type { SpiffeId } from '../certs/spiffe.js';
import type { PushServer } from './push.js';
import type { ResourcesApi } from './resources-api.js';
import type { Tokens } from './tokens.js';

/** The identity clients require of the control plane's server certificate. */
export const CONTROL_PLANE_ID = (trustDomain: string): SpiffeId => ({ trustDomain, namespace: 'mesh-system', service: 'control-plane' });

export interface ServerDeps {
  readonly ca: CertificateAuthority;
  readonly push: PushServer;
  readonly resources: ResourcesApi;
  readonly tokens: Tokens;
  readonly log: Logger;
  /** TTL for workload certificates (MeshConfig certificateTTL, read per call). */
  readonly certificateTTLMs: () => number;
  /** The mesh's sidecars and their sync state (control-plane/status.ts). */
  readonly status: (localOnly: boolean) => Promise<StatusResponse>;
  /** Golden metrics per service and route (control-plane/stats-mesh.ts). */
  readonly stat: (req: StatRequest) => Promise<StatResponse>;
}

type Unary<Req, Res> = (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => void;

function fail(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}

/** Admin calls carry `authorization: Bearer <admin token>`; anything thrown becomes a one-line gRPC error. */
function unary<Req, Res>(d: ServerDeps, admin: boolean, fn: (req: Req) => Promise<Res>): Unary<Req, Res> {
  return (call, cb) => {
    if (admin) {
      const auth = String(call.metadata.get('authorization')[0] ?? '');
      if (!d.tokens.isAdmin(auth.replace(/^Bearer\s+/i, ''))) {
        cb(fail(grpc.status.UNAUTHENTICATED, 'admin token required (admin.token in --dir, or MESH_TOKEN)'));
        return;
      }
    }
    fn(call.request).then((res) => cb(null, res), (err: unknown) => {
      const e = err as Partial<grpc.ServiceError>;
      if (typeof e.code === 'number') cb(err as grpc.ServiceError);
      else {
        d.log.error('rpc_failed', { error: err });
        cb(fail(grpc.status.UNAVAILABLE, (err as Error).message));
      }
    });
  };
}

export function createServer(d: ServerDeps): grpc.Server {
  const server = new grpc.Server({ ...SERVER_KEEPALIVE_OPTIONS, 'grpc.max_receive_message_length': 16 * 1024 * 1024 });
  server.addService(meshService().service, {
    Join: unary<JoinRequest, unknown>(d, false, async (req) => {
      const namespace = req.namespace || 'default';
      const why = await d.tokens.refuse(req.token, req.service, namespace);
      if (why) throw fail(grpc.status.PERMISSION_DENIED, `may not obtain the identity of "${namespace}/${req.service}": ${why}`);
      try {
        const certPem = signCsr(d.ca, req.csrPem, { id: { trustDomain: d.ca.trustDomain, namespace, service: req.service }, ttlMs: d.certificateTTLMs() });
        d.log.info('certificate_issued', { service: req.service, namespace });
        return { certPem, caPem: d.ca.certPem };
      } catch (err) {
        throw fail(grpc.status.INVALID_ARGUMENT, (err as Error).message);
      }
    }),
    Discover: ((call: grpc.ServerDuplexStream<never, never>) => d.push.handle(call)) as grpc.handleBidiStreamingCall<never, never>,
    Apply: unary<ApplyRequest, unknown>(d, true, (req) => d.resources.apply(req.yaml, req.file || 'stdin', req.dryRun)),
    Delete: unary<DeleteRequest, unknown>(d, true, (req) =>
      d.resources.delete(req.yaml ? { yaml: req.yaml, file: req.file || 'stdin' } : { kind: req.kind, name: req.name, namespace: req.namespace })),
    Get: unary<GetRequest, unknown>(d, true, async (req) => {
      const r = await d.resources.get(req.kind, req.name, req.namespace);
      if (r.error) throw fail(grpc.status.INVALID_ARGUMENT, r.error);
      return { resourcesJson: JSON.stringify(r.resources), revision: r.revision };
    }),
    Diff: unary<ApplyRequest, unknown>(d, true, (req) => d.resources.diff(req.yaml, req.file || 'stdin')),
    Status: unary<StatusRequest, StatusResponse>(d, true, (req) => d.status(req.localOnly)),
    Stat: unary<StatRequest, StatResponse>(d, true, (req) => d.stat(req)),
    CreateToken: unary<TokenRequest, unknown>(d, true, async (req) => {
      if (!req.service) throw fail(grpc.status.INVALID_ARGUMENT, '--service is required');
      return d.tokens.create(req.service, req.namespace || 'default', (req.ttlSeconds || 86_400) * 1000);
    }),
  });
  return server;
}
