/**
 * The narrow face of the token that services see: generate, encrypt, decrypt, sign, destroy,
 * by CKA_ID. Every call becomes one request to a token thread (token-threads.ts,
 * token-worker.ts), which makes the C_*Init and the operation as blocking calls off the event
 * loop, and keeps the handles (and session copies) of hot keys.
 */
import type { HashName, KeySpec, SignatureScheme } from '../algorithms.js';
import { asBuffer, type TokenRequest } from './token-protocol.js';
import type { TokenThreadPool } from './token-threads.js';

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
  /**
   * Signs a digest (ECDSA: already cut to the curve order); ECDSA returns raw r || s. For
   * `eddsa` the "digest" is the whole message (pure Ed25519) and the signature is R || S.
   */
  signDigest(id: Buffer, scheme: SignatureScheme, hash: HashName, digest: Buffer): Promise<Buffer>;
  /** Verifies a signature over a digest with the key's public half in the token. */
  verifyDigest(id: Buffer, scheme: SignatureScheme, hash: HashName, digest: Buffer, signature: Buffer): Promise<boolean>;
  /** Destroys every object with this CKA_ID; no error when there is none. */
  destroyObjects(id: Buffer): Promise<void>;
  /** Every token object whose label starts with `labelPrefix`. */
  listObjects(labelPrefix: string): Promise<TokenObjectInfo[]>;
  /** A real call on a pooled session, for readiness. */
  ping(timeoutMs?: number): Promise<void>;
  readonly poolStats: TokenThreadPool['stats'];
}

/** Metric labels of the mechanisms a signature scheme and a key generation use. */
const SIGN_MECHANISM: Record<SignatureScheme, string> = { pkcs1: 'CKM_RSA_PKCS', pss: 'CKM_RSA_PKCS_PSS', ecdsa: 'CKM_ECDSA', eddsa: 'CKM_EDDSA' };
const KEYGEN_MECHANISM: Record<KeySpec['kind'], string> = {
  aes: 'CKM_AES_KEY_GEN',
  rsa: 'CKM_RSA_PKCS_KEY_PAIR_GEN',
  ec: 'CKM_EC_KEY_PAIR_GEN',
  ed25519: 'CKM_EC_EDWARDS_KEY_PAIR_GEN',
};
const NO_MECHANISM = 'none';

export interface TokenOptions {
  /** Key generation's bound instead of the pool's acquire timeout (RSA-4096 takes seconds). */
  keyGenerationTimeoutMs: number;
}

/**
 * A request's bytes in a buffer of their own: a message clones a typed array's whole
 * ArrayBuffer, and a small Buffer is often a view into Node's shared 8 KiB pool.
 */
const own = (bytes: Buffer): Uint8Array => (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : new Uint8Array(bytes));

export class Pkcs11Token implements Token {
  constructor(
    private readonly pool: TokenThreadPool,
    private readonly options: TokenOptions,
  ) {}

  get poolStats() {
    return this.pool.stats;
  }

  /** Drops every thread's cached handles and session copies of these objects (a key deleted elsewhere). */
  forgetObjects(ids: Buffer[]): void {
    if (ids.length > 0) this.pool.broadcast({ op: 'forget', ids: ids.map(own) });
  }

  async generateKey(id: Buffer, label: string, spec: KeySpec): Promise<{ publicKeySpki?: Buffer }> {
    const generated = (await this.pool.run({ operation: 'generate', mechanism: KEYGEN_MECHANISM[spec.kind] }, { op: 'generate', id: own(id), label, spec }, this.options.keyGenerationTimeoutMs)) as {
      publicKeySpki?: Uint8Array;
    };
    return generated.publicKeySpki ? { publicKeySpki: asBuffer(generated.publicKeySpki) } : {};
  }

  async encryptAesGcm(id: Buffer, iv: Buffer, plaintext: Buffer): Promise<Buffer> {
    return this.bytes({ operation: 'encrypt', mechanism: 'CKM_AES_GCM' }, { op: 'encrypt', id: own(id), iv: own(iv), data: own(plaintext) });
  }

  async decryptAesGcm(id: Buffer, iv: Buffer, ciphertextAndTag: Buffer): Promise<Buffer> {
    return this.bytes({ operation: 'decrypt', mechanism: 'CKM_AES_GCM' }, { op: 'decrypt', id: own(id), iv: own(iv), data: own(ciphertextAndTag) });
  }

  async signDigest(id: Buffer, scheme: SignatureScheme, hash: HashName, digest: Buffer): Promise<Buffer> {
    return this.bytes({ operation: 'sign', mechanism: SIGN_MECHANISM[scheme] }, { op: 'sign', id: own(id), scheme, hash, digest: own(digest) });
  }

  async verifyDigest(id: Buffer, scheme: SignatureScheme, hash: HashName, digest: Buffer, signature: Buffer): Promise<boolean> {
    const request: TokenRequest = { op: 'verify', id: own(id), scheme, hash, digest: own(digest), signature: own(signature) };
    return (await this.pool.run({ operation: 'verify', mechanism: SIGN_MECHANISM[scheme] }, request)) as boolean;
  }

  async destroyObjects(id: Buffer): Promise<void> {
    // Every thread first drops its copies; the destroy by CKA_ID then takes the token objects
    // and whatever copies are left.
    this.forgetObjects([id]);
    await this.pool.run({ operation: 'destroy', mechanism: NO_MECHANISM }, { op: 'destroy', id: own(id) });
  }

  async listObjects(labelPrefix: string): Promise<TokenObjectInfo[]> {
    const found = (await this.pool.run({ operation: 'list', mechanism: NO_MECHANISM }, { op: 'list', labelPrefix })) as Array<{ id: Uint8Array; label: string }>;
    return found.map((object) => ({ id: asBuffer(object.id), label: object.label }));
  }

  /** Bounded by `timeoutMs` whatever the token does, for a readiness probe. */
  async ping(timeoutMs?: number): Promise<void> {
    await this.pool.run({ operation: 'ping', mechanism: 'CKM_SHA256' }, { op: 'ping' }, timeoutMs);
  }

  private async bytes(label: { operation: string; mechanism: string }, request: TokenRequest): Promise<Buffer> {
    return asBuffer((await this.pool.run(label, request)) as Uint8Array);
  }
}
