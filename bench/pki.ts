// The bench's mesh CA and the leaf files the baselines use: one CA (initCa) shared by the sidecars, nginx and http-proxy, so every pair does the same mutual TLS.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { initCa, CA_FILES } from '../certs/ca.js';
import { signCsr } from '../certs/issue.js';
import { createCsr, createWorkloadKey } from '../certs/workload.js';

export const TRUST_DOMAIN = 'mesh.local';
const DAY_MS = 86_400_000;

export interface LeafFiles {
  readonly cert: string;
  readonly key: string;
}

export interface BenchPki {
  /** The --dir of the sidecars: ca.crt and ca.key. */
  readonly dir: string;
  readonly caFile: string;
  /** CN=app (the name nginx's proxy_ssl_name and http-proxy's servername check), SPIFFE …/sa/app. */
  readonly server: LeafFiles;
  /** CN=client, SPIFFE …/sa/client: what the client half of a baseline pair presents. */
  readonly client: LeafFiles;
}

async function issue(dir: string, service: string, ca: Awaited<ReturnType<typeof initCa>>['ca']): Promise<LeafFiles> {
  const key = createWorkloadKey();
  const id = { trustDomain: TRUST_DOMAIN, namespace: 'default', service };
  const pem = signCsr(ca, createCsr(key, id), { id, ttlMs: DAY_MS });
  const files = { cert: join(dir, `${service}.crt`), key: join(dir, `${service}.key`) };
  await writeFile(files.cert, pem);
  await writeFile(files.key, key.keyPem, { mode: 0o600 });
  return files;
}

/** Creates the CA in `dir` and issues the two baseline leaves through the same signCsr path the mesh uses. */
export async function createBenchPki(dir: string): Promise<BenchPki> {
  const { ca } = await initCa(dir, TRUST_DOMAIN);
  return {
    dir,
    caFile: join(dir, CA_FILES.cert),
    server: await issue(dir, 'app', ca),
    client: await issue(dir, 'client', ca),
  };
}
