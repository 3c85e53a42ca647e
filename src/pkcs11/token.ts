/**
 * The narrow face of the token that services see: generate, encrypt, decrypt, sign, destroy,
 * by CKA_ID. Every cryptographic call runs asynchronously on a pooled session (libuv's thread
 * pool does the work, the event loop stays free); only the C_*Init calls, which have no
 * asynchronous form, run on the calling thread.
 *
 * Key handles are cached by CKA_ID: a find on every request would cost more than a P-256
 * signature. The cached handle names a session copy of the key (C_CopyObject with CKA_TOKEN
 * false, on the anchor session, still sensitive and non-extractable): SoftHSM2 reads a token
 * object back from its store on every use, and the copy made P-256 signing 1.6x faster here.
 * A token that refuses copies gets its token handles cached instead. Handles go stale when the
 * token restarts, so the cache is cleared when the pool recovers, and a call that meets a
 * stale handle looks it up (and copies it) once more. Destroying a key's objects by CKA_ID
 * destroys its copies with it.
 */
import { createPublicKey } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import { CURVE_ORDER_BYTES, type EcCurve, type HashName, type KeySpec, type SignatureScheme } from '../algorithms.js';
import { TokenError, isCode, toTokenError } from './errors.js';
import { aesGcmMechanism, GCM_TAG_BYTES, signRequest } from './mechanisms.js';
import type { Handle, Pkcs11Module } from './module.js';
import type { SessionPool } from './session-pool.js';
import { EC_PARAMS, aesKeyTemplate, byIdTemplate, privateKeyTemplate, publicKeyTemplate, keyObjectTemplate, type KeyObjectClass } from './templates.js';

export interface TokenObjectInfo {
  id: Buffer;
  label: string;
}

export interface Token {
  /** Generates a key in the token; for a key pair, returns the public key as DER SubjectPublicKeyInfo. */
  generateKey(id: Buffer, label: string, spec: KeySpec): Promise<{ publicKeySpki?: Buffer }>;
  /** AES-GCM with a 96-bit IV and 128-bit tag, no AAD: returns ciphertext || tag. */
  encryptAesGcm(id: Buffer, iv: Buffer, plaintext: Buffer): Promise<Buffer>;
  /** Inverse of encryptAesGcm. A failed tag is a TokenError of class 'operation'. */
  decryptAesGcm(id: Buffer, iv: Buffer, ciphertextAndTag: Buffer): Promise<Buffer>;
  /** Signs a digest (ECDSA: already cut to the curve order); ECDSA returns raw r || s. */
  signDigest(id: Buffer, scheme: SignatureScheme, hash: HashName, digest: Buffer): Promise<Buffer>;
  /** Verifies a signature over a digest with the key's public half in the token. */
  verifyDigest(id: Buffer, scheme: SignatureScheme, hash: HashName, digest: Buffer, signature: Buffer): Promise<boolean>;
  /** Destroys every object with this CKA_ID; no error when there is none. */
  destroyObjects(id: Buffer): Promise<void>;
  /** Every token object whose label starts with `labelPrefix`. */
  listObjects(labelPrefix: string): Promise<TokenObjectInfo[]>;
  /** A real call on a pooled session, for readiness. */
  ping(timeoutMs?: number): Promise<void>;
  readonly poolStats: SessionPool['stats'];
}

/** Largest signature the service's keys make: RSA-4096 is 512 bytes, P-521 raw r||s is 132. */
const SIGNATURE_BUFFER_BYTES = 512;
const PING_INPUT = Buffer.from('hsm-signer readiness');

/** Metric labels of the mechanisms a signature scheme and a key generation use. */
const SIGN_MECHANISM: Record<SignatureScheme, string> = { pkcs1: 'CKM_RSA_PKCS', pss: 'CKM_RSA_PKCS_PSS', ecdsa: 'CKM_ECDSA' };
const KEYGEN_MECHANISM: Record<KeySpec['kind'], string> = { aes: 'CKM_AES_KEY_GEN', rsa: 'CKM_RSA_PKCS_KEY_PAIR_GEN', ec: 'CKM_EC_KEY_PAIR_GEN' };
const NO_MECHANISM = 'none';

export interface TokenOptions {
  /** Key generation's bound instead of the pool's acquire timeout (RSA-4096 takes seconds). */
  keyGenerationTimeoutMs: number;
  /** A token that refuses C_CopyObject gets its token handles cached instead. */
  sessionCopies?: boolean;
}

export class Pkcs11Token implements Token {
  private readonly handles = new Map<string, Handle>();

  private sessionCopies: boolean;

  constructor(
    private readonly module: Pkcs11Module,
    private readonly pool: SessionPool,
    private readonly options: TokenOptions,
  ) {
    this.sessionCopies = options.sessionCopies ?? true;
  }

  get poolStats() {
    return this.pool.stats;
  }

  /** The pool calls this after reconnecting: every cached handle may now name nothing. */
  forgetHandles(): void {
    this.handles.clear();
  }

  async generateKey(id: Buffer, label: string, spec: KeySpec): Promise<{ publicKeySpki?: Buffer }> {
    const lib = this.module.lib;
    const generation = { operation: 'generate', mechanism: KEYGEN_MECHANISM[spec.kind] };
    return this.pool.withSession(generation, async (session) => {
      if (spec.kind === 'aes') {
        const key = await lib.C_GenerateKeyAsync(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, aesKeyTemplate(id, label, spec.bits));
        this.handles.set(handleKey(id, 'secret'), this.hotHandle(key));
        return {};
      }
      const mechanism = { mechanism: spec.kind === 'rsa' ? pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN : pkcs11js.CKM_EC_KEY_PAIR_GEN };
      const pair = await lib.C_GenerateKeyPairAsync(session, mechanism, publicKeyTemplate(id, label, spec), privateKeyTemplate(id, label, spec.kind));
      this.handles.set(handleKey(id, 'private'), this.hotHandle(pair.privateKey));
      this.handles.set(handleKey(id, 'public'), this.hotHandle(pair.publicKey));
      return { publicKeySpki: this.readPublicKey(session, pair.publicKey, spec.kind) };
    }, this.options.keyGenerationTimeoutMs);
  }

  private readPublicKey(session: Handle, publicKey: Handle, kind: 'rsa' | 'ec'): Buffer {
    const lib = this.module.lib;
    if (kind === 'rsa') {
      const [modulus, exponent] = lib.C_GetAttributeValue(session, publicKey, [{ type: pkcs11js.CKA_MODULUS }, { type: pkcs11js.CKA_PUBLIC_EXPONENT }]);
      return createPublicKey({
        key: { kty: 'RSA', n: (modulus!.value as Buffer).toString('base64url'), e: (exponent!.value as Buffer).toString('base64url') },
        format: 'jwk',
      }).export({ type: 'spki', format: 'der' });
    }
    const [params, point] = lib.C_GetAttributeValue(session, publicKey, [{ type: pkcs11js.CKA_EC_PARAMS }, { type: pkcs11js.CKA_EC_POINT }]);
    return ecSpki(params!.value as Buffer, unwrapOctetString(point!.value as Buffer));
  }

  async encryptAesGcm(id: Buffer, iv: Buffer, plaintext: Buffer): Promise<Buffer> {
    const lib = this.module.lib;
    return this.pool.withSession({ operation: 'encrypt', mechanism: 'CKM_AES_GCM' }, async (session) => {
      this.initWithFreshHandle(id, 'secret', (key) => lib.C_EncryptInit(session, aesGcmMechanism(iv), key));
      const output = Buffer.allocUnsafe(plaintext.length + GCM_TAG_BYTES);
      // SoftHSM2 rejects an empty C_Encrypt input (CKR_ARGUMENTS_BAD); C_EncryptFinal alone
      // yields the tag of the empty message, which is the same ciphertext.
      if (plaintext.length === 0) return lib.C_EncryptFinalAsync(session, output);
      return lib.C_EncryptAsync(session, plaintext, output);
    });
  }

  async decryptAesGcm(id: Buffer, iv: Buffer, ciphertextAndTag: Buffer): Promise<Buffer> {
    const lib = this.module.lib;
    return this.pool.withSession({ operation: 'decrypt', mechanism: 'CKM_AES_GCM' }, async (session) => {
      this.initWithFreshHandle(id, 'secret', (key) => lib.C_DecryptInit(session, aesGcmMechanism(iv), key));
      return lib.C_DecryptAsync(session, ciphertextAndTag, Buffer.allocUnsafe(Math.max(ciphertextAndTag.length, 1)));
    });
  }

  async signDigest(id: Buffer, scheme: SignatureScheme, hash: HashName, digest: Buffer): Promise<Buffer> {
    const lib = this.module.lib;
    const request = signRequest(scheme, hash, digest);
    return this.pool.withSession({ operation: 'sign', mechanism: SIGN_MECHANISM[scheme] }, async (session) => {
      this.initWithFreshHandle(id, 'private', (key) => lib.C_SignInit(session, request.mechanism, key));
      return lib.C_SignAsync(session, request.input, Buffer.allocUnsafe(SIGNATURE_BUFFER_BYTES));
    });
  }

  async verifyDigest(id: Buffer, scheme: SignatureScheme, hash: HashName, digest: Buffer, signature: Buffer): Promise<boolean> {
    const lib = this.module.lib;
    const request = signRequest(scheme, hash, digest);
    return this.pool.withSession({ operation: 'verify', mechanism: SIGN_MECHANISM[scheme] }, async (session) => {
      this.initWithFreshHandle(id, 'public', (key) => lib.C_VerifyInit(session, request.mechanism, key));
      try {
        return await lib.C_VerifyAsync(session, request.input, signature);
      } catch (error) {
        // C_Verify ends the operation whatever it answers, so the session stays usable.
        if (isCode(error, pkcs11js.CKR_SIGNATURE_INVALID) || isCode(error, pkcs11js.CKR_SIGNATURE_LEN_RANGE)) return false;
        throw error;
      }
    });
  }

  async destroyObjects(id: Buffer): Promise<void> {
    for (const objectClass of ['private', 'public', 'secret'] as const) this.handles.delete(handleKey(id, objectClass));
    await this.pool.withSession({ operation: 'destroy', mechanism: NO_MECHANISM }, (session) => {
      for (const object of this.find(session, byIdTemplate(id))) this.module.lib.C_DestroyObject(session, object);
    });
  }

  async listObjects(labelPrefix: string): Promise<TokenObjectInfo[]> {
    const lib = this.module.lib;
    return this.pool.withSession({ operation: 'list', mechanism: NO_MECHANISM }, (session) => {
      const found: TokenObjectInfo[] = [];
      for (const object of this.find(session, [{ type: pkcs11js.CKA_TOKEN, value: true }])) {
        const [idAttr, labelAttr] = lib.C_GetAttributeValue(session, object, [{ type: pkcs11js.CKA_ID }, { type: pkcs11js.CKA_LABEL }]);
        const label = (labelAttr?.value as Buffer | undefined)?.toString('utf8') ?? '';
        if (label.startsWith(labelPrefix)) found.push({ id: idAttr?.value as Buffer, label });
      }
      return found;
    });
  }

  /** Bounded by `timeoutMs` whatever the token does, for a readiness probe. */
  async ping(timeoutMs?: number): Promise<void> {
    await this.pool.withSession({ operation: 'ping', mechanism: 'CKM_SHA256' }, async (session) => {
      this.module.lib.C_GetSessionInfo(session);
      // One asynchronous call too, so a token that stalls shows up here as well.
      this.module.lib.C_DigestInit(session, { mechanism: pkcs11js.CKM_SHA256 });
      await this.module.lib.C_DigestAsync(session, PING_INPUT, Buffer.allocUnsafe(32));
    }, timeoutMs);
  }

  /**
   * Runs a C_*Init with the cached handle for `id`; on a stale handle, finds the object again
   * and retries once. C_*Init leaves no operation active when it fails, so retrying on the same
   * session is safe.
   */
  private initWithFreshHandle(id: Buffer, objectClass: KeyObjectClass, init: (key: Handle) => void): void {
    const cacheKey = handleKey(id, objectClass);
    const cached = this.handles.get(cacheKey);
    if (cached) {
      try {
        init(cached);
        return;
      } catch (error) {
        if (toTokenError(error, 'C_*Init').errorClass !== 'stale-handle') throw error;
        this.handles.delete(cacheKey);
      }
    }
    const key = this.hotHandle(this.findKey(id, objectClass));
    init(key);
    this.handles.set(cacheKey, key);
  }

  private findKey(id: Buffer, objectClass: KeyObjectClass): Handle {
    const [key] = this.find(this.module.anchorSession, keyObjectTemplate(id, objectClass));
    if (!key) throw new TokenError('operation', `No ${objectClass} key with CKA_ID ${id.toString('hex')} in the token`, 'KEY_NOT_FOUND', undefined);
    return key;
  }

  /** A session copy of a token object, living as long as the anchor session (see above). */
  private hotHandle(tokenObject: Handle): Handle {
    if (!this.sessionCopies) return tokenObject;
    try {
      return this.module.lib.C_CopyObject(this.module.anchorSession, tokenObject, [{ type: pkcs11js.CKA_TOKEN, value: false }]);
    } catch (error) {
      const failure = toTokenError(error, 'C_CopyObject');
      if (failure.errorClass === 'unavailable') throw failure;
      // This token will not copy this object (CKA_COPYABLE false, say), or copies nothing.
      if (failure.code === pkcs11js.CKR_FUNCTION_NOT_SUPPORTED) this.sessionCopies = false;
      return tokenObject;
    }
  }

  private find(session: Handle, template: pkcs11js.Template): Handle[] {
    const lib = this.module.lib;
    lib.C_FindObjectsInit(session, template);
    try {
      const found: Handle[] = [];
      for (;;) {
        const batch = lib.C_FindObjects(session, 64);
        if (batch.length === 0) return found;
        found.push(...batch);
      }
    } finally {
      lib.C_FindObjectsFinal(session);
    }
  }
}

const handleKey = (id: Buffer, objectClass: KeyObjectClass) => `${objectClass}:${id.toString('hex')}`;

/** CKA_EC_POINT is a DER OCTET STRING around the uncompressed point (PKCS#11 v2.40 §2.3.3). */
function unwrapOctetString(der: Buffer): Buffer {
  if (der[0] !== 0x04) return der;
  const first = der[1]!;
  if (first < 0x80) return der.subarray(2, 2 + first);
  const lengthBytes = first & 0x7f;
  const length = der.subarray(2, 2 + lengthBytes).reduce((acc, byte) => acc * 256 + byte, 0);
  return der.subarray(2 + lengthBytes, 2 + lengthBytes + length);
}

const CURVE_OF_PARAMS = new Map(Object.entries(EC_PARAMS).map(([curve, der]) => [der.toString('hex'), curve as EcCurve]));

function ecSpki(params: Buffer, point: Buffer): Buffer {
  const curve = CURVE_OF_PARAMS.get(params.toString('hex'));
  const bytes = curve ? CURVE_ORDER_BYTES[curve] : 0;
  if (!curve || point[0] !== 0x04 || point.length !== 1 + 2 * bytes) {
    throw new TokenError('operation', 'The token returned an EC public key in an unexpected form', 'BAD_PUBLIC_KEY', undefined);
  }
  return createPublicKey({
    key: {
      kty: 'EC',
      crv: curve,
      x: point.subarray(1, 1 + bytes).toString('base64url'),
      y: point.subarray(1 + bytes).toString('base64url'),
    },
    format: 'jwk',
  }).export({ type: 'spki', format: 'der' });
}
