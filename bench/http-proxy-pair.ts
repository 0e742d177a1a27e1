// The http-proxy-pair baseline, one process per half: `client` takes plain HTTP and forwards over mutual TLS, `server` terminates mutual TLS and forwards to the app. The naive Node.js proxy.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { parseArgs } from 'node:util';
import httpProxy from 'http-proxy';

const { values } = parseArgs({
  options: {
    role: { type: 'string' },
    upstream: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
    ca: { type: 'string' },
    servername: { type: 'string', default: 'app' },
  },
  strict: true,
});

function need(name: 'upstream' | 'cert' | 'key' | 'ca'): string {
  const v = values[name];
  if (!v) throw new Error(`http-proxy-pair: --${name} is required`);
  return v;
}

const role = values.role;
if (role !== 'client' && role !== 'server') throw new Error('http-proxy-pair: --role must be client or server');
const upstream = need('upstream');
const tls = { cert: readFileSync(need('cert')), key: readFileSync(need('key')), ca: readFileSync(need('ca')) };

// Keep-alive on the hop to the next process: without an agent http-proxy sends `connection: close` on every request.
const agent = role === 'client'
  ? new https.Agent({ keepAlive: true, ...tls, servername: values.servername, minVersion: 'TLSv1.3' })
  : new http.Agent({ keepAlive: true });
const proxy = httpProxy.createProxyServer({
  target: `${role === 'client' ? 'https' : 'http'}://${upstream}`,
  agent,
  secure: true,
});

// A failed upstream must cost one request, not the process.
proxy.on('error', (err, _req, res) => {
  if (res instanceof http.ServerResponse) {
    if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
    res.end(`bad gateway: ${err.message}\n`);
  } else {
    (res as Duplex).destroy();
  }
});

const handler: http.RequestListener = (req, res) => proxy.web(req, res);
const server = role === 'client'
  ? http.createServer(handler)
  : https.createServer({ ...tls, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, handler);
server.keepAliveTimeout = 60_000;
server.on('clientError', (_err, socket: Duplex) => socket.destroy());
server.on('tlsClientError', (_err, socket: Duplex) => socket.destroy());

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as AddressInfo;
  process.stdout.write(`${JSON.stringify({ event: 'listening', role, port })}\n`);
});

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
