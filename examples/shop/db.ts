// Opening a shop service's own SQLite database: the file under --db, WAL so several processes (billing v1 and v2)
// can share it, a busy timeout so their writes queue instead of failing, and idempotent schema creation.
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';

export type Db = Database.Database;

/** How long a write waits for another process's write lock before SQLITE_BUSY. */
export const BUSY_TIMEOUT_MS = 5_000;

/**
 * Opens (creating if missing) DIR/FILE and applies `schema`, a list of `CREATE … IF NOT EXISTS` statements, in one
 * immediate transaction, so two processes starting at once cannot interleave half-created schemas.
 */
export function openDatabase(dir: string, file: string, schema: readonly string[]): Db {
  fs.mkdirSync(dir, { recursive: true });
  const db = new Database(path.join(dir, file), { timeout: BUSY_TIMEOUT_MS });
  try {
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    db.pragma('journal_mode = WAL');
    // NORMAL is durable across application crashes in WAL mode; only an OS crash can lose the last commits.
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    db.transaction(() => {
      for (const stmt of schema) db.exec(stmt);
    }).immediate();
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}

/** Closes the database once; later calls do nothing (shutdown paths may overlap). */
export function closeDatabase(db: Db): void {
  if (db.open) db.close();
}

/** Whether a better-sqlite3 error is a UNIQUE constraint violation (a name already taken). */
export function isUniqueViolation(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === 'SQLITE_CONSTRAINT_UNIQUE';
}

/** RFC 3339 in UTC with milliseconds, the one timestamp format the shop stores and returns. */
export function rfc3339(ms: number): string {
  return new Date(ms).toISOString();
}
