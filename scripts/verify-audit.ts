/**
 * `npx tsx scripts/verify-audit.ts [--db PATH] [--data-dir DIR] [--public-key PEM]`
 *
 * Verifies the audit trail in a hsm-signer database: recomputes every event's hash in seq
 * order, checks each link, and checks every signed checkpoint (its signature with the audit
 * public key, and that the chain's hash at its seq is the one signed). Prints one line: the
 * summary of an intact chain (exit 0), or the first problem with its seq, event id, time and
 * kind (exit 1). Exit 2 when the database cannot be read. Every process that shares the store
 * appends to the same one chain (src/services/audit-writer.ts), so this checks every replica's
 * events and every checkpoint, whichever process signed it.
 *
 * The database is opened read-only and no migration runs, so it is safe against a live
 * service. Without --db, the path comes from the service's own configuration (DATA_DIR,
 * DATABASE_PATH, CONFIG_FILE), as `npm start` would use it. --public-key names a PEM copy of
 * the audit public key kept outside the database; without it, the key stored in the database
 * is trusted.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { loadConfig } from '../src/config/load.js';
import { formatAuditReport, verifyAuditChain, type AuditChainReport } from '../src/services/audit-chain.js';
import { readAuditChain } from '../src/store/audit-store.js';
import type { Db } from '../src/store/database.js';

export function verifyAuditDatabase(db: Db, options: { trustedPublicKey?: KeyObject } = {}): AuditChainReport {
  return verifyAuditChain(readAuditChain(db), options);
}

function databasePath(values: { db?: string | undefined; 'data-dir'?: string | undefined }): string {
  if (values.db) return values.db;
  const config = loadConfig(values['data-dir'] ? { dataDir: values['data-dir'] } : {});
  return config.database.path ?? join(config.dataDir, 'hsm-signer.db');
}

function main(argv: string[]): number {
  const { values } = parseArgs({
    args: argv,
    options: {
      db: { type: 'string' },
      'data-dir': { type: 'string' },
      'public-key': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log('usage: npx tsx scripts/verify-audit.ts [--db PATH] [--data-dir DIR] [--public-key PEM]');
    return 0;
  }
  let db: Db | undefined;
  let path = '(no path)';
  try {
    path = databasePath(values);
    const trustedPublicKey = values['public-key'] ? createPublicKey(readFileSync(values['public-key'])) : undefined;
    db = new Database(path, { readonly: true, fileMustExist: true });
    const tables = db.prepare<[], { name: string }>(`SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('audit_events', 'audit_checkpoints')`).all();
    if (tables.length !== 2) {
      console.error(`${path} has no audit trail (the service that made it predates migration 003-audit)`);
      return 2;
    }
    const report = verifyAuditDatabase(db, trustedPublicKey ? { trustedPublicKey } : {});
    console.log(formatAuditReport(report));
    return report.ok ? 0 : 1;
  } catch (error) {
    console.error(`cannot verify the audit trail in ${path}: ${(error as Error).message}`);
    return 2;
  } finally {
    db?.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) process.exitCode = main(process.argv.slice(2));
