// The nginx-pair baseline: generated configs for a client nginx (plain HTTP in, mTLS out) and a server nginx (mTLS in, HTTP to the app), one worker each.
import { mkdir, writeFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { childrenOf } from './proc.js';
import { freePort } from '../cli/ports.js';
import { spawnChild, waitForPort, type Child } from './processes.js';
import type { BenchPki } from './pki.js';

/** What both configs share: one worker, foreground master, logs and temp files under the prefix. */
function preamble(prefix: string, name: string): string {
  // As root, nginx would switch its workers to "nobody"; keep them the current user, like the other scenarios.
  const user = process.getuid?.() === 0 ? `user ${userInfo().username};\n` : '';
  return `${user}daemon off;
master_process on;
worker_processes 1;
pid ${prefix}/${name}.pid;
error_log ${prefix}/${name}-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${prefix}/${name}-body;
  proxy_temp_path ${prefix}/${name}-proxy;
  fastcgi_temp_path ${prefix}/${name}-fastcgi;
  uwsgi_temp_path ${prefix}/${name}-uwsgi;
  scgi_temp_path ${prefix}/${name}-scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
`;
}

/** Client nginx: plain HTTP in; HTTPS with a mesh client certificate to the server nginx, verified against the mesh CA. */
export function clientConfig(prefix: string, port: number, serverPort: number, pki: BenchPki): string {
  return `${preamble(prefix, 'client')}
  upstream server_nginx {
    server 127.0.0.1:${serverPort};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass https://server_nginx;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_certificate ${pki.client.cert};
      proxy_ssl_certificate_key ${pki.client.key};
      proxy_ssl_trusted_certificate ${pki.caFile};
      proxy_ssl_verify on;
      proxy_ssl_verify_depth 2;
      proxy_ssl_name app;
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_session_reuse on;
    }
  }
}
`;
}

/** Server nginx: TLS 1.3 with a required client certificate from the mesh CA; keep-alive HTTP to the app. */
export function serverConfig(prefix: string, port: number, app: string, pki: BenchPki): string {
  return `${preamble(prefix, 'server')}
  upstream app {
    server ${app};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate ${pki.server.cert};
    ssl_certificate_key ${pki.server.key};
    ssl_client_certificate ${pki.caFile};
    ssl_verify_client on;
    ssl_verify_depth 2;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;
}

export interface NginxPair {
  /** "127.0.0.1:port" of the client nginx. */
  readonly address: string;
  /** The worker processes of both masters (what the CPU and RSS figures are about), client first. */
  readonly workers: { role: string; pid: number }[];
  readonly masters: Child[];
}

async function startOne(bin: string, prefix: string, name: string, conf: string, port: number): Promise<{ master: Child; workers: number[] }> {
  const file = join(prefix, `${name}.conf`);
  await writeFile(file, conf);
  const master = spawnChild(`nginx ${name}`, bin, ['-p', prefix, '-c', file, '-e', join(prefix, `${name}-error.log`)]);
  await waitForPort(port, 10_000, master);
  // The master forks its worker before or just after it starts accepting; give it a moment to appear.
  const deadline = Date.now() + 5_000;
  let workers = childrenOf(master.pid);
  while (workers.length === 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
    workers = childrenOf(master.pid);
  }
  if (workers.length === 0) throw new Error(`nginx ${name} has no worker process\n${master.output()}`);
  master.alsoKill(workers);
  return { master, workers };
}

/** Writes both configs into `prefix` and starts the server nginx, then the client nginx. */
export async function startNginxPair(bin: string, prefix: string, app: string, pki: BenchPki): Promise<NginxPair> {
  await mkdir(prefix, { recursive: true });
  const serverPort = await freePort();
  const clientPort = await freePort();
  const server = await startOne(bin, prefix, 'server', serverConfig(prefix, serverPort, app, pki), serverPort);
  try {
    const client = await startOne(bin, prefix, 'client', clientConfig(prefix, clientPort, serverPort, pki), clientPort);
    return {
      address: `127.0.0.1:${clientPort}`,
      workers: [
        ...client.workers.map((pid) => ({ role: 'client nginx worker', pid })),
        ...server.workers.map((pid) => ({ role: 'server nginx worker', pid })),
      ],
      masters: [client.master, server.master],
    };
  } catch (err) {
    await server.master.stop('SIGTERM', 3_000);
    throw err;
  }
}
