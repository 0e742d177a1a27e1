// HTTP/1.1 pipelining on one connection (listener.ts): answers go out in request order, so whatever the listener writes itself (a refusal, an upgrade's takeover) waits for the answers owed before it.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

interface Connection {
  /** Requests parsed and not yet answered (their response not closed). */
  readonly inFlight: Set<IncomingMessage>;
  readonly responses: WeakMap<IncomingMessage, ServerResponse>;
  /** Runs once `ready` holds, checked each time an answer closes. */
  pending: { ready: () => boolean; then: () => void } | undefined;
}

export class Pipelining {
  private readonly conns = new WeakMap<Socket, Connection>();

  /**
   * A request parsed on its connection: `serve` runs at once, unless an earlier answer closes the connection. Then this
   * request would never get its own answer, so nothing of it may be forwarded (the upstream would serve a request the
   * client is never told about).
   */
  admit(req: IncomingMessage, res: ServerResponse, serve: () => void): void {
    const socket = req.socket;
    let c = this.conns.get(socket);
    if (!c) this.conns.set(socket, (c = { inFlight: new Set(), responses: new WeakMap(), pending: undefined }));
    const conn = c;
    // Per request, so no array: almost every connection has nothing in flight when its next request arrives.
    let closing = false;
    if (conn.inFlight.size > 0) {
      for (const r of conn.inFlight) {
        if (conn.responses.get(r)?.shouldKeepAlive === false) {
          closing = true;
          break;
        }
      }
    }
    conn.inFlight.add(req);
    conn.responses.set(req, res);
    res.once('close', () => {
      conn.inFlight.delete(req);
      if (!conn.pending?.ready()) return;
      const then = conn.pending.then;
      // Once: requests parsed after an upgrade or a refusal join the same connection and must not run it again.
      conn.pending = undefined;
      then();
    });
    if (!closing) serve();
  }

  /**
   * Writes `response` (a refusal made by the listener) and closes, once every complete request before it has its
   * answer, never in its place: the client would take it for the answer to a request the upstream did receive. A
   * request whose body the bad bytes broke is not waited for (its body can never end): the refusal is its answer, and
   * the close aborts what the upstream was receiving.
   */
  refuse(socket: Socket, response: string): void {
    this.when(socket, (r) => !r.complete, () => {
      if (!socket.writable) return void socket.destroy();
      socket.end(response, () => socket.destroy());
    });
  }

  /** Runs `fn` once every request on the connection has its answer (at once if none is pending): a pipelined upgrade. */
  afterAnswers(socket: Socket, fn: () => void): void {
    this.when(socket, () => false, fn);
  }

  /** Runs `fn` once every request still in flight is one `skip` says not to wait for. */
  private when(socket: Socket, skip: (r: IncomingMessage) => boolean, fn: () => void): void {
    const c = this.conns.get(socket);
    const ready = (): boolean => c === undefined || [...c.inFlight].every(skip);
    if (ready()) return fn();
    c!.pending = { ready, then: fn };
  }
}
