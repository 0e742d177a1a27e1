// The billing gRPC contract in TypeScript: billing.proto loaded at runtime, its message types, and a typed client
// (for the gateway and tests) that reaches billing at an address with a chosen :authority, normally via a sidecar.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export interface Invoice {
  id: number;
  account_id: number;
  amount_cents: number;
  description: string;
  created_at: string;
  served_by: string;
}

export interface CreateInvoiceRequest {
  account_id: number;
  amount_cents: number;
  description: string;
}

export interface AccountRequest {
  account_id: number;
}

export interface ListInvoicesResponse {
  invoices: Invoice[];
  served_by: string;
}

export type Callback<T> = (err: grpc.ServiceError | null, value?: T) => void;

export type BillingClient = grpc.Client & {
  CreateInvoice(req: CreateInvoiceRequest, md: grpc.Metadata, opts: grpc.CallOptions, cb: Callback<Invoice>): grpc.ClientUnaryCall;
  ListInvoices(req: AccountRequest, md: grpc.Metadata, opts: grpc.CallOptions, cb: Callback<ListInvoicesResponse>): grpc.ClientUnaryCall;
  WatchInvoices(req: AccountRequest, md?: grpc.Metadata, opts?: grpc.CallOptions): grpc.ClientReadableStream<Invoice>;
};

/**
 * The repository root, found by walking up to the directory holding the proto source: the same answer from
 * examples/shop/ under vitest and from dist/examples/shop/ after the build (which does not copy .proto files).
 */
function findRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'examples/shop/billing.proto'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`examples/shop/billing.proto not found above ${from}`);
  }
}

export const PROTO_PATH = path.join(findRoot(path.dirname(fileURLToPath(import.meta.url))), 'examples/shop/billing.proto');

// keepCase: the JSON the gateway serves uses the proto's snake_case names as they are.
// longs: Number: ids and amounts stay far below 2^53 (amounts are capped at 10^9).
const definition = protoLoader.loadSync(PROTO_PATH, { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
const pkg = grpc.loadPackageDefinition(definition) as unknown as {
  shop: { billing: { v1: { Billing: grpc.ServiceClientConstructor } } };
};

export const BillingService = pkg.shop.billing.v1.Billing;

/** A client on one channel to `address` (the caller's sidecar outbound port) sending `authority` as :authority. */
export function createBillingClient(address: string, authority = 'billing', options: grpc.ChannelOptions = {}): BillingClient {
  return new BillingService(address, grpc.credentials.createInsecure(), {
    'grpc.default_authority': authority,
    ...options,
  }) as unknown as BillingClient;
}

/** A unary call as a promise: `unary<Invoice>((cb) => client.CreateInvoice(req, md, opts, cb))`. */
export function unary<Res>(start: (cb: Callback<Res>) => unknown): Promise<Res> {
  return new Promise((resolve, reject) => {
    start((err, value) => (err ? reject(err) : resolve(value as Res)));
  });
}

/** Whether `err` is a gRPC status error (as opposed to a programming error). */
export function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && typeof (err as { code?: unknown }).code === 'number' && 'metadata' in err;
}

export { grpc };
