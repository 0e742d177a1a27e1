// The users service's data: accounts with scrypt password hashes and login sessions kept as token hashes, in users.db.
import crypto from 'node:crypto';
import { promisify } from 'node:util';
import { closeDatabase, isUniqueViolation, openDatabase, rfc3339, type Db } from './db.js';

const scrypt = promisify(crypto.scrypt) as (password: string, salt: Buffer, keylen: number) => Promise<Buffer>;

const KEY_BYTES = 64;
const SALT_BYTES = 16;
export const SESSION_TTL_MS = 24 * 60 * 60 * 1000;

export const NAME_RULE = /^[a-z0-9_-]{3,32}$/;
export const MIN_PASSWORD = 8;
// scrypt's cost grows with the input; a limit keeps one request from pinning the thread pool.
export const MAX_PASSWORD = 1024;

const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS users (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     name TEXT NOT NULL UNIQUE,
     salt BLOB NOT NULL,
     password_hash BLOB NOT NULL,
     created_at TEXT NOT NULL
   )`,
  `CREATE TABLE IF NOT EXISTS sessions (
     token_hash TEXT PRIMARY KEY,
     user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
     expires_at INTEGER NOT NULL
   )`,
  'CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_at)',
];

export interface User {
  readonly id: number;
  readonly name: string;
  readonly created_at: string;
}

export interface Session {
  readonly token: string;
  readonly expires_at: string;
}

interface UserRow extends User {
  readonly salt: Buffer;
  readonly password_hash: Buffer;
}

export interface UsersStore {
  /** The new user, or undefined when the name is taken. */
  signup(name: string, password: string): Promise<User | undefined>;
  /** A new session, or undefined for an unknown name or a wrong password (deliberately indistinguishable). */
  login(name: string, password: string): Promise<Session | undefined>;
  /** The session's user, or undefined for an unknown or expired token. */
  session(token: string): Pick<User, 'id' | 'name'> | undefined;
  byId(id: number): User | undefined;
  close(): void;
}

export function openUsersStore(dir: string, now: () => number = Date.now): UsersStore {
  const db: Db = openDatabase(dir, 'users.db', SCHEMA);
  const insertUser = db.prepare('INSERT INTO users (name, salt, password_hash, created_at) VALUES (?, ?, ?, ?)');
  const userByName = db.prepare<[string], UserRow>('SELECT id, name, created_at, salt, password_hash FROM users WHERE name = ?');
  const userById = db.prepare<[number], User>('SELECT id, name, created_at FROM users WHERE id = ?');
  const insertSession = db.prepare('INSERT INTO sessions (token_hash, user_id, expires_at) VALUES (?, ?, ?)');
  const purgeSessions = db.prepare('DELETE FROM sessions WHERE expires_at <= ?');
  const sessionUser = db.prepare<[string, number], Pick<User, 'id' | 'name'>>(
    'SELECT u.id AS id, u.name AS name FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ? AND s.expires_at > ?',
  );
  // Unknown names still cost one scrypt, so response time does not reveal which names exist.
  const decoySalt = crypto.randomBytes(SALT_BYTES);

  return {
    async signup(name, password) {
      const salt = crypto.randomBytes(SALT_BYTES);
      const hash = await scrypt(password, salt, KEY_BYTES);
      const createdAt = rfc3339(now());
      try {
        const { lastInsertRowid } = insertUser.run(name, salt, hash, createdAt);
        return { id: Number(lastInsertRowid), name, created_at: createdAt };
      } catch (err) {
        if (isUniqueViolation(err)) return undefined;
        throw err;
      }
    },
    async login(name, password) {
      const row = userByName.get(name);
      const hash = await scrypt(password, row?.salt ?? decoySalt, KEY_BYTES);
      if (!row || !crypto.timingSafeEqual(hash, row.password_hash)) return undefined;
      const token = crypto.randomBytes(32).toString('base64url');
      const expiresAt = now() + SESSION_TTL_MS;
      purgeSessions.run(now());
      insertSession.run(hashToken(token), row.id, expiresAt);
      return { token, expires_at: rfc3339(expiresAt) };
    },
    session: (token) => sessionUser.get(hashToken(token), now()),
    byId: (id) => userById.get(id),
    close: () => closeDatabase(db),
  };
}

/** Sessions are looked up by the token's SHA-256, so a copy of users.db holds no usable tokens. */
function hashToken(token: string): string {
  return crypto.createHash('sha256').update(token).digest('hex');
}
