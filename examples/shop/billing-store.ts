// The billing service's data: invoices in billing.db, one file shared by the billing v1 and v2 processes.
import { closeDatabase, openDatabase, rfc3339, type Db } from './db.js';
import type { Invoice } from './billing-client.js';

export const LIST_LIMIT = 100;

const SCHEMA = [
  // AUTOINCREMENT ids are handed out under SQLite's single write lock, so they rise in commit order across both
  // processes: a watcher reading "id > last seen" can never skip a row committed later with a smaller id.
  `CREATE TABLE IF NOT EXISTS invoices (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     account_id INTEGER NOT NULL,
     amount_cents INTEGER NOT NULL,
     description TEXT NOT NULL,
     created_at TEXT NOT NULL,
     served_by TEXT NOT NULL
   )`,
  'CREATE INDEX IF NOT EXISTS invoices_by_account ON invoices (account_id, id)',
];

export interface BillingStore {
  create(accountId: number, amountCents: number, description: string, servedBy: string): Invoice;
  /** Newest first, at most LIST_LIMIT. */
  list(accountId: number): Invoice[];
  /** Oldest first: the next `limit` invoices of the account after id `afterId`. */
  after(accountId: number, afterId: number, limit: number): Invoice[];
  close(): void;
}

export function openBillingStore(dir: string, now: () => number = Date.now): BillingStore {
  const db: Db = openDatabase(dir, 'billing.db', SCHEMA);
  const columns = 'id, account_id, amount_cents, description, created_at, served_by';
  const insert = db.prepare<[number, number, string, string, string], Invoice>(
    `INSERT INTO invoices (account_id, amount_cents, description, created_at, served_by) VALUES (?, ?, ?, ?, ?) RETURNING ${columns}`,
  );
  const newest = db.prepare<[number, number], Invoice>(`SELECT ${columns} FROM invoices WHERE account_id = ? ORDER BY id DESC LIMIT ?`);
  const after = db.prepare<[number, number, number], Invoice>(
    `SELECT ${columns} FROM invoices WHERE account_id = ? AND id > ? ORDER BY id ASC LIMIT ?`,
  );
  return {
    create: (accountId, amountCents, description, servedBy) => insert.get(accountId, amountCents, description, rfc3339(now()), servedBy)!,
    list: (accountId) => newest.all(accountId, LIST_LIMIT),
    after: (accountId, afterId, limit) => after.all(accountId, afterId, limit),
    close: () => closeDatabase(db),
  };
}
