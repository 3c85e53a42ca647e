/**
 * Rows by id that the request path may take from memory when this process read them at most
 * `maxAgeMs` before, whichever process wrote the store: the bound holds on the request path
 * itself (an older row is read again before it is used), so no timer has to be on time.
 * This process's own writes `forget` the row at once; a read that overlapped such a write is
 * not kept (it may have seen the row before the write).
 */
export interface RecentRows<T> {
  get(id: string): Promise<T | undefined>;
  forget(id: string): void;
  /** Runs this process's write of row `id`, then forgets the row, whether the write succeeded or not. */
  writing<R>(id: string, write: () => Promise<R>): Promise<R>;
}

/** Rows kept at most; past it the oldest read goes (it is simply read again when next used). */
const RECENT_ROWS_LIMIT = 1000;

export function recentRows<T>(read: (id: string) => Promise<T | undefined>, maxAgeMs: number, now: () => number = Date.now): RecentRows<T> {
  const rows = new Map<string, { value: T; readAt: number }>();
  /** Raised by every forget: a read that began before one is not kept. */
  let forgets = 0;
  const forget = (id: string) => {
    forgets++;
    rows.delete(id);
  };
  return {
    async get(id) {
      const readAt = now();
      const kept = rows.get(id);
      if (kept && readAt - kept.readAt < maxAgeMs) return kept.value;
      const forgetsBefore = forgets;
      const value = await read(id);
      if (value === undefined || forgets !== forgetsBefore) {
        rows.delete(id);
        return value;
      }
      rows.delete(id);
      if (rows.size >= RECENT_ROWS_LIMIT) rows.delete(rows.keys().next().value!);
      rows.set(id, { value, readAt });
      return value;
    },
    forget,
    async writing(id, write) {
      try {
        return await write();
      } finally {
        forget(id);
      }
    },
  };
}
