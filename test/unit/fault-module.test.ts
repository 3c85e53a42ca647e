/**
 * Self-test of the fault-injecting PKCS#11 module, through pkcs11js directly (no service): it
 * forwards, injects CKR codes, stalls asynchronous calls without blocking the event loop, and
 * counts calls.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pkcs11js from 'pkcs11js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FAULT_FUNCTION_NAMES, FaultControl, buildFaultModule } from '../helpers/fault-module.js';

const LABEL = 'fault-selftest';
const INPUT = Buffer.from('fault-pkcs11 self-test');
const SHA256 = createHash('sha256').update(INPUT).digest();

let dir: string;
let control: FaultControl;
let lib: pkcs11js.PKCS11;
let slot: Buffer;
const sessions: Buffer[] = [];

function codeOf(call: () => unknown): number | undefined {
  try {
    call();
    return undefined;
  } catch (error) {
    return (error as { code?: number }).code;
  }
}

async function digest(session: Buffer): Promise<Buffer> {
  lib.C_DigestInit(session, { mechanism: pkcs11js.CKM_SHA256 });
  return lib.C_DigestAsync(session, INPUT, Buffer.alloc(32));
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'hsm-signer-fault-selftest-'));
  const tokens = join(dir, 'tokens');
  mkdirSync(tokens);
  writeFileSync(join(dir, 'softhsm2.conf'), `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  process.env.SOFTHSM2_CONF = join(dir, 'softhsm2.conf');
  control = FaultControl.create();
  const modulePath = buildFaultModule();
  lib = new pkcs11js.PKCS11();
  lib.load(modulePath);
  lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  const free = lib.C_GetSlotList(true)[0]!;
  lib.C_InitToken(free, '12345678', LABEL.padEnd(32, ' '));
  // SoftHSM2 gives an initialized token a new slot id.
  slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.trim() === LABEL)!;
  for (let i = 0; i < 4; i++) sessions.push(lib.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION));
});

afterAll(() => {
  control?.dispose();
  if (lib) {
    lib.C_Finalize();
    // dlclose runs the module's destructor, which must stop its polling thread cleanly.
    lib.close();
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('fault-pkcs11', () => {
  it('exports every v2.40 entry point and forwards calls unchanged', async () => {
    expect(FAULT_FUNCTION_NAMES).toHaveLength(68);
    const nm = spawnSync('nm', ['-D', '--defined-only', buildFaultModule()], { encoding: 'utf8' });
    if (!nm.error) {
      const exported = new Set([...nm.stdout.matchAll(/ T (C_\w+)$/gm)].map((m) => m[1]));
      expect(FAULT_FUNCTION_NAMES.filter((name) => !exported.has(name))).toEqual([]);
    }
    expect(lib.C_GetInfo().manufacturerID.trim()).toBe('SoftHSM');
    expect(await digest(sessions[0]!)).toEqual(SHA256);
  });

  it('answers an injected CKR code for its duration, then forwards again', async () => {
    control.inject({ functions: ['C_GetTokenInfo'], ckr: pkcs11js.CKR_DEVICE_ERROR, forMs: 500 });
    expect(codeOf(() => lib.C_GetTokenInfo(slot))).toBe(0x30);
    // Other functions are untouched.
    expect(codeOf(() => lib.C_GetSlotInfo(slot))).toBeUndefined();
    await new Promise((resolve) => setTimeout(resolve, 550));
    expect(lib.C_GetTokenInfo(slot).label.trim()).toBe(LABEL);

    control.inject({ functions: '*', ckr: pkcs11js.CKR_TOKEN_NOT_PRESENT, forMs: 5000 });
    expect(codeOf(() => lib.C_GetSlotList(true))).toBe(0xe0);
    await expect(digest(sessions[0]!)).rejects.toMatchObject({ code: 0xe0 });
    control.clear();
    expect(lib.C_GetSlotList(true).length).toBeGreaterThan(0);
  });

  it('stalls an asynchronous call on the worker threads, not the event loop', async () => {
    const started = Date.now();
    control.inject({ functions: ['C_Digest'], ckr: 'stall', forMs: 300 });
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 10);
    try {
      const results = await Promise.all(sessions.map((session) => digest(session)));
      const elapsed = Date.now() - started;
      for (const result of results) expect(result).toEqual(SHA256);
      expect(elapsed).toBeGreaterThanOrEqual(280);
      // The four stalls ran side by side, not one after another.
      expect(elapsed).toBeLessThan(1000);
      expect(ticks).toBeGreaterThan(10);
    } finally {
      clearInterval(ticker);
    }
  });

  it('ends a stall early when the rule is cleared', async () => {
    const started = Date.now();
    control.inject({ functions: ['C_Digest'], ckr: 'stall', forMs: 10_000 });
    const pending = digest(sessions[0]!);
    await new Promise((resolve) => setTimeout(resolve, 100));
    control.clear();
    expect(await pending).toEqual(SHA256);
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('counts calls per function, faulted ones included, and dumps them without a PKCS#11 call', async () => {
    const before = await control.counts();
    expect(Object.keys(before).sort()).toEqual([...FAULT_FUNCTION_NAMES].sort());
    expect(before.C_GetFunctionList).toBe(1);
    expect(before.C_Initialize).toBe(1);
    lib.C_GetTokenInfo(slot);
    control.inject({ functions: ['C_GetTokenInfo'], ckr: pkcs11js.CKR_DEVICE_ERROR, forMs: 5000 });
    expect(codeOf(() => lib.C_GetTokenInfo(slot))).toBe(0x30);
    const after = await control.counts();
    expect(after.C_GetTokenInfo! - before.C_GetTokenInfo!).toBe(2);
    expect(after.C_Sign).toBe(before.C_Sign);
    control.clear();
  });
});
