/**
 * `npx tsx scripts/verify-audit.ts [--db PATH | --url URL | --file PATH] [--data-dir DIR] [--public-key PEM]`
 *
 * Verifies the audit trail in a hsm-signer store: recomputes every event's hash in seq order,
 * checks each link, and checks every signed checkpoint (its signature with the audit public
 * key, and that the chain's hash at its seq is the one signed). Prints one line: the summary
 * of an intact chain (exit 0), or the first problem with its seq, event id, time and kind
 * (exit 1). Exit 2 when nothing could be verified: a bad command line, or a store (or public
 * key) that cannot be read, so that 1 always means a broken chain. Every process that shares the store appends
 * to the same one chain (src/services/audit-writer.ts), so this checks every replica's events
 * and every checkpoint, whichever process signed it.
 *
 * The store is the one the service's own configuration names, as `npm start` would use it:
 * PostgreSQL when DATABASE_URL (database.url) is set, else the SQLite file (DATA_DIR,
 * DATABASE_PATH, CONFIG_FILE); --url and --db name one directly. It only reads: SQLite is
 * opened read-only, no migration runs, and on PostgreSQL it issues SELECTs only, so it is safe
 * against a live service. --public-key names a PEM copy of the audit public key kept outside
 * the database; without it, the key stored in the database is trusted.
 *
 * A trail pruned by retention is verified from the first event kept: the output says where it
 * starts and which `audit.prune` event records why; a start no such event explains is a break.
 *
 * --file verifies what audit.sink exported instead (src/services/audit-export.ts): one JSON-lines
 * file, or a directory of them (the current file and its rotations, gzipped or not, put in order
 * by the seqs they hold). The checkpoints' key is the one the files carry (or --public-key). An
 * export may start at any seq (older files rotated away): it is verified from its first event.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config/load.js';
import { formatAuditReport, verifyAuditChain, type AuditChainReport } from '../src/services/audit-chain.js';
import { exportFiles, readExportedTrail } from '../src/services/audit-export.js';
import { readAuditChain, withSnapshot } from '../src/store/audit-store.js';
import { describeLocation, openStore, storeLocation, type Store, type StoreLocation } from '../src/store/database.js';

export function verifyAuditDatabase(store: Store, options: { trustedPublicKey?: KeyObject } = {}): Promise<AuditChainReport> {
  // One snapshot: retention on a live service deletes from the start while this reads.
  return withSnapshot(store, (snapshot) => verifyAuditChain(readAuditChain(snapshot), options));
}

function locationOf(values: { db?: string | undefined; url?: string | undefined; 'data-dir'?: string | undefined }): StoreLocation {
  if (values.url) return { engine: 'postgres', url: values.url };
  if (values.db) return { engine: 'sqlite', path: values.db };
  const config = loadConfig(values['data-dir'] ? { dataDir: values['data-dir'] } : {});
  return storeLocation(config.database, join(config.dataDir, 'hsm-signer.db'));
}

const USAGE = 'usage: npx tsx scripts/verify-audit.ts [--db PATH | --url URL | --file FILE-OR-DIR] [--data-dir DIR] [--public-key PEM]';

async function main(argv: string[]): Promise<number> {
  let values: ReturnType<typeof parse>['values'];
  try {
    ({ values } = parse(argv));
  } catch (error) {
    // Not a broken chain: nothing was verified (exit 1 would tell cron the trail was tampered with).
    console.error(`${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (values.file) return verifyFile(values.file, values['public-key']);
  let store: Store | undefined;
  let where = '(no store)';
  try {
    const location = locationOf(values);
    where = describeLocation(location);
    const trustedPublicKey = values['public-key'] ? createPublicKey(readFileSync(values['public-key'])) : undefined;
    store = await openStore(location, { migrate: false, readonly: true, poolSize: 1 });
    const tables = await store.db.introspection.getTables();
    const events = tables.find((table) => table.name === 'audit_events');
    if (!events || !tables.some((table) => table.name === 'audit_checkpoints')) {
      console.error(`${where} has no audit trail (the service that made it predates migration 003-audit)`);
      return 2;
    }
    if (events.columns.some((column) => column.name === 'outcome')) {
      console.error(`${where} holds the audit trail in the form before migration 008-audit-retention: start the service (or a copy of it on a copy of the store) once to migrate it, then verify`);
      return 2;
    }
    const report = await verifyAuditDatabase(store, trustedPublicKey ? { trustedPublicKey } : {});
    console.log(formatAuditReport(report));
    return report.ok ? 0 : 1;
  } catch (error) {
    console.error(`cannot verify the audit trail in ${where}: ${(error as Error).message}`);
    return 2;
  } finally {
    await store?.close();
  }
}

async function verifyFile(path: string, publicKeyPath: string | undefined): Promise<number> {
  let source: ReturnType<typeof readExportedTrail>;
  try {
    const trustedPublicKey = publicKeyPath ? createPublicKey(readFileSync(publicKeyPath)) : undefined;
    const files = await exportFiles(path);
    source = readExportedTrail(files);
    if (!(await source.publicKey()) && !trustedPublicKey) {
      console.error(`${path} holds no audit public key line (and no --public-key was given)`);
      return 2;
    }
    if (await source.keysDisagree()) {
      console.log(`audit export broken: ${path} carries more than one audit public key`);
      return 1;
    }
    const report = await verifyAuditChain(source, { startMayBeUnexplained: true, ...(trustedPublicKey ? { trustedPublicKey } : {}) });
    console.log(formatAuditReport(report).replace(/^audit chain/, `audit export (${files.length} file${files.length === 1 ? '' : 's'})`));
    return report.ok ? 0 : 1;
  } catch (error) {
    console.error(`cannot verify the audit export in ${path}: ${(error as Error).message}`);
    return 2;
  }
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    options: {
      db: { type: 'string' },
      url: { type: 'string' },
      file: { type: 'string' },
      'data-dir': { type: 'string' },
      'public-key': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) process.exitCode = await main(process.argv.slice(2));
