/**
 * Every token object this service makes carries a label with OBJECT_LABEL_PREFIX and a CKA_ID
 * that a store row names (a KMS key version, a CA). At start, after each service has undone
 * its own interrupted work, any object of ours that no row names is destroyed: it was made by
 * a create that crashed before its row was written, and nobody could ever use or find it.
 * Objects of other applications (other labels) are never touched.
 */
import type { Logger } from '../logger.js';
import type { Token } from '../pkcs11/token.js';

export const OBJECT_LABEL_PREFIX = 'hsm-signer:';

export async function destroyOrphanObjects(token: Pick<Token, 'listObjects' | 'destroyObjects'>, knownObjectIds: Iterable<Buffer>, logger: Logger): Promise<number> {
  const known = new Set([...knownObjectIds].map((id) => id.toString('hex')));
  let destroyed = 0;
  for (const object of await token.listObjects(OBJECT_LABEL_PREFIX)) {
    if (known.has(object.id.toString('hex'))) continue;
    logger.warn({ label: object.label }, 'destroying a token object that no row names (left by an interrupted create)');
    await token.destroyObjects(object.id);
    known.add(object.id.toString('hex'));
    destroyed++;
  }
  return destroyed;
}
