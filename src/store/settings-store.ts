/** Organisation-wide settings, made once at first start (the org id keys report). */
import type { Store } from './database.js';

/** The stored value, or `create()`'s stored now; whoever inserts first wins, on any replica. */
export async function getOrCreateSetting(store: Store, name: string, create: () => string): Promise<string> {
  await store.db
    .insertInto('settings')
    .values({ name, value: create() })
    .onConflict((conflict) => conflict.column('name').doNothing())
    .execute();
  return (await store.db.selectFrom('settings').select('value').where('name', '=', name).executeTakeFirstOrThrow()).value;
}
