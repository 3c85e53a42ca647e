/**
 * The PKCS#11 module: loaded once per process, initialized with CKF_OS_LOCKING_OK (the default
 * flags crashed SoftHSM2 under concurrent asynchronous calls), the token found by label or
 * serial (never by slot index, which moves as tokens come and go), and the user logged in once.
 *
 * Login belongs to the application, not to a session, and dies with the last session: the
 * module keeps one "anchor" session open for its whole life, used for nothing else. Every call
 * made while serving runs on a token thread (token-threads.ts), which loads the same library and
 * uses this login. The calls here run on the main thread only at start, while reconnecting
 * after the token failed (nothing is served then), and at shutdown. Nothing here ever calls
 * C_Logout: it would invalidate every private-key handle of the process.
 */
import pkcs11js from 'pkcs11js';
import { TokenError, isCode, toTokenError } from './errors.js';
import type { TokenThreadInit } from './token-protocol.js';

export type Handle = Buffer;

export interface TokenLocation {
  modulePath: string;
  /** CKA token label (as shown by `softhsm2-util --show-slots`). */
  tokenLabel?: string;
  tokenSerial?: string;
}

export interface EmbeddedTokenInit {
  soPin: string;
}

const RW_SESSION = pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION;

/** How much lower than the event loop the token threads run (token-worker.ts says why). */
const TOKEN_THREAD_NICENESS = 10;

export class Pkcs11Module {
  readonly lib: pkcs11js.PKCS11;
  private slot: Handle | undefined;
  private anchor: Handle | undefined;
  private initialized = false;

  constructor(private readonly location: TokenLocation) {
    this.lib = new pkcs11js.PKCS11();
    try {
      this.lib.load(location.modulePath);
    } catch (error) {
      throw new TokenError('unavailable', `Cannot load the PKCS#11 module at ${location.modulePath}`, 'LOAD_FAILED', undefined, { cause: error });
    }
  }

  /** C_Initialize with OS locking; tolerates a module another part of the process initialized. */
  initialize(): void {
    try {
      this.lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    } catch (error) {
      if (!isCode(error, pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED)) throw toTokenError(error, 'C_Initialize');
    }
    this.initialized = true;
  }

  /**
   * Finds the configured token; for the embedded SoftHSM2 default, initializes a free slot with
   * that label when none exists yet (first start). Returns whether a token was created.
   */
  findToken(embedded?: EmbeddedTokenInit & { userPin: string }): boolean {
    const found = this.lookupSlot();
    if (found) {
      this.slot = found;
      return false;
    }
    if (!embedded || !this.location.tokenLabel) {
      const which = this.location.tokenLabel ? `label "${this.location.tokenLabel}"` : `serial "${this.location.tokenSerial}"`;
      throw new TokenError('unavailable', `No token with ${which} in module ${this.location.modulePath}`, 'CKR_TOKEN_NOT_PRESENT', pkcs11js.CKR_TOKEN_NOT_PRESENT);
    }
    const free = this.lib.C_GetSlotList(true).find((slot) => (this.lib.C_GetTokenInfo(slot).flags & pkcs11js.CKF_TOKEN_INITIALIZED) === 0);
    if (!free) throw new TokenError('unavailable', 'No free slot to create the embedded token in', 'CKR_SLOT_ID_INVALID', pkcs11js.CKR_SLOT_ID_INVALID);
    try {
      this.lib.C_InitToken(free, embedded.soPin, this.location.tokenLabel.padEnd(32, ' '));
      // SoftHSM2 moves an initialized token to a new slot id: look it up again by label.
      const slot = this.lookupSlot();
      if (!slot) throw new Error('token vanished after C_InitToken');
      const session = this.lib.C_OpenSession(slot, RW_SESSION);
      try {
        this.lib.C_Login(session, pkcs11js.CKU_SO, embedded.soPin);
        this.lib.C_InitPIN(session, embedded.userPin);
        this.lib.C_Logout(session);
      } finally {
        this.lib.C_CloseSession(session);
      }
      this.slot = slot;
      return true;
    } catch (error) {
      throw toTokenError(error, 'initializing the embedded token');
    }
  }

  private lookupSlot(): Handle | undefined {
    for (const slot of this.lib.C_GetSlotList(true)) {
      const info = this.lib.C_GetTokenInfo(slot);
      if ((info.flags & pkcs11js.CKF_TOKEN_INITIALIZED) === 0) continue;
      if (this.location.tokenLabel !== undefined && info.label.trim() !== this.location.tokenLabel) continue;
      if (this.location.tokenSerial !== undefined && info.serialNumber.trim() !== this.location.tokenSerial) continue;
      return slot;
    }
    return undefined;
  }

  /**
   * Opens the anchor session and logs the user in. A wrong PIN is fatal and is tried once only.
   */
  login(pin: string): void {
    this.anchor = this.openSession();
    try {
      this.lib.C_Login(this.anchor, pkcs11js.CKU_USER, pin);
    } catch (error) {
      if (isCode(error, pkcs11js.CKR_USER_ALREADY_LOGGED_IN)) return;
      throw toTokenError(error, 'C_Login');
    }
  }

  openSession(): Handle {
    if (!this.slot) throw new TokenError('unavailable', 'Token not found yet', 'CKR_TOKEN_NOT_PRESENT', pkcs11js.CKR_TOKEN_NOT_PRESENT);
    try {
      return this.lib.C_OpenSession(this.slot, RW_SESSION);
    } catch (error) {
      throw toTokenError(error, 'C_OpenSession');
    }
  }

  closeSession(session: Handle): void {
    try {
      this.lib.C_CloseSession(session);
    } catch {
      // Closing a session the token already dropped: nothing left to release.
    }
  }

  /** What a token thread needs to open its own sessions on the token this process logged in to. */
  threadInit(): TokenThreadInit {
    if (!this.slot) throw new TokenError('unavailable', 'Token not found yet', 'CKR_TOKEN_NOT_PRESENT', pkcs11js.CKR_TOKEN_NOT_PRESENT);
    return { modulePath: this.location.modulePath, slot: new Uint8Array(this.slot), sessionCopies: true, niceness: TOKEN_THREAD_NICENESS };
  }

  /**
   * After the token failed: drop our sessions, find the token again and log in again.
   * `reinitialize` also finalizes and re-initializes the module (for a module that lost its
   * state); the caller passes it only when no asynchronous call is in flight, since finalizing
   * under a running call crashes the process.
   */
  reconnect(pin: string, reinitialize: boolean): void {
    if (this.anchor) this.closeSession(this.anchor);
    this.anchor = undefined;
    if (reinitialize) {
      try {
        this.lib.C_Finalize();
      } catch {
        // Not initialized any more: fine, we initialize again next.
      }
      this.initialized = false;
      this.initialize();
    }
    let slot: Handle | undefined;
    try {
      slot = this.lookupSlot();
    } catch (error) {
      throw toTokenError(error, 'C_GetSlotList');
    }
    if (!slot) throw new TokenError('unavailable', 'Token not present', 'CKR_TOKEN_NOT_PRESENT', pkcs11js.CKR_TOKEN_NOT_PRESENT);
    this.slot = slot;
    this.login(pin);
  }

  /** Only after every asynchronous call has called back: finalizing under one crashes. */
  finalize(): void {
    if (this.anchor) this.closeSession(this.anchor);
    this.anchor = undefined;
    if (this.initialized) {
      try {
        this.lib.C_Finalize();
      } catch {
        // Already finalized.
      }
      this.initialized = false;
    }
    try {
      this.lib.close();
    } catch {
      // Library already unloaded.
    }
  }
}
