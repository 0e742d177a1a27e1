// The shapes every pipeline stage shares: a handler serves one exchange; a layer wraps the next handler.
import type { Exchange } from './exchange.js';

/** Resolves when the exchange is finished (response ended, or the client is gone); never rejects. */
export type Handler = (ex: Exchange) => Promise<void>;

export type Layer = (next: Handler) => Handler;
