// The frame-following half of the HTTP/2 field check: which streams it flags, however the bytes are cut.
import http2 from 'node:http2';
import net from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FieldGuard, MAX_HEADER_BLOCK } from './h2-field-guard.js';
import {
  block, continuation, data, F, frame, getRequest, headers, literal, literalIndexed, indexed, ping, PREFACE, rstStream, settings, T,
} from '../test/hardening/h2-frames.js';

/** Feeds `bytes` to a new guard in pieces of `step` octets; returns the streams flagged and whether it flagged a flood. */
function run(bytes: Buffer, step = bytes.length): { malformed: number[]; flood: boolean; off: boolean; resets: number; controls: number } {
  const malformed: number[] = [];
  let flood = false;
  let resets = 0;
  let controls = 0;
  const g = new FieldGuard({ malformed: (id) => malformed.push(id), flood: () => (flood = true), reset: () => resets++, control: () => controls++ });
  for (let i = 0; i < bytes.length; i += step) g.feed(bytes.subarray(i, i + step));
  return { malformed, flood, off: g.off, resets, controls };
}

const good = (id: number) => headers(id, getRequest('svc', `/ok/${id}`));
const bad = (id: number) => headers(id, getRequest('svc', `/bad/${id}`, [['x-inject', 'a\r\nx-evil: 1']]));

describe('FieldGuard', () => {
  it('flags exactly the streams with a malformed field, whatever the read sizes', () => {
    const bytes = Buffer.concat([PREFACE, settings(), good(1), bad(3), data(3, Buffer.from('body'), true), good(5), bad(7)]);
    for (const step of [1, 2, 7, 9, 10, 100, bytes.length]) {
      expect(run(bytes, step), `reads of ${step}`).toEqual({ malformed: [3, 7], flood: false, off: false, resets: 0, controls: 1 });
    }
  });

  it('reads padded and prioritised HEADERS, and blocks split over CONTINUATION frames', () => {
    const blockBytes = getRequest('svc', '/x', [['x-a', 'b'], ['x-bad', 'nul\0here']]);
    const cut = 20;
    const padded = Buffer.concat([Buffer.from([3]), Buffer.alloc(5), blockBytes.subarray(0, cut), Buffer.alloc(3)]);
    const bytes = Buffer.concat([
      PREFACE,
      frame(T.HEADERS, F.PADDED | F.PRIORITY, 1, padded),
      continuation(1, blockBytes.subarray(cut), true),
    ]);
    expect(run(bytes, 5).malformed).toEqual([1]);
  });

  it('keeps the dynamic table across blocks: a reference to a bad entry flags the later stream', () => {
    const first = headers(1, Buffer.concat([getRequest('svc', '/1'), literalIndexed('x-ok', 'v')]));
    const second = headers(3, Buffer.concat([getRequest('svc', '/3'), literalIndexed('x-bad', 'a\nb')]));
    const third = headers(5, Buffer.concat([getRequest('svc', '/5'), indexed(63)])); // x-ok
    const fourth = headers(7, Buffer.concat([getRequest('svc', '/7'), indexed(62)])); // x-bad
    expect(run(Buffer.concat([PREFACE, first, second, third, fourth])).malformed).toEqual([3, 7]);
  });

  it('flags a malformed trailer block too', () => {
    const bytes = Buffer.concat([PREFACE, headers(1, getRequest('svc', '/t'), { endStream: false }), data(1, Buffer.from('x')),
      headers(1, block([['x-trailer', 'a\rb']]))]);
    expect(run(bytes).malformed).toEqual([1]);
  });

  it(`reports a header block over ${MAX_HEADER_BLOCK} octets as a flood and stops`, () => {
    const parts = [PREFACE, headers(1, getRequest('svc', '/f'), { endHeaders: false })];
    for (let n = 0; n < 5; n++) parts.push(continuation(1, Buffer.alloc(16_000, 0x61)));
    expect(run(Buffer.concat(parts), 4_096)).toMatchObject({ malformed: [], flood: true, off: true });
  });

  it('counts the peer\'s RST_STREAM frames as they arrive (the rapid-reset guard), not other frames', () => {
    const pairs: Buffer[] = [PREFACE];
    for (let id = 1; id < 200; id += 2) pairs.push(good(id), rstStream(id, 8));
    expect(run(Buffer.concat(pairs), 13)).toMatchObject({ malformed: [], resets: 100, off: false });
  });

  it('counts PING and SETTINGS frames that ask for an ACK, not the ACKs', () => {
    const bytes = Buffer.concat([PREFACE, settings(), ping(), ping(Buffer.alloc(8), true), frame(T.SETTINGS, F.ACK, 0), ping()]);
    expect(run(bytes, 5)).toMatchObject({ controls: 3, resets: 0, off: false });
  });

  it('stops following (nghttp2 ends the session) after a frame out of place or an HPACK error, without flagging', () => {
    expect(run(Buffer.concat([PREFACE, continuation(1, literal('x', 'y'), true), bad(3)]))).toMatchObject({ malformed: [], off: true });
    expect(run(Buffer.concat([PREFACE, headers(1, indexed(99)), bad(3)]))).toMatchObject({ malformed: [], off: true });
    expect(run(Buffer.concat([PREFACE, frame(T.HEADERS, F.END_HEADERS, 1, Buffer.alloc(20_000)), bad(3)]))).toMatchObject({ malformed: [], off: true });
  });
});

describe('FieldGuard against nghttp2', () => {
  it('decodes what node:http2 clients send (Huffman, indexing, never-indexed) in step with nghttp2\'s own table', async () => {
    const server = http2.createServer();
    let serverSession: http2.ServerHttp2Session | undefined;
    server.on('session', (s) => (serverSession = s));
    server.on('stream', (s) => { s.respond({ ':status': 200 }); s.end(); });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const flagged: number[] = [];
    const guard = new FieldGuard({ malformed: (id) => flagged.push(id), flood: () => flagged.push(-1), reset: () => undefined, control: () => undefined });
    const relay = net.createServer((down) => {
      const up = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
      down.on('data', (chunk: Buffer) => { guard.feed(chunk); up.write(chunk); });
      up.pipe(down);
      down.on('close', () => up.destroy());
      up.on('close', () => down.destroy());
    });
    await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
    const client = http2.connect(`http://127.0.0.1:${(relay.address() as net.AddressInfo).port}`);
    try {
      const name = fc.constantFrom('x-a', 'x-trace', 'cookie', 'user-agent', 'authorization', 'x-long-header-name-for-the-table');
      const value = fc.stringMatching(/^[!-~]([ -~]{0,60}[!-~])?$/);
      const request = fc.array(fc.tuple(name, value, fc.boolean()), { maxLength: 6 });
      await fc.assert(fc.asyncProperty(fc.array(request, { minLength: 1, maxLength: 8 }), async (requests) => {
        for (const fields of requests) {
          const h: http2.OutgoingHttpHeaders = { ':path': '/p' };
          const sensitive: string[] = [];
          for (const [n, v, secret] of fields) {
            h[n] = v;
            if (secret) sensitive.push(n);
          }
          (h as Record<symbol, unknown>)[http2.sensitiveHeaders] = sensitive;
          const req = client.request(h, { endStream: true });
          req.resume();
          await new Promise((resolve, reject) => req.on('close', resolve).on('error', reject));
          expect(guard.off).toBe(false);
          expect(guard.tableSize).toBe(serverSession!.state.inflateDynamicTableSize);
        }
      }), { numRuns: 25 });
      expect(flagged).toEqual([]);
    } finally {
      client.close();
      relay.close();
      server.close();
    }
  }, 30_000);
});
