// Traffic mirroring (route rule `mirror`): a fire-and-forget copy to a shadow service; its outcome never reaches the client.
import type { Random } from '../api/clock.js';
import type { Logger } from '../api/log.js';
import type { Cluster } from './cluster.js';
import type { Exchange } from './exchange.js';
import type { Handler, Layer } from './pipeline-types.js';

/** A shadow request may not hold resources for long: it is capped well below any route timeout. */
const MIRROR_TIMEOUT_MS = 5_000;

export function mirrorLayer(cluster: (service: string) => Cluster | undefined, random: Random, log: Logger): Layer {
  return (next: Handler): Handler => (ex: Exchange) => {
    const m = ex.rule?.mirror;
    // A streamed body can be read only once, and it belongs to the real request.
    if (m && ex.body.kind !== 'stream' && (m.fraction >= 1 || random() < m.fraction)) sendShadow(ex, m.service, cluster(m.service), log);
    return next(ex);
  };
}

function sendShadow(ex: Exchange, service: string, cluster: Cluster | undefined, log: Logger): void {
  const ep = cluster?.pick('', undefined, undefined);
  if (!cluster || !ep) return;
  // Envoy's convention: the shadow sees the host with a "-shadow" suffix, so it can tell copies from real calls.
  const headers = { ...ex.headers, host: `${ex.upstreamHost}-shadow` };
  cluster.poolFor(ep)
    .request({
      path: ex.path + ex.query,
      method: ex.method as 'GET',
      headers,
      body: ex.body.kind === 'buffered' ? ex.body.data : null,
      headersTimeout: MIRROR_TIMEOUT_MS,
      bodyTimeout: MIRROR_TIMEOUT_MS,
    })
    .then((r) => r.body.dump())
    .catch((err: unknown) => log.debug('mirror_failed', { service, endpoint: ep.id, error: err }));
}
