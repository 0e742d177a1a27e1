// The users app in-process on port 0 with a temp database: signup, login, sessions, lookups, and bad input.
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningApp } from './app-process.js';
import { ANY_PORT, call, memoryLog, tempDir } from './test-support.js';
import { start } from './users.js';

describe('users', () => {
  const tmp = tempDir();
  let app: RunningApp;
  let base: string;

  beforeAll(async () => {
    app = await start({ listen: ANY_PORT, db: path.join(tmp.dir, 'users-db'), log: memoryLog() });
    base = app.address;
  });
  afterAll(async () => {
    await app.close();
    tmp.remove();
  });

  it('signs up, refuses a taken name and bad names or passwords', async () => {
    const ok = await call(base, 'POST', '/signup', { body: { name: 'alice', password: 'correct horse' } });
    expect(ok.status).toBe(201);
    expect(ok.body).toEqual({ id: expect.any(Number), name: 'alice' });

    const again = await call(base, 'POST', '/signup', { body: { name: 'alice', password: 'another one' } });
    expect(again.status).toBe(409);
    expect(again.body).toEqual({ error: 'name "alice" is taken' });

    for (const [body, status] of [
      [{ name: 'al', password: 'long enough' }, 400],
      [{ name: 'Alice', password: 'long enough' }, 400],
      [{ name: 'a'.repeat(33), password: 'long enough' }, 400],
      [{ name: 'bob', password: 'short' }, 400],
      [{ name: 'bob' }, 400],
      [{ name: 7, password: 'long enough' }, 400],
    ] as const) {
      const r = await call(base, 'POST', '/signup', { body });
      expect(r.status, JSON.stringify(body)).toBe(status);
      expect(r.body).toEqual({ error: expect.any(String) });
    }
  });

  it('logs in, keeps only hashes, and says the same thing for a wrong password and an unknown name', async () => {
    await call(base, 'POST', '/signup', { body: { name: 'carol', password: 'carol-secret' } });
    const login = await call(base, 'POST', '/login', { body: { name: 'carol', password: 'carol-secret' } });
    expect(login.status).toBe(200);
    const { token, expires_at } = login.body as { token: string; expires_at: string };
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const ttl = Date.parse(expires_at) - Date.now();
    expect(ttl).toBeGreaterThan(23.9 * 3600_000);
    expect(ttl).toBeLessThanOrEqual(24 * 3600_000);

    const wrong = await call(base, 'POST', '/login', { body: { name: 'carol', password: 'not-carols' } });
    const unknown = await call(base, 'POST', '/login', { body: { name: 'nobody', password: 'carol-secret' } });
    expect(wrong.status).toBe(401);
    expect(unknown.status).toBe(401);
    expect(wrong.body).toEqual(unknown.body);

    // Neither the password nor the token appears in the database, only their hashes.
    const db = new Database(path.join(tmp.dir, 'users-db', 'users.db'), { readonly: true });
    try {
      const row = db.prepare('SELECT salt, password_hash FROM users WHERE name = ?').get('carol') as { salt: Buffer; password_hash: Buffer };
      expect(row.password_hash.length).toBe(64);
      expect(row.salt.length).toBe(16);
      expect(row.password_hash.includes(Buffer.from('carol-secret'))).toBe(false);
      const sessions = db.prepare('SELECT token_hash FROM sessions').all() as { token_hash: string }[];
      expect(sessions.length).toBeGreaterThan(0);
      expect(sessions.map((s) => s.token_hash)).not.toContain(token);
    } finally {
      db.close();
    }
  });

  it('answers /session for a valid bearer token and 401 otherwise', async () => {
    const signup = await call(base, 'POST', '/signup', { body: { name: 'dave', password: 'dave-secret' } });
    const { id } = signup.body as { id: number };
    const { token } = (await call(base, 'POST', '/login', { body: { name: 'dave', password: 'dave-secret' } })).body as { token: string };

    const ok = await call(base, 'GET', '/session', { headers: { authorization: `Bearer ${token}` } });
    expect(ok).toMatchObject({ status: 200, body: { id, name: 'dave' } });

    for (const authorization of [undefined, 'Bearer nope', `Basic ${token}`, `Bearer ${token}x`]) {
      const r = await call(base, 'GET', '/session', { headers: authorization ? { authorization } : {} });
      expect(r.status, String(authorization)).toBe(401);
    }
  });

  it('looks users up by id for billing', async () => {
    const { id } = (await call(base, 'POST', '/signup', { body: { name: 'erin', password: 'erin-secret' } })).body as { id: number };
    const ok = await call(base, 'GET', `/users/${id}`);
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({ id, name: 'erin', created_at: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/) });
    for (const missing of ['999999', '0', 'abc', '1e3', '-1']) {
      expect((await call(base, 'GET', `/users/${missing}`)).status, missing).toBe(404);
    }
  });

  it('never crashes on bad input: 400 malformed JSON, 413 oversize, 404 unknown route, 405 wrong method', async () => {
    const bad = await call(base, 'POST', '/signup', { raw: '{"name": "x",' });
    expect(bad.status).toBe(400);
    expect((bad.body as { error: string }).error).toMatch(/^malformed JSON body/);
    expect((await call(base, 'POST', '/signup', { raw: '[1,2]' })).status).toBe(400);

    const big = await call(base, 'POST', '/signup', { raw: JSON.stringify({ name: 'big', password: 'x'.repeat(70_000) }) });
    expect(big.status).toBe(413);
    expect(big.body).toEqual({ error: 'request body larger than 65536 bytes' });

    // Without content-length (chunked), the limit applies as the bytes arrive.
    const chunks = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < 20; i++) c.enqueue(new Uint8Array(8 * 1024).fill(0x61));
        c.close();
      },
    });
    const chunked = await fetch(`http://${base}/signup`, { method: 'POST', body: chunks, duplex: 'half' } as RequestInit);
    expect(chunked.status).toBe(413);
    await chunked.arrayBuffer();

    const missing = await call(base, 'GET', '/nope');
    expect(missing).toMatchObject({ status: 404, body: { error: 'no route for GET /nope' } });
    const wrong = await call(base, 'GET', '/signup');
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get('allow')).toBe('POST');

    // Still serving after all that.
    expect((await call(base, 'GET', '/users/1')).status).toBe(200);
  });
});
