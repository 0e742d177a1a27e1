// The shop's users service (HTTP/JSON): signup, login, session lookup for the gateway, account lookup for billing.
// Run as `node dist/examples/shop/users.js --listen HOST:PORT --db DIR`; owns DIR/users.db.
import type { Logger } from '../../api/log.js';
import type { HostPort } from '../../cli/args.js';
import { isMain, runApp, type RunningApp } from './app-process.js';
import { createRouter, HttpError, listenJson, readJsonObject, sendJson, stringField, type Route } from './http-json.js';
import { MAX_PASSWORD, MIN_PASSWORD, NAME_RULE, openUsersStore, type UsersStore } from './users-store.js';

export interface UsersOptions {
  readonly listen: HostPort;
  readonly db: string;
  readonly log: Logger;
}

const BAD_LOGIN = 'unknown name or wrong password';

function routes(store: UsersStore): Route[] {
  return [
    {
      method: 'POST', path: /^\/signup$/,
      async handle({ req, res }) {
        const { name, password } = credentials(await readJsonObject(req));
        if (!NAME_RULE.test(name)) throw new HttpError(400, 'name must be 3-32 characters of a-z, 0-9, "_" and "-"');
        if (password.length < MIN_PASSWORD) throw new HttpError(400, `password must be at least ${MIN_PASSWORD} characters`);
        const user = await store.signup(name, password);
        if (!user) throw new HttpError(409, `name "${name}" is taken`);
        sendJson(res, 201, { id: user.id, name: user.name });
      },
    },
    {
      method: 'POST', path: /^\/login$/,
      async handle({ req, res }) {
        const { name, password } = credentials(await readJsonObject(req));
        const session = NAME_RULE.test(name) ? await store.login(name, password) : undefined;
        if (!session) throw new HttpError(401, BAD_LOGIN);
        sendJson(res, 200, session);
      },
    },
    {
      method: 'GET', path: /^\/session$/,
      handle({ req, res }) {
        const m = /^Bearer ([A-Za-z0-9_-]{1,128})$/.exec(req.headers.authorization ?? '');
        const user = m ? store.session(m[1]) : undefined;
        if (!user) throw new HttpError(401, 'missing, unknown or expired session token', { 'www-authenticate': 'Bearer' });
        sendJson(res, 200, { id: user.id, name: user.name });
      },
    },
    {
      method: 'GET', path: /^\/users\/([^/]+)$/,
      handle({ res, params }) {
        const id = /^[1-9]\d{0,15}$/.test(params[0]) ? Number(params[0]) : undefined;
        const user = id === undefined ? undefined : store.byId(id);
        if (!user) throw new HttpError(404, `no user with id "${params[0]}"`);
        sendJson(res, 200, user);
      },
    },
  ];
}

function credentials(body: Record<string, unknown>): { name: string; password: string } {
  const name = stringField(body, 'name');
  const password = stringField(body, 'password');
  if (password.length > MAX_PASSWORD) throw new HttpError(400, `password must be at most ${MAX_PASSWORD} characters`);
  return { name, password };
}

export async function start(opts: UsersOptions): Promise<RunningApp> {
  const store = openUsersStore(opts.db);
  let server;
  try {
    server = await listenJson(opts.listen, createRouter(routes(store), opts.log));
  } catch (err) {
    store.close();
    throw err;
  }
  const http = server;
  let closing: Promise<void> | undefined;
  return {
    address: http.address,
    close: () => {
      closing ??= http.close().finally(() => store.close());
      return closing;
    },
  };
}

if (isMain(import.meta.url)) {
  void runApp('users', (flags, log) => start({ listen: flags.listen, db: flags.db!, log }));
}
