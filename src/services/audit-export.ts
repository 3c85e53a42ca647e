/**
 * The audit trail as JSON lines: what the sink writes (audit-sink.ts) and what
 * `npm run audit:verify -- --file` reads back. One object per line, told apart by `type`:
 *
 *   {"type":"hsm-signer.audit.key","algorithm":"ECDSA_SHA_256","publicKey":"<base64 DER SPKI>"}
 *   {"type":"hsm-signer.audit.event","seq":..,"time":..,"reqId":..,"identityId":..,"action":..,
 *    "resourceType":..,"resourceId":..,"outcome":..,"statusCode":..,"clientAddress":..,
 *    "prevHash":..,"hash":..[,"id":..]}
 *   {"type":"hsm-signer.audit.checkpoint","seq":..,"headHash":..,"signedAt":..,"algorithm":..,"signature":"<base64 DER>"}
 *
 * Events come in seq order, each with the fields its hash covers (`id` only on events written
 * before the compact format), so a file verifies on its own: the chain from its first event,
 * every checkpoint's signature with the key line every file opened by the sink starts with.
 * A checkpoint comes after the event it signs, not necessarily right after (it may be signed
 * later). Export is at least once: after a crash or a handover between replicas an event may
 * appear twice, identical; readers skip the repeat. A record may follow a prefix a collector put
 * before it (syslog's `<pri>date host hsm-signer-audit: `); lines with no record (a log line on a
 * shared stdout) are not part of the trail and are skipped.
 */
import { createReadStream, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { createGunzip } from 'node:zlib';
import type { AuditCheckpointRecord, AuditEventRecord } from '../store/audit-store.js';
import { CHECKPOINT_ALGORITHM, outcomeOf, type AuditChainSource } from './audit-chain.js';

export const KEY_TYPE = 'hsm-signer.audit.key';
export const EVENT_TYPE = 'hsm-signer.audit.event';
export const CHECKPOINT_TYPE = 'hsm-signer.audit.checkpoint';

export function keyLine(publicKey: Buffer): string {
  return JSON.stringify({ type: KEY_TYPE, algorithm: CHECKPOINT_ALGORITHM, publicKey: publicKey.toString('base64') });
}

export function eventLine(event: AuditEventRecord): string {
  const { id, ...fields } = event;
  return JSON.stringify({ type: EVENT_TYPE, ...fields, ...(id === null ? {} : { id }) });
}

export function checkpointLine(checkpoint: AuditCheckpointRecord): string {
  return JSON.stringify({ type: CHECKPOINT_TYPE, ...checkpoint, signature: checkpoint.signature.toString('base64') });
}

export type ExportRecord =
  | { type: 'key'; publicKey: Buffer }
  | { type: 'event'; event: AuditEventRecord }
  | { type: 'checkpoint'; checkpoint: AuditCheckpointRecord };

const str = (value: unknown): string => (typeof value === 'string' ? value : String(value));
const strOrNull = (value: unknown): string | null => (value === null || value === undefined ? null : str(value));

/** Where a record starts in a line: at its start, or after a prefix a collector added (syslog's header). */
const RECORD_START = '{"type":"hsm-signer.audit.';

/** One line as a record of the trail, or undefined when it is not one. */
export function parseExportLine(line: string): ExportRecord | undefined {
  const start = line.indexOf(RECORD_START);
  if (start < 0) return undefined;
  let value: Record<string, unknown>;
  try {
    value = JSON.parse(line.slice(start)) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  switch (value.type) {
    case KEY_TYPE:
      return { type: 'key', publicKey: Buffer.from(str(value.publicKey), 'base64') };
    case EVENT_TYPE: {
      const statusCode = Number(value.statusCode);
      return {
        type: 'event',
        event: {
          seq: Number(value.seq),
          id: strOrNull(value.id),
          time: str(value.time),
          reqId: str(value.reqId),
          identityId: strOrNull(value.identityId),
          action: str(value.action),
          resourceType: strOrNull(value.resourceType),
          resourceId: strOrNull(value.resourceId),
          // What v2 hashes leave out is what the status code says; a v1 event's hash covers the line's.
          outcome: value.id === undefined ? outcomeOf(statusCode) : str(value.outcome),
          statusCode,
          clientAddress: strOrNull(value.clientAddress),
          prevHash: str(value.prevHash),
          hash: str(value.hash),
        },
      };
    }
    case CHECKPOINT_TYPE:
      return {
        type: 'checkpoint',
        checkpoint: { seq: Number(value.seq), headHash: str(value.headHash), signedAt: str(value.signedAt), algorithm: str(value.algorithm), signature: Buffer.from(str(value.signature), 'base64') },
      };
    default:
      return undefined;
  }
}

async function* linesOf(path: string): AsyncGenerator<string> {
  const raw = createReadStream(path);
  const input = path.endsWith('.gz') ? raw.pipe(createGunzip()) : raw;
  const lines = createInterface({ input, crlfDelay: Infinity });
  try {
    for await (const line of lines) yield line;
  } finally {
    lines.close();
    raw.destroy();
  }
}

async function firstEventSeq(path: string): Promise<number> {
  for await (const line of linesOf(path)) {
    const record = parseExportLine(line);
    if (record?.type === 'event') return record.event.seq;
  }
  return Number.POSITIVE_INFINITY;
}

/**
 * The files to read for `path`: the file itself, or every regular file in the directory (the
 * current file and its rotations, `.gz` included), in the order of the first seq each holds,
 * whatever they are named.
 */
export async function exportFiles(path: string): Promise<string[]> {
  if (!statSync(path).isDirectory()) return [path];
  const files = readdirSync(path)
    .map((name) => join(path, name))
    .filter((file) => statSync(file).isFile());
  const firsts = new Map(await Promise.all(files.map(async (file) => [file, await firstEventSeq(file)] as const)));
  return files.sort((a, b) => firsts.get(a)! - firsts.get(b)! || a.localeCompare(b));
}

/**
 * An exported trail as the verifier reads a store (audit-chain.ts verifyAuditChain): the key
 * from its key lines (they must all agree), every checkpoint, and the events in file order with
 * exact repeats skipped. An event that repeats a seq with different content is passed on, for
 * the verifier to report.
 */
const RECENT_EVENTS = 100_000;

export function readExportedTrail(files: string[]): AuditChainSource & { keysDisagree(): Promise<boolean> } {
  let scanned: Promise<{ checkpoints: AuditCheckpointRecord[]; keys: Buffer[] }> | undefined;
  const scan = () =>
    (scanned ??= (async () => {
      const bySeq = new Map<number, AuditCheckpointRecord>();
      const keys: Buffer[] = [];
      for (const file of files) {
        for await (const line of linesOf(file)) {
          const record = parseExportLine(line);
          if (record?.type === 'checkpoint') bySeq.set(record.checkpoint.seq, record.checkpoint);
          else if (record?.type === 'key' && !keys.some((key) => key.equals(record.publicKey))) keys.push(record.publicKey);
        }
      }
      return { checkpoints: [...bySeq.values()], keys };
    })());
  return {
    async *events() {
      /** Hashes of the latest events by seq: a repeat is at most a batch or two behind. */
      const recent = new Map<number, string>();
      let lastSeq = 0;
      for (const file of files) {
        for await (const line of linesOf(file)) {
          const record = parseExportLine(line);
          if (record?.type !== 'event') continue;
          const { event } = record;
          if (event.seq <= lastSeq && recent.get(event.seq) === event.hash) continue;
          yield event;
          lastSeq = event.seq;
          recent.set(event.seq, event.hash);
          if (recent.size > RECENT_EVENTS) recent.delete(recent.keys().next().value!);
        }
      }
    },
    checkpoints: async () => (await scan()).checkpoints,
    publicKey: async () => (await scan()).keys[0],
    keysDisagree: async () => (await scan()).keys.length > 1,
  };
}
