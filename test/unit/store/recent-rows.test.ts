import { describe, expect, it } from 'vitest';
import { recentRows } from '../../../src/store/recent-rows.js';

/** A store of one row per id whose reads can be held open, and a clock the test moves. */
function fixture() {
  const stored = new Map<string, string>([['a', 'v1']]);
  let clock = 1_000;
  let reads = 0;
  let hold: Promise<void> | undefined;
  const rows = recentRows(
    async (id) => {
      reads++;
      const value = stored.get(id);
      await hold;
      return value;
    },
    500,
    () => clock,
  );
  return {
    rows,
    stored,
    reads: () => reads,
    advance: (ms: number) => (clock += ms),
    holdReads(): () => void {
      let release!: () => void;
      hold = new Promise((resolve) => (release = resolve));
      return () => {
        hold = undefined;
        release();
      };
    },
  };
}

describe('recentRows', () => {
  it('serves a row from memory only while it is younger than the bound, then reads it again', async () => {
    const f = fixture();
    expect(await f.rows.get('a')).toBe('v1');
    f.stored.set('a', 'v2'); // another process writes
    f.advance(499);
    expect(await f.rows.get('a')).toBe('v1');
    expect(f.reads()).toBe(1);
    f.advance(1);
    expect(await f.rows.get('a')).toBe('v2');
    expect(f.reads()).toBe(2);
  });

  it('forgets at once what this process wrote', async () => {
    const f = fixture();
    await f.rows.get('a');
    f.stored.set('a', 'v2');
    f.rows.forget('a');
    expect(await f.rows.get('a')).toBe('v2');
  });

  it('does not keep a read that overlapped a write, which may have seen the row before it', async () => {
    const f = fixture();
    const release = f.holdReads();
    const overlapping = f.rows.get('a'); // reads v1, then the write and its forget happen
    f.stored.set('a', 'v2');
    f.rows.forget('a');
    release();
    expect(await overlapping).toBe('v1');
    expect(await f.rows.get('a')).toBe('v2');
    expect(f.reads()).toBe(2);
  });

  it('keeps no answer for a row that is not there, so one made later is found at once', async () => {
    const f = fixture();
    expect(await f.rows.get('b')).toBeUndefined();
    f.stored.set('b', 'new');
    expect(await f.rows.get('b')).toBe('new');
  });
});

describe('recentRows writing', () => {
  it('forgets the row after the write, and after a write that failed too', async () => {
    const stored = new Map([['a', 'v1']]);
    const rows = recentRows(async (id) => stored.get(id), 500, () => 0);
    expect(await rows.get('a')).toBe('v1');
    expect(await rows.writing('a', async () => (stored.set('a', 'v2'), 'done'))).toBe('done');
    expect(await rows.get('a')).toBe('v2');
    await expect(
      rows.writing('a', async () => {
        stored.set('a', 'v3');
        throw new Error('refused after writing');
      }),
    ).rejects.toThrow('refused after writing');
    expect(await rows.get('a')).toBe('v3');
  });
});
