// HTTP/1.1 pipelining on one connection (listener.ts): answers go out in request order, so whatever the listener writes itself (a refusal, an upgrade's takeover) waits for the answers owed before it.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/**
 * Per connection, kept on the socket itself: this runs for every HTTP/1 request, and a WeakMap per request (an
 * ephemeron the GC must trace) cost the sidecar pair ~20 % of its throughput, mostly in GC.
 */
interface Connection {
  /** Responses not yet closed, in request order; almost always none or one. */
  readonly open: ServerResponse[];
  /** Runs once `ready` holds, checked each time an answer closes. */
  pending: { ready: () => boolean; then: () => void } | undefined;
}

const CONN = Symbol('mesh.pipelining');

/**
 * Requests of one connection the sidecar works on at once, as HTTP/2's 100 concurrent streams would be: each holds an
 * upstream request and up to a window of its answer, so a client that pipelined thousands and never read held hundreds
 * of MB. The next request is answered 503 with Connection: close and nothing after it is forwarded; RFC 9112 §9.3.2
 * has the client retry what the closed connection left unanswered. (Envoy and hyper take pipelined requests one at a time.)
 */
export const MAX_PIPELINED = 100;
type Tracked = { [CONN]?: Connection };

/** The 'close' listener of every admitted response: one function, no closure per request. */
function onClose(this: ServerResponse & Tracked): void {
  const conn = this[CONN];
  if (!conn) return;
  const i = conn.open.indexOf(this);
  if (i >= 0) conn.open.splice(i, 1);
  if (!conn.pending?.ready()) return;
  const then = conn.pending.then;
  // Once: requests parsed after an upgrade or a refusal join the same connection and must not run it again.
  conn.pending = undefined;
  then();
}

/**
 * A request parsed on its connection: true to serve it now; false when an earlier answer closes the connection.
 * Then this request would never get its own answer, so nothing of it may be forwarded (the upstream would serve a
 * request the client is never told about). 'too-many': over MAX_PIPELINED; the answer is marked to close the
 * connection, and the listener refuses the request.
 */
export function admit(req: IncomingMessage, res: ServerResponse): boolean | 'too-many' {
  // The request's socket: a pipelined response gets its socket only when the ones before it are done.
  const socket = req.socket as Socket & Tracked;
  let conn = socket[CONN];
  if (!conn) socket[CONN] = conn = { open: [], pending: undefined };
  let closing = false;
  for (let i = 0; i < conn.open.length; i++) {
    if (conn.open[i].shouldKeepAlive === false) {
      closing = true;
      break;
    }
  }
  conn.open.push(res);
  (res as ServerResponse & Tracked)[CONN] = conn;
  res.on('close', onClose);
  if (closing) return false;
  if (conn.open.length <= MAX_PIPELINED) return true;
  // Closing from this answer on, set before the next pipelined request is admitted: that one sees it and is dropped.
  res.shouldKeepAlive = false;
  return 'too-many';
}

/**
 * Writes `response` (a refusal made by the listener) and closes, once every complete request before it has its
 * answer, never in its place: the client would take it for the answer to a request the upstream did receive. A
 * request whose body the bad bytes broke is not waited for (its body can never end): the refusal is its answer, and
 * the close aborts what the upstream was receiving.
 */
export function refuseInTurn(socket: Socket, response: string): void {
  when(socket, (r) => !r.req.complete, () => {
    if (!socket.writable) return void socket.destroy();
    socket.end(response, () => socket.destroy());
  });
}

/** Runs `fn` once every request on the connection has its answer (at once if none is pending): a pipelined upgrade. */
export function afterAnswers(socket: Socket, fn: () => void): void {
  when(socket, () => false, fn);
}

/** Runs `fn` once every response still open is one `skip` says not to wait for. */
function when(socket: Socket, skip: (r: ServerResponse) => boolean, fn: () => void): void {
  const c = (socket as Socket & Tracked)[CONN];
  const ready = (): boolean => c === undefined || c.open.every(skip);
  if (ready()) return fn();
  c!.pending = { ready, then: fn };
}
