// A request body streamed upstream at once and recorded on the way, so a gRPC call that turned out unary-sized can be replayed.
import type { DownstreamRequest, PreparedBody } from './exchange.js';

/**
 * gRPC cannot be buffered before forwarding as HTTP bodies are (body.ts): a bidi call whose client waits for a reply
 * before sending more would never finish its body. So the first try gets the bytes as they arrive, and a copy is kept
 * up to `limit`. If the body ended within the limit by the time a try failed, `replay()` returns it and the retry
 * layer may send it again; a longer or still-open stream cannot be retried (Envoy's retry buffer works the same way).
 * When a try fails before sending anything (connect failure), the retry layer may `settle()` the body first: like
 * Envoy's router, which holds a retry until the downstream request is complete, it waits (bounded) for the rest.
 */
export function recordBody(req: DownstreamRequest, limit: number): PreparedBody {
  const chunks: Buffer[] = [];
  let size = 0;
  let overflow = false;
  let ended = false;
  async function* tee(): AsyncGenerator<Buffer> {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      if (!overflow) {
        size += chunk.length;
        if (size > limit) {
          overflow = true;
          chunks.length = 0;
        } else {
          chunks.push(chunk);
        }
      }
      yield chunk;
    }
    ended = true;
  }
  const data = tee();
  return {
    kind: 'stream',
    data,
    replay: () => (ended && !overflow ? (chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size)) : undefined),
    // A generator that a failed try abandoned (return()) answers done at once: it then stays unreplayable, as it must.
    async settle() {
      try {
        while (!ended && !overflow && !(await data.next()).done) { /* recorded by tee() */ }
      } catch {
        // The client aborted its body: nothing to replay.
      }
    },
  };
}
