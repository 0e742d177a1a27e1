// Test harness: a @grpc/grpc-js Echo server (test/fixtures/echo.proto) that records calls, a client for it, and grpc Service docs.
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { Doc } from './resources.js';
import { ROOT } from './sidecar.js';

export interface Msg {
  text: string;
  seq: number;
  count?: number;
  delayMs?: number;
  failFirst?: number;
}

const definition = protoLoader.loadSync(path.join(ROOT, 'test/fixtures/echo.proto'), { keepCase: false, defaults: true });
const pkg = grpc.loadPackageDefinition(definition) as unknown as { trellis: { test: { Echo: grpc.ServiceClientConstructor } } };
export const EchoService = pkg.trellis.test.Echo;

export type EchoClient = grpc.Client & {
  unary(m: Msg, md: grpc.Metadata, o: grpc.CallOptions, cb: (err: grpc.ServiceError | null, r?: Msg) => void): grpc.ClientUnaryCall;
  serverStream(m: Msg, md: grpc.Metadata, o?: grpc.CallOptions): grpc.ClientReadableStream<Msg>;
  clientStream(md: grpc.Metadata, o: grpc.CallOptions, cb: (err: grpc.ServiceError | null, r?: Msg) => void): grpc.ClientWritableStream<Msg>;
  bidi(md: grpc.Metadata, o?: grpc.CallOptions): grpc.ClientDuplexStream<Msg, Msg>;
};

export interface EchoServer {
  readonly name: string;
  readonly address: string;
  /** Calls received, by method. */
  readonly calls: Record<string, number>;
  /** Calls the client (or a sidecar) cancelled while the server was still working on them. */
  cancelled: number;
  /** grpc-timeout of the last call that carried one, as the server's deadline said (ms left at arrival). */
  lastDeadlineMs: number | undefined;
  /** The request metadata of the last call (custom keys only). */
  lastMetadata: Record<string, unknown>;
  close(): Promise<void>;
}

/**
 * Every method echoes, answers with initial metadata `x-initial` and trailer `x-trailer` (echoing the request's
 * `x-echo`), and names the server in `x-server`, so tests can see which endpoint served a call.
 */
export async function startEchoServer(name: string): Promise<EchoServer> {
  const server = new grpc.Server();
  const failed = new Set<string>();
  const state: EchoServer = {
    name, address: '', calls: {}, cancelled: 0, lastDeadlineMs: undefined, lastMetadata: {},
    close: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
  };
  const count = (method: string) => { state.calls[method] = (state.calls[method] ?? 0) + 1; };
  const meta = (md: grpc.Metadata, kind: 'initial' | 'trailer'): grpc.Metadata => {
    const out = new grpc.Metadata();
    out.set(`x-${kind}`, `${kind}:${String(md.get('x-echo')[0] ?? '')}`);
    out.set('x-server', name);
    return out;
  };
  const observe = (call: grpc.ServerUnaryCall<Msg, Msg> | grpc.ServerDuplexStream<Msg, Msg> | grpc.ServerReadableStream<Msg, Msg> | grpc.ServerWritableStream<Msg, Msg>) => {
    state.lastMetadata = call.metadata.getMap();
    const deadline = call.getDeadline();
    const at = deadline instanceof Date ? deadline.getTime() : deadline;
    state.lastDeadlineMs = Number.isFinite(at) ? Number(at) - Date.now() : undefined;
    (call as NodeJS.EventEmitter).on('cancelled', () => state.cancelled++);
  };
  server.addService(EchoService.service, {
    unary(call: grpc.ServerUnaryCall<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) {
      count('unary');
      observe(call);
      const m = call.request;
      if (m.failFirst && !failed.has(m.text)) {
        failed.add(m.text);
        cb({ code: m.failFirst, details: `first call with "${m.text}" fails` });
        return;
      }
      call.sendMetadata(meta(call.metadata, 'initial'));
      const reply = () => cb(null, { text: `${name}:${m.text}`, seq: m.seq }, meta(call.metadata, 'trailer'));
      if (m.delayMs) setTimeout(() => { if (!call.cancelled) reply(); }, m.delayMs);
      else reply();
    },
    serverStream(call: grpc.ServerWritableStream<Msg, Msg>) {
      count('serverStream');
      observe(call);
      call.sendMetadata(meta(call.metadata, 'initial'));
      for (let i = 0; i < (call.request.count ?? 0); i++) call.write({ text: `${name}:${call.request.text}`, seq: i });
      call.end(meta(call.metadata, 'trailer'));
    },
    clientStream(call: grpc.ServerReadableStream<Msg, Msg>, cb: grpc.sendUnaryData<Msg>) {
      count('clientStream');
      observe(call);
      const texts: string[] = [];
      call.on('data', (m: Msg) => texts.push(m.text));
      call.on('end', () => cb(null, { text: texts.join(','), seq: texts.length }, meta(call.metadata, 'trailer')));
    },
    bidi(call: grpc.ServerDuplexStream<Msg, Msg>) {
      count('bidi');
      observe(call);
      call.sendMetadata(meta(call.metadata, 'initial'));
      call.on('data', (m: Msg) => call.write({ text: m.text, seq: m.seq }));
      call.on('end', () => call.end(meta(call.metadata, 'trailer')));
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return Object.assign(state, { address: `127.0.0.1:${port}` });
}

/** A client on one channel to `address` (a sidecar's outbound port), with `authority` as :authority (the route host). */
export function echoClient(address: string, authority = 'echo', options: grpc.ChannelOptions = {}): EchoClient {
  return new EchoService(address, grpc.credentials.createInsecure(), { 'grpc.default_authority': authority, ...options }) as unknown as EchoClient;
}

export function unaryCall(c: EchoClient, m: Msg, md = new grpc.Metadata(), o: grpc.CallOptions = {}): Promise<{ reply: Msg; initial: grpc.Metadata; trailers: grpc.Metadata }> {
  return new Promise((resolve, reject) => {
    let initial = new grpc.Metadata();
    let trailers = new grpc.Metadata();
    const call = c.unary(m, md, o, (err, reply) => {
      if (err) reject(err);
      // The callback can come before the 'status' event: wait a turn for the trailers.
      else setImmediate(() => resolve({ reply: reply!, initial, trailers }));
    });
    call.on('metadata', (md2: grpc.Metadata) => { initial = md2; });
    call.on('status', (s: grpc.StatusObject) => { trailers = s.metadata; });
  });
}

/** One length-prefixed gRPC message (uncompressed), for tests that speak HTTP/2 directly. */
export function grpcFrame(m: Msg): Buffer {
  const body = Buffer.from(EchoService.service.Unary.requestSerialize(m));
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(body.length, 1);
  return Buffer.concat([prefix, body]);
}

const doc = (kind: string, name: string, spec: Record<string, unknown>): Doc => ({ apiVersion: 'mesh/v1', kind, metadata: { name }, spec });

/** Service (protocol grpc) + Endpoints (if any) + TrafficPolicy with mesh mTLS. */
export function grpcService(s: { name: string; endpoints?: string[]; policy?: Record<string, unknown> }): Doc[] {
  const docs = [doc('Service', s.name, { protocol: 'grpc' })];
  if (s.endpoints) docs.push(doc('Endpoints', s.name, { service: s.name, endpoints: s.endpoints.map((address) => ({ address, labels: {} })) }));
  docs.push(doc('TrafficPolicy', s.name, { service: s.name, ...(s.policy ?? {}), tls: { mode: 'mutual' } }));
  return docs;
}

export { grpc };
