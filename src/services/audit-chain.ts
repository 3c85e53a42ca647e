/**
 * The audit trail's hash chain, shared by the writer thread that appends to it
 * (audit-writer.ts) and the verifier that checks it (scripts/verify-audit.ts); nothing here
 * touches a database or the token. There is one chain however many writers append to it: each
 * appends after the head it reads from the store under the store's write lock.
 *
 * Invariant: event `seq` (1, 2, 3, ... with no gaps) carries `prevHash`, the hash of event
 * `seq - 1` (64 zeros for event 1), and `hash`, the SHA-256 of a canonical encoding of every
 * field including `seq` and `prevHash`. Editing any field, removing an event or moving one
 * breaks either an event's own hash or the next event's link. An attacker who rewrites the
 * chain from some point on and recomputes every hash after it is caught by the checkpoints:
 * the head's (seq, hash) signed by the audit key in the token, which no one outside the
 * token can forge. What no chain can catch: events cut from the end after the last checkpoint
 * (or together with the checkpoints that name them), and well-formed events appended after it,
 * since the hashes are not keyed.
 *
 * Two encodings: v1 (events written before migration 008, which carry a UUID `id`, an ISO time
 * and their outcome) and v2 (the compact form since: no id, time in epoch ms, outcome left out
 * as it follows from the status code). An event's `id` being null selects v2.
 *
 * Retention (audit-retention.ts) removes events from the start of the chain, only up to a signed
 * checkpoint and only after recording an `audit.prune` event that names the seqs it removes. Any
 * suffix of the chain stays verifiable: each kept event links forward to the next checkpoint,
 * which signs its hash, so the kept events up to the last checkpoint are exactly the ones signed
 * (forging them would need a SHA-256 second preimage); the checkpoint at the last seq pruned,
 * kept, anchors the first kept event's prev_hash; and a kept trail whose start no kept
 * `audit.prune` event explains is reported as events removed.
 */
import { createPublicKey, hash, verify, type KeyObject } from 'node:crypto';
import type { AuditCheckpointRecord, AuditEventRecord } from '../store/audit-store.js';

export const GENESIS_HASH = '0'.repeat(64);

/** Domain separation: an event hash can never be mistaken for the hash of anything else. */
const EVENT_FORMAT_V1 = 'hsm-signer audit event v1';
const EVENT_FORMAT_V2 = 'hsm-signer audit event v2';

/** The action of the event retention records before it removes events (resourceId `FROM-TO`). */
export const PRUNE_ACTION = 'audit.prune';

export type AuditOutcome = 'success' | 'denied' | 'failure';

/** The status codes whose outcome is `denied` (also the store's filter for it). */
export const DENIED_STATUS_CODES = [401, 403, 429] as const;

/**
 * The outcome an event's status code means: success (< 400), denied (401, 403, 429), failure
 * (anything else; a request the client abandoned, 499, may or may not have been done). Not
 * stored: it follows from the status code.
 */
export function outcomeOf(statusCode: number): AuditOutcome {
  if (statusCode < 400) return 'success';
  if ((DENIED_STATUS_CODES as readonly number[]).includes(statusCode)) return 'denied';
  return 'failure';
}

/** What the checkpoint signature is made with: ECDSA on P-256 over SHA-256, DER-encoded. */
export const CHECKPOINT_ALGORITHM = 'ECDSA_SHA_256';

export type ChainedEvent = Omit<AuditEventRecord, 'hash'>;

/**
 * SHA-256 (hex) of a JSON array in a fixed field order: JSON quotes and escapes every string
 * and writes null as null, so no two different events encode to the same bytes.
 */
export function eventHash(event: ChainedEvent): string {
  const fields =
    event.id === null
      ? [EVENT_FORMAT_V2, event.seq, Date.parse(event.time), event.reqId, event.identityId, event.action, event.resourceType, event.resourceId, event.statusCode, event.clientAddress, event.prevHash]
      : [
          EVENT_FORMAT_V1,
          event.seq,
          event.id,
          event.time,
          event.reqId,
          event.identityId,
          event.action,
          event.resourceType,
          event.resourceId,
          event.outcome,
          event.statusCode,
          event.clientAddress,
          event.prevHash,
        ];
  return hash('sha256', JSON.stringify(fields));
}

/** An event as recorded, before it has a place in the chain (no seq, id, hashes; time in ms). */
export type UnchainedEvent = Omit<AuditEventRecord, 'seq' | 'id' | 'time' | 'outcome' | 'prevHash' | 'hash'> & {
  /** When it was recorded (epoch ms); the chain may raise it, never lower it. */
  timeMs: number;
};

/**
 * Places `events` after `head` (undefined: an empty chain): seq head + 1, head + 2, ..., each
 * linked to the one before. A time earlier than the one before it (a clock stepped back, or
 * another writer's later event stored first) repeats that time, so seq order stays time order.
 */
export function chainEvents(head: Pick<AuditEventRecord, 'seq' | 'hash' | 'time'> | undefined, events: readonly UnchainedEvent[]): AuditEventRecord[] {
  let seq = head?.seq ?? 0;
  let prevHash = head?.hash ?? GENESIS_HASH;
  const headTimeMs = head ? Date.parse(head.time) : 0;
  let lastTimeMs = Number.isFinite(headTimeMs) ? headTimeMs : 0;
  const chained: AuditEventRecord[] = [];
  for (const event of events) {
    lastTimeMs = Math.max(event.timeMs, lastTimeMs);
    const fields: ChainedEvent = {
      seq: ++seq,
      id: null,
      time: new Date(lastTimeMs).toISOString(),
      reqId: event.reqId,
      identityId: event.identityId,
      action: event.action,
      resourceType: event.resourceType,
      resourceId: event.resourceId,
      outcome: outcomeOf(event.statusCode),
      statusCode: event.statusCode,
      clientAddress: event.clientAddress,
      prevHash,
    };
    prevHash = eventHash(fields);
    chained.push({ ...fields, hash: prevHash });
  }
  return chained;
}

/** The exact bytes a checkpoint signature covers (ASCII, no trailing newline). */
export function checkpointMessage(seq: number, headHash: string, signedAt: string): Buffer {
  return Buffer.from(`hsm-signer audit checkpoint\n${seq}\n${headHash}\n${signedAt}`, 'utf8');
}

export type AuditChainProblemKind =
  /** An event's fields (or its stored hash) no longer match its hash, or its hash was recomputed. */
  | 'edited'
  /** Events are missing from the middle or the start of the chain. */
  | 'removed'
  /** An event sits at a seq other than the one it was appended at. */
  | 'reordered'
  /** Events a signed checkpoint names are missing from the end. */
  | 'truncated'
  /** The chain links, but differs from what a checkpoint signed: it was rewritten and rehashed. */
  | 'rewritten'
  /** A checkpoint whose signature does not verify with the audit key. */
  | 'forged-checkpoint';

export interface AuditChainProblem {
  kind: AuditChainProblemKind;
  /** The first seq that is wrong (for removed and truncated: the first one missing). */
  seq: number;
  /** The event now at `seq`, when there is one. */
  id: string | null;
  time: string | null;
  detail: string;
}

/** Where a kept trail that does not start at seq 1 starts, and what says why. */
export interface TrailStart {
  /** The first seq present. */
  seq: number;
  /** The latest `audit.prune` event present that covers the seqs before it (null: none, allowed for exports). */
  prunedBy: { seq: number; time: string; from: number; to: number } | null;
  /** Whether the checkpoint of seq - 1 is present and signs the first event's prev_hash. */
  anchored: boolean;
}

export type AuditChainReport =
  | {
      ok: true;
      events: number;
      checkpoints: number;
      lastSignedSeq: number | null;
      lastSignedAt: string | null;
      head: { seq: number; hash: string };
      /** Set when the trail does not start at seq 1 (pruned, or an export that starts later). */
      start: TrailStart | null;
    }
  | { ok: false; problem: AuditChainProblem };

export interface AuditChainSource {
  /** Every event in seq order; called again (once) to explain a problem. Async: the store may be PostgreSQL. */
  events(): AsyncIterable<AuditEventRecord> | Iterable<AuditEventRecord>;
  checkpoints(): Promise<AuditCheckpointRecord[]> | AuditCheckpointRecord[];
  /** DER SubjectPublicKeyInfo of the audit key, as the service stored it. */
  publicKey(): Promise<Buffer | undefined> | Buffer | undefined;
}

export interface VerifyOptions {
  /**
   * The trail may start after seq 1 without an `audit.prune` event saying why: an export, whose
   * earlier files may have been rotated away, or which a sink began on a store already pruned.
   * A store's own trail must explain its start (default false).
   */
  startMayBeUnexplained?: boolean;
  /**
   * The audit public key as kept outside the database. Without it, the key stored beside the
   * events is trusted, and someone who can rewrite the database can replace it too.
   */
  trustedPublicKey?: KeyObject;
}

function checkpointSignatureValid(checkpoint: AuditCheckpointRecord, key: KeyObject | undefined): boolean {
  if (!key || checkpoint.algorithm !== CHECKPOINT_ALGORITHM) return false;
  try {
    return verify('sha256', checkpointMessage(checkpoint.seq, checkpoint.headHash, checkpoint.signedAt), key, checkpoint.signature);
  } catch {
    return false;
  }
}

function problem(kind: AuditChainProblemKind, seq: number, event: AuditEventRecord | undefined, detail: string): AuditChainReport {
  return { ok: false, problem: { kind, seq, id: event?.id ?? null, time: event?.time ?? null, detail } };
}

/**
 * Walks the chain in seq order and reports the first problem: each event's hash and link, and
 * at each checkpoint's seq its signature and the hash it signed. The classification of a broken
 * event (edited, removed, reordered) is what the evidence points to, not proof of intent.
 */
export async function verifyAuditChain(source: AuditChainSource, options: VerifyOptions = {}): Promise<AuditChainReport> {
  const checkpoints = [...(await source.checkpoints())].sort((a, b) => a.seq - b.seq);
  let key: KeyObject | undefined = options.trustedPublicKey;
  const stored = await source.publicKey();
  if (stored) {
    try {
      const storedKey = createPublicKey({ key: stored, format: 'der', type: 'spki' });
      if (key && !storedKey.equals(key)) {
        return problem('forged-checkpoint', checkpoints[0]?.seq ?? 1, undefined, 'the audit public key in the database is not the trusted one given: checkpoints may have been re-signed with another key');
      }
      key ??= storedKey;
    } catch {
      if (!key) return problem('forged-checkpoint', checkpoints[0]?.seq ?? 1, undefined, 'the audit public key stored in the database cannot be read');
    }
  }
  const forged = (checkpoint: AuditCheckpointRecord, event: AuditEventRecord | undefined) =>
    problem('forged-checkpoint', checkpoint.seq, event, `the checkpoint at seq ${checkpoint.seq} signed at ${checkpoint.signedAt} does not verify with the audit key`);

  let previous: AuditEventRecord | undefined;
  let start: TrailStart | null = null;
  let checkpointIndex = 0;
  let lastMatchedCheckpointSeq = 0;
  let count = 0;
  /** The prune event covering the furthest seq, among those present. */
  let prunedBy: TrailStart['prunedBy'] = null;
  for await (const event of source.events()) {
    if (!previous && event.seq > 1) {
      // A trail that starts later: checkpoints before it sign events no longer here. The one of
      // the seq just before it (retention keeps it) signs the hash this first event links to.
      start = { seq: event.seq, prunedBy: null, anchored: false };
      for (; checkpointIndex < checkpoints.length && checkpoints[checkpointIndex]!.seq < event.seq; checkpointIndex++) {
        const checkpoint = checkpoints[checkpointIndex]!;
        if (!checkpointSignatureValid(checkpoint, key)) return forged(checkpoint, undefined);
        if (checkpoint.seq !== event.seq - 1) continue;
        if (checkpoint.headHash !== event.prevHash) {
          return problem('edited', event.seq, event, `its prev_hash is not the hash of seq ${checkpoint.seq} that the checkpoint signed at ${checkpoint.signedAt} names: the first event kept is not the one that followed it`);
        }
        start.anchored = true;
      }
      lastMatchedCheckpointSeq = event.seq - 1;
    }
    const expectedSeq = previous ? previous.seq + 1 : event.seq;
    if (event.seq !== expectedSeq) {
      const missing = event.seq - 1 === expectedSeq ? `event ${expectedSeq} is missing` : `events ${expectedSeq}–${event.seq - 1} are missing`;
      return problem('removed', expectedSeq, undefined, `${missing} (the next event present is seq ${event.seq}${event.id ? `, id ${event.id}` : ''}, time ${event.time})`);
    }
    const broken = await checkEvent(source, event, previous);
    if (broken) return broken;
    // The hashes link: a time going backwards means the chain was rebuilt with events moved
    // (the service never writes a time earlier than the one before).
    if (previous && event.time < previous.time) {
      return problem('reordered', event.seq, event, `its time goes backwards from seq ${previous.seq} (${previous.time}) although the hashes link: the chain was rehashed after events were moved`);
    }
    for (; checkpointIndex < checkpoints.length && checkpoints[checkpointIndex]!.seq <= event.seq; checkpointIndex++) {
      const checkpoint = checkpoints[checkpointIndex]!;
      if (!checkpointSignatureValid(checkpoint, key)) return forged(checkpoint, event);
      if (checkpoint.headHash !== event.hash) {
        const from = lastMatchedCheckpointSeq + 1;
        const where = from === checkpoint.seq ? `event ${from} was edited` : `an event in seq ${from}–${checkpoint.seq} was edited, removed or reordered`;
        return problem(from === checkpoint.seq ? 'edited' : 'rewritten', from, from === checkpoint.seq ? event : undefined, `${where} and the chain rehashed: seq ${checkpoint.seq}'s hash is not the one signed at ${checkpoint.signedAt}`);
      }
      lastMatchedCheckpointSeq = checkpoint.seq;
    }
    const range = event.action === PRUNE_ACTION ? /^(\d+)-(\d+)$/.exec(event.resourceId ?? '') : null;
    if (range && (!prunedBy || Number(range[2]) >= prunedBy.to)) prunedBy = { seq: event.seq, time: event.time, from: Number(range[1]), to: Number(range[2]) };
    previous = event;
    count++;
  }

  const beyond = checkpoints.slice(checkpointIndex);
  for (const checkpoint of beyond) if (!checkpointSignatureValid(checkpoint, key)) return forged(checkpoint, undefined);
  const lastSeq = previous?.seq ?? 0;
  const furthest = beyond.at(-1);
  if (furthest) {
    const first = lastSeq + 1;
    const range = first === furthest.seq ? `event ${first} is missing` : `events ${first}–${furthest.seq} are missing`;
    return problem('truncated', first, undefined, `${range}: the checkpoint signed at ${furthest.signedAt} names seq ${furthest.seq}, the last event present is seq ${lastSeq}`);
  }
  if (start) {
    // Retention records what it prunes before pruning it, so a gap at the start that no kept
    // audit.prune event covers was made by something else.
    const covered = prunedBy && prunedBy.to >= start.seq - 1 ? prunedBy : null;
    if (!covered && !options.startMayBeUnexplained) {
      const from = prunedBy ? prunedBy.to + 1 : 1;
      const range = from === start.seq - 1 ? `event ${from} is missing` : `events ${from}–${start.seq - 1} are missing`;
      const pruned = prunedBy ? `the last ${PRUNE_ACTION} event (seq ${prunedBy.seq}) pruned up to seq ${prunedBy.to}` : `no ${PRUNE_ACTION} event records pruning them`;
      return problem('removed', from, undefined, `${range} from the start of the trail and ${pruned}`);
    }
    // An export's earlier files may be elsewhere: its start is where what was read begins.
    start.prunedBy = options.startMayBeUnexplained ? null : covered;
  }
  const lastCheckpoint = checkpoints.at(-1);
  return {
    ok: true,
    events: count,
    checkpoints: checkpoints.length,
    lastSignedSeq: lastCheckpoint?.seq ?? null,
    lastSignedAt: lastCheckpoint?.signedAt ?? null,
    head: { seq: lastSeq, hash: previous?.hash ?? GENESIS_HASH },
    start,
  };
}

/** The problem with `event`, whose seq follows `previous`'s, or undefined when it links. */
async function checkEvent(source: AuditChainSource, event: AuditEventRecord, previous: AuditEventRecord | undefined): Promise<AuditChainReport | undefined> {
  const intact = eventHash(event) === event.hash;
  // The first event of a trail kept from a later seq links to what the checkpoint before it
  // signed (checked by the caller), not to an event present.
  const linked = previous ? event.prevHash === previous.hash : event.seq > 1 || event.prevHash === GENESIS_HASH;
  if (intact && linked) return undefined;

  const index = await indexEvents(source);
  if (intact) {
    // The event is self-consistent yet names another predecessor: its own hash was recomputed
    // after it was moved, or the event before it was edited and rehashed (the usual case).
    const linkedTo = index.seqsOfHash.get(event.prevHash)?.find((seq) => seq !== previous?.seq);
    if (linkedTo !== undefined) {
      return problem('reordered', event.seq, event, `its prev_hash is the hash of seq ${linkedTo}, not of seq ${event.seq - 1}`);
    }
    if (!previous) return problem('edited', event.seq, event, `its prev_hash is not the genesis hash and its hash was recomputed`);
    return problem('edited', previous.seq, previous, `its hash was recomputed after an edit: event ${event.seq}'s prev_hash does not match it`);
  }
  if (linked) return problem('edited', event.seq, event, `its stored hash does not match its fields`);

  // Neither its own hash nor its link holds: find the seq these fields were hashed at.
  const original = originalSeq(event, index.maxSeq);
  if (original === undefined) return problem('edited', event.seq, event, `its fields and prev_hash do not match its stored hash`);
  if (original > event.seq && !index.seqsOfHash.has(event.prevHash)) {
    return problem('removed', event.seq, event, `this is event ${original}, renumbered to ${event.seq}: the event(s) before it were removed`);
  }
  return problem('reordered', event.seq, event, `this is event ${original}, moved to seq ${event.seq}`);
}

interface EventIndex {
  seqsOfHash: Map<string, number[]>;
  maxSeq: number;
}

async function indexEvents(source: AuditChainSource): Promise<EventIndex> {
  const seqsOfHash = new Map<string, number[]>();
  let maxSeq = 0;
  for await (const event of source.events()) {
    const seqs = seqsOfHash.get(event.hash);
    if (seqs) seqs.push(event.seq);
    else seqsOfHash.set(event.hash, [event.seq]);
    maxSeq = Math.max(maxSeq, event.seq);
  }
  for (const checkpoint of await source.checkpoints()) maxSeq = Math.max(maxSeq, checkpoint.seq);
  return { seqsOfHash, maxSeq };
}

/** The seq at which these exact fields hash to the stored hash (one pass over 1..maxSeq at most). */
function originalSeq(event: AuditEventRecord, maxSeq: number): number | undefined {
  const hashesAt = (seq: number) => eventHash({ ...event, seq }) === event.hash;
  for (const guess of [event.seq + 1, event.seq - 1]) if (guess >= 1 && hashesAt(guess)) return guess;
  // Past the highest seq seen too: rows renumbered down after a removal come from above it.
  for (let seq = 1; seq <= maxSeq + 1; seq++) if (seq !== event.seq && hashesAt(seq)) return seq;
  return undefined;
}

/** One line for people: the summary of an intact chain or the first problem. */
export function formatAuditReport(report: AuditChainReport): string {
  if (report.ok) {
    const signed = report.lastSignedSeq === null ? 'none signed yet' : `last signed at seq ${report.lastSignedSeq} (${report.lastSignedAt})`;
    return `audit chain intact: ${report.events} events, ${report.checkpoints} signed checkpoints, ${signed}${report.start ? `; ${describeStart(report.start)}` : ''}`;
  }
  const { kind, seq, id, time, detail } = report.problem;
  const event = time ? ` (${id ? `id ${id}, ` : ''}time ${time})` : '';
  return `audit chain broken at seq ${seq}${event}: ${kind}: ${detail}`;
}

function describeStart(start: TrailStart): string {
  const anchor = start.anchored ? `, its first event linked to the checkpoint of seq ${start.seq - 1}` : '';
  if (!start.prunedBy) return `starts at seq ${start.seq} (the events before it are not in what was read)${anchor}`;
  const { seq, time, from, to } = start.prunedBy;
  return `kept from seq ${start.seq}: the events before it were pruned by retention (the last ${PRUNE_ACTION} event, seq ${seq} at ${time}, pruned seq ${from}–${to})${anchor}`;
}
