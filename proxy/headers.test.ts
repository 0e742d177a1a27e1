import { describe, expect, it } from 'vitest';
import { requestHeadersForUpstream, responseHeadersForClient } from './headers.js';

describe('requestHeadersForUpstream', () => {
  it('drops hop-by-hop, Connection-named, x-mesh-*, xfcc and underscore headers', () => {
    const out = requestHeadersForUpstream({
      host: 'billing', connection: 'keep-alive, x-secret, X-Request-Id', 'keep-alive': 'timeout=5', te: 'trailers',
      'transfer-encoding': 'chunked', upgrade: 'h2c', 'proxy-connection': 'keep-alive', 'x-secret': 's',
      'x-request-id': 'abc', 'x-mesh-error': 'no-route', 'x-mesh-anything': '1', 'x-forwarded-client-cert': 'By=x',
      'x_user': 'admin', expect: '100-continue', accept: 'text/plain', 'content-length': '5',
    }, true);
    expect(out).toEqual({ accept: 'text/plain', 'content-length': '5' });
  });

  it('drops content-length when the body will be re-framed', () => {
    expect(requestHeadersForUpstream({ 'content-length': '5', a: 'b' }, false)).toEqual({ a: 'b' });
  });

  it('keeps repeated values as they came', () => {
    expect(requestHeadersForUpstream({ cookie: 'a=1; b=2', 'x-list': ['1', '2'] } as never, true))
      .toEqual({ cookie: 'a=1; b=2', 'x-list': ['1', '2'] });
  });
});

describe('responseHeadersForClient', () => {
  it('drops hop-by-hop and Connection-named response headers, keeps the rest', () => {
    expect(responseHeadersForClient({
      connection: 'x-internal', 'x-internal': '1', 'transfer-encoding': 'chunked', 'keep-alive': 'timeout=5',
      'content-type': 'text/plain', 'set-cookie': ['a=1', 'b=2'], 'x-mesh-error': 'upstream-timeout',
    })).toEqual({ 'content-type': 'text/plain', 'set-cookie': ['a=1', 'b=2'], 'x-mesh-error': 'upstream-timeout' });
  });
});
