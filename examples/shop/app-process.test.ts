// The launcher contract, on real processes from dist/ (npm run build first): flags, the listening line, clean exits
// on SIGTERM, SIGINT and the IPC channel closing, and exit 2 with one line on misuse.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { parseAppFlags } from './app-process.js';
import { call, DIST, forwardTo, kill, spawnApp, startFakeSidecar, tempDir, waitFor, type FakeSidecar, type SpawnedApp } from './test-support.js';

describe('app flags', () => {
  it('parses each app\'s flags and rejects what it has no use for', () => {
    expect(parseAppFlags('billing', ['--listen', '127.0.0.1:0', '--db', 'd', '--outbound', '[::1]:15001', '--version', 'v2', '--instance', 'b-2'])).toEqual({
      listen: { host: '127.0.0.1', port: 0 }, outbound: { host: '::1', port: 15001 }, db: 'd', version: 'v2', instance: 'b-2',
    });
    expect(parseAppFlags('users', ['--listen', '127.0.0.1:7001', '--db', 'd'])).toMatchObject({ instance: 'users', outbound: undefined });
    for (const [app, argv, message] of [
      ['users', ['--listen', '127.0.0.1:0'], 'users: --db DIR is required'],
      ['gateway', ['--listen', '127.0.0.1:0'], 'gateway: --outbound HOST:PORT is required'],
      ['gateway', ['--listen', '127.0.0.1:0', '--outbound', 'x:1', '--db', 'd'], "gateway: unknown option '--db' (gateway has no database)"],
      ['billing', ['--listen', '127.0.0.1:0', '--outbound', 'x:1', '--db', 'd', '--version', 'v3'], 'billing: --version: expected v1 or v2, got "v3"'],
      ['users', ['--listen', 'nowhere', '--db', 'd'], '--listen: expected HOST:PORT, got "nowhere"'],
      ['users', ['--listen', '127.0.0.1:0', '--db', 'd', 'extra'], "users: Unexpected argument 'extra'. This command does not take positional arguments"],
    ] as const) {
      expect(() => parseAppFlags(app, [...argv]), argv.join(' ')).toThrow(message);
    }
  });
});

describe('app processes', () => {
  const tmp = tempDir();
  let sidecar: FakeSidecar;
  const spawned: SpawnedApp[] = [];
  const run = async (...args: Parameters<typeof spawnApp>) => {
    const app = await spawnApp(...args);
    spawned.push(app);
    return app;
  };

  afterEach(() => spawned.splice(0).forEach(kill));
  afterAll(async () => {
    await sidecar?.close();
    tmp.remove();
  });

  it('prints the listening line, serves, and exits 0 on SIGTERM', async () => {
    const users = await run('users', ['--listen', '127.0.0.1:0', '--db', path.join(tmp.dir, 'u'), '--instance', 'users-a']);
    expect(users.stderr.find((l) => l.includes('"listening"'))).toMatch(/^\{"event":"listening","app":"users","address":"127\.0\.0\.1:\d+"\}$/);
    expect(users.address).not.toBe('127.0.0.1:0');
    expect((await call(users.address, 'POST', '/signup', { body: { name: 'zoe', password: 'password-1' } })).status).toBe(201);
    users.child.kill('SIGTERM');
    expect(await users.exited).toEqual({ code: 0, signal: null });
    const events = users.stderr.map((l) => JSON.parse(l) as { event: string; instance?: string });
    expect(events.map((e) => e.event)).toEqual(['start', 'listening', 'stop', 'stopped']);
    expect(events[0].instance).toBe('users-a');
  });

  it('billing exits 0 on SIGINT; the gateway ends its open watch streams and exits 0 on SIGTERM', async () => {
    const users = await run('users', ['--listen', '127.0.0.1:0', '--db', path.join(tmp.dir, 'u2')]);
    sidecar = await startFakeSidecar(forwardTo(users.address));
    const billing = await run('billing', ['--listen', '127.0.0.1:0', '--db', path.join(tmp.dir, 'b'), '--outbound', sidecar.address, '--version', 'v1']);
    sidecar.h2Target = billing.address;
    const gateway = await run('gateway', ['--listen', '127.0.0.1:0', '--outbound', sidecar.address]);

    await call(gateway.address, 'POST', '/signup', { body: { name: 'yan', password: 'password-1' } });
    const { token } = (await call(gateway.address, 'POST', '/login', { body: { name: 'yan', password: 'password-1' } })).body as { token: string };
    const watch = await fetch(`http://${gateway.address}/invoices/watch`, { headers: { authorization: `Bearer ${token}` } });
    expect(watch.status).toBe(200);
    const body = watch.text();

    const t0 = Date.now();
    gateway.child.kill('SIGTERM');
    expect(await gateway.exited).toEqual({ code: 0, signal: null });
    // Well inside the 5 s drain bound: the watch is ended, not waited for, and idle keep-alive connections are dropped.
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(await body).toBe('');

    billing.child.kill('SIGINT');
    expect(await billing.exited).toEqual({ code: 0, signal: null });
  });

  it('shuts down when the launcher\'s IPC channel closes (the launcher died)', async () => {
    const users = await run('users', ['--listen', '127.0.0.1:0', '--db', path.join(tmp.dir, 'u3')], true);
    users.child.disconnect();
    expect(await users.exited).toEqual({ code: 0, signal: null });
    await waitFor(() => users.stderr.some((l) => l.includes('launcher disconnected')), 'the stop line');
  });

  it('exits 2 with one line on bad flags, 1 when it cannot start', () => {
    const bad = spawnSync(process.execPath, [path.join(DIST, 'billing.js'), '--listen', '127.0.0.1:0', '--nope'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/^billing: Unknown option '--nope'/);

    const blocked = spawnSync(process.execPath, [path.join(DIST, 'users.js'), '--listen', '127.0.0.1:0', '--db', '/dev/null/x'], { encoding: 'utf8' });
    expect(blocked.status).toBe(1);
    expect(blocked.stderr).toMatch(/"event":"start-failed"/);
  });
});
