// Join tokens: the admin token may obtain any identity; a token from `mesh token create --service S` only S's.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { TOKENS } from './state.js';
import type { Store } from './store.js';

interface StoredToken {
  readonly service: string;
  readonly namespace: string;
  readonly expiresUnix: number;
}

const digest = (token: string): string => createHash('sha256').update(token).digest('hex');

export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export class Tokens {
  constructor(private readonly store: Store, private readonly adminToken: string) {}

  isAdmin(token: string): boolean {
    return token.length > 0 && sameSecret(token, this.adminToken);
  }

  /** Only a digest is stored, so reading the store does not hand out identities. */
  async create(service: string, namespace: string, ttlMs: number): Promise<{ token: string; expiresUnix: number }> {
    const token = `trellis.${randomBytes(24).toString('base64url')}`;
    const expiresUnix = Math.floor((Date.now() + ttlMs) / 1000);
    await this.store.put(`${TOKENS}${digest(token)}`, JSON.stringify({ service, namespace, expiresUnix } satisfies StoredToken));
    return { token, expiresUnix };
  }

  /** Why `token` may not obtain the identity, or undefined when it may. */
  async refuse(token: string, service: string, namespace: string): Promise<string | undefined> {
    if (this.isAdmin(token)) return undefined;
    if (!token) return 'no token';
    const range = await this.store.get(`${TOKENS}${digest(token)}`);
    const kv = range.kvs[0];
    if (!kv) return 'unknown token';
    const t = JSON.parse(kv.value) as StoredToken;
    if (t.expiresUnix * 1000 < Date.now()) return 'token expired';
    if (t.service !== service || t.namespace !== namespace) {
      return `token is for "${t.namespace}/${t.service}", not "${namespace}/${service}"`;
    }
    return undefined;
  }
}
