// Test data: malformed HTTP/2 frames and the answer RFC 9113 requires of a server (h2-abuse.test.ts sends each case on a
// fresh connection after the preface and an empty SETTINGS, unless `preface` is false).
import {
  E, PREFACE, S, T, continuation, data, frame, getRequest, goaway, headers, indexed, literal, ping, priority, rstStream, settings, windowUpdate,
} from './h2-frames.js';

/** A connection error (GOAWAY), a stream error (RST_STREAM), or either (RFC 9113 §5.4.1 lets a stream error end the connection). */
export type Expect = { goaway: number[] } | { rst: number[] } | { goawayOrRst: number[] };

export interface MalformedCase {
  readonly name: string;
  readonly frames: () => Buffer[];
  readonly expect: Expect;
  readonly preface?: boolean;
}

/** The cases, for requests to `authority`; `path(tag)` makes a path no other request uses. */
export function malformedCases(authority: string, path: (tag: string) => string): MalformedCase[] {
  const open = (): Buffer => headers(1, getRequest(authority, path('open')), { endStream: false });
  return [
    { name: 'DATA on stream 0', frames: () => [data(0, Buffer.from('x'))], expect: { goaway: [E.PROTOCOL_ERROR] } },
    { name: 'SETTINGS with a length not a multiple of 6', frames: () => [frame(T.SETTINGS, 0, 0, Buffer.alloc(5))], expect: { goaway: [E.FRAME_SIZE_ERROR] } },
    { name: 'SETTINGS on a stream', frames: () => [frame(T.SETTINGS, 0, 1, Buffer.alloc(0))], expect: { goaway: [E.PROTOCOL_ERROR] } },
    { name: 'SETTINGS ACK with a payload', frames: () => [frame(T.SETTINGS, 1, 0, Buffer.alloc(6))], expect: { goaway: [E.FRAME_SIZE_ERROR] } },
    { name: 'SETTINGS_ENABLE_PUSH = 2', frames: () => [settings([[S.ENABLE_PUSH, 2]])], expect: { goaway: [E.PROTOCOL_ERROR] } },
    { name: 'SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1', frames: () => [settings([[S.INITIAL_WINDOW_SIZE, 0x80000000]])], expect: { goaway: [E.FLOW_CONTROL_ERROR] } },
    { name: 'SETTINGS_MAX_FRAME_SIZE below 16384', frames: () => [settings([[S.MAX_FRAME_SIZE, 100]])], expect: { goaway: [E.PROTOCOL_ERROR] } },
    { name: 'HEADERS larger than SETTINGS_MAX_FRAME_SIZE', frames: () => [headers(1, Buffer.concat([getRequest(authority, '/'), literal('x-big', Buffer.alloc(20_000, 0x61))]))], expect: { goaway: [E.FRAME_SIZE_ERROR] } },
    { name: 'DATA larger than SETTINGS_MAX_FRAME_SIZE', frames: () => [open(), data(1, Buffer.alloc(16_385))], expect: { goaway: [E.FRAME_SIZE_ERROR] } },
    { name: 'frame header claiming 16 MB', frames: () => [frame(T.DATA, 0, 1, Buffer.alloc(100), 0xffffff)], expect: { goaway: [E.FRAME_SIZE_ERROR] } },
    { name: 'PING of 7 octets', frames: () => [frame(T.PING, 0, 0, Buffer.alloc(7))], expect: { goaway: [E.FRAME_SIZE_ERROR] } },
    { name: 'PING on a stream', frames: () => [frame(T.PING, 0, 1, Buffer.alloc(8))], expect: { goaway: [E.PROTOCOL_ERROR] } },
    { name: 'WINDOW_UPDATE of 0 on the connection', frames: () => [windowUpdate(0, 0)], expect: { goaway: [E.PROTOCOL_ERROR] } },
    { name: 'WINDOW_UPDATE of 0 on a stream', frames: () => [open(), windowUpdate(1, 0)], expect: { goawayOrRst: [E.PROTOCOL_ERROR] } },
    { name: 'WINDOW_UPDATE overflowing the connection window', frames: () => [windowUpdate(0, 0x7fffffff)], expect: { goaway: [E.FLOW_CONTROL_ERROR] } },
    { name: 'WINDOW_UPDATE of 3 octets', frames: () => [frame(T.WINDOW_UPDATE, 0, 0, Buffer.alloc(3))], expect: { goaway: [E.FRAME_SIZE_ERROR] } },
    { name: 'HEADERS on an even (server-initiated) stream id', frames: () => [headers(2, getRequest(authority, '/'))], expect: { goaway: [E.PROTOCOL_ERROR] } },
    { name: 'HEADERS on stream 0', frames: () => [headers(0, getRequest(authority, '/'))], expect: { goaway: [E.PROTOCOL_ERROR] } },
    { name: 'PRIORITY depending on itself', frames: () => [priority(3, 3)], expect: { goawayOrRst: [E.PROTOCOL_ERROR] } },
    { name: 'PRIORITY of 4 octets', frames: () => [frame(T.PRIORITY, 0, 3, Buffer.alloc(4))], expect: { goawayOrRst: [E.FRAME_SIZE_ERROR] } },
    { name: 'RST_STREAM on an idle stream', frames: () => [rstStream(7, E.CANCEL)], expect: { goaway: [E.PROTOCOL_ERROR] } },
    { name: 'RST_STREAM on stream 0', frames: () => [rstStream(0, E.CANCEL)], expect: { goaway: [E.PROTOCOL_ERROR] } },
    { name: 'CONTINUATION without HEADERS', frames: () => [continuation(1, getRequest(authority, '/'), true)], expect: { goaway: [E.PROTOCOL_ERROR] } },
    { name: 'another frame inside a header block', frames: () => [headers(1, getRequest(authority, '/'), { endHeaders: false }), ping()], expect: { goaway: [E.PROTOCOL_ERROR] } },
    { name: 'CONTINUATION on another stream', frames: () => [headers(1, getRequest(authority, '/'), { endHeaders: false }), continuation(3, literal('x', 'y'), true)], expect: { goaway: [E.PROTOCOL_ERROR] } },
    { name: 'HPACK index out of range', frames: () => [headers(1, Buffer.concat([getRequest(authority, '/'), indexed(200)]))], expect: { goaway: [E.COMPRESSION_ERROR] } },
    { name: 'DATA on a stream the client already ended', frames: () => [headers(1, getRequest(authority, path('ended'))), data(1, Buffer.from('late'))], expect: { goawayOrRst: [E.STREAM_CLOSED] } },
    { name: 'GOAWAY from the client with garbage lengths', frames: () => [frame(T.GOAWAY, 0, 0, Buffer.alloc(3))], expect: { goaway: [E.FRAME_SIZE_ERROR] } },
    { name: 'a first frame that is not SETTINGS', preface: false, frames: () => [PREFACE, ping()], expect: { goaway: [E.PROTOCOL_ERROR] } },
    { name: 'a client GOAWAY then new streams', frames: () => [goaway(0, E.NO_ERROR), headers(1, getRequest(authority, path('after-goaway')))], expect: { goawayOrRst: [E.PROTOCOL_ERROR, E.NO_ERROR, E.REFUSED_STREAM] } },
  ];
}
