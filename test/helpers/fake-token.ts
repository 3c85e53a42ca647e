/**
 * A Token (src/pkcs11/token.ts) in memory, on node:crypto, for fast unit tests of service logic
 * beside the SoftHSM2 integration tests: what the services hand the token (which digest, which
 * scheme, which IV) is recorded in `calls`, and what it answers is real cryptography where
 * node:crypto can do what the token does:
 *
 * - AES-GCM exactly as the token (96-bit IV, 128-bit tag appended; a failed tag is a
 *   TokenError of class 'operation', as SoftHSM2's CKR_GENERAL_ERROR becomes);
 * - RSA PKCS#1 v1.5 over the digest exactly (DigestInfo, then the private-key operation);
 * - pure Ed25519 over the message exactly;
 * - ECDSA: node:crypto cannot sign a digest it is handed, so the fake signs SHA-256 of what it
 *   is handed (raw r || s like CKM_ECDSA): tests check the digest in `calls`, and may verify
 *   the signature as one over that digest (`verify('sha256', digest, ...)`);
 * - RSA-PSS over a digest is not possible in node:crypto: the fake refuses it as a token
 *   without the mechanism would (CKR_MECHANISM_INVALID).
 */
import { createCipheriv, createDecipheriv, generateKeyPairSync, privateEncrypt, publicDecrypt, randomBytes, sign, verify, constants, type KeyObject } from 'node:crypto';
import type { HashName, KeySpec, SignatureScheme } from '../../src/algorithms.js';
import { TokenError } from '../../src/pkcs11/errors.js';
import type { Token, TokenObjectInfo } from '../../src/pkcs11/token.js';

/** DER DigestInfo prefixes (RFC 8017 §9.2 note 1). */
const DIGEST_INFO: Record<HashName, string> = {
  sha256: '3031300d060960864801650304020105000420',
  sha384: '3041300d060960864801650304020205000430',
  sha512: '3051300d060960864801650304020305000440',
};

const CURVES: Record<string, string> = { 'P-256': 'prime256v1', 'P-384': 'secp384r1', 'P-521': 'secp521r1' };

interface FakeObject {
  label: string;
  spec: KeySpec;
  secret?: Buffer;
  privateKey?: KeyObject;
  publicKey?: KeyObject;
}

export interface FakeCall {
  op: 'generateKey' | 'encryptAesGcm' | 'decryptAesGcm' | 'signDigest' | 'verifyDigest' | 'destroyObjects';
  id: string;
  scheme?: SignatureScheme;
  hash?: HashName;
  /** What the service handed in to be signed or verified (a digest, or Ed25519's message). */
  digest?: Buffer;
  iv?: Buffer;
}

const operationError = (message: string, ckr = 'CKR_GENERAL_ERROR') => new TokenError('operation', message, ckr, undefined);

export class FakeToken implements Token {
  readonly calls: FakeCall[] = [];
  private readonly objects = new Map<string, FakeObject>();

  private object(id: Buffer): FakeObject {
    const found = this.objects.get(id.toString('hex'));
    if (!found) throw operationError('no object with this CKA_ID', 'CKR_KEY_HANDLE_INVALID');
    return found;
  }

  async generateKey(id: Buffer, label: string, spec: KeySpec): Promise<{ publicKeySpki?: Buffer }> {
    this.calls.push({ op: 'generateKey', id: id.toString('hex') });
    let made: FakeObject;
    if (spec.kind === 'aes') made = { label, spec, secret: randomBytes(spec.bits / 8) };
    else if (spec.kind === 'rsa') made = { label, spec, ...generateKeyPairSync('rsa', { modulusLength: spec.bits }) };
    else if (spec.kind === 'ec') made = { label, spec, ...generateKeyPairSync('ec', { namedCurve: CURVES[spec.curve]! }) };
    else made = { label, spec, ...generateKeyPairSync('ed25519') };
    this.objects.set(id.toString('hex'), made);
    return made.publicKey ? { publicKeySpki: made.publicKey.export({ type: 'spki', format: 'der' }) } : {};
  }

  async encryptAesGcm(id: Buffer, iv: Buffer, plaintext: Buffer): Promise<Buffer> {
    this.calls.push({ op: 'encryptAesGcm', id: id.toString('hex'), iv });
    const { secret } = this.object(id);
    const cipher = createCipheriv(`aes-${secret!.length * 8}-gcm` as 'aes-256-gcm', secret!, iv);
    return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  }

  async decryptAesGcm(id: Buffer, iv: Buffer, ciphertextAndTag: Buffer): Promise<Buffer> {
    this.calls.push({ op: 'decryptAesGcm', id: id.toString('hex'), iv });
    const { secret } = this.object(id);
    if (ciphertextAndTag.length < 16) throw operationError('ciphertext shorter than the tag');
    const decipher = createDecipheriv(`aes-${secret!.length * 8}-gcm` as 'aes-256-gcm', secret!, iv);
    decipher.setAuthTag(ciphertextAndTag.subarray(ciphertextAndTag.length - 16));
    try {
      return Buffer.concat([decipher.update(ciphertextAndTag.subarray(0, ciphertextAndTag.length - 16)), decipher.final()]);
    } catch (cause) {
      throw new TokenError('operation', 'GCM tag check failed', 'CKR_GENERAL_ERROR', undefined, { cause });
    }
  }

  async signDigest(id: Buffer, scheme: SignatureScheme, hash: HashName, digest: Buffer): Promise<Buffer> {
    this.calls.push({ op: 'signDigest', id: id.toString('hex'), scheme, hash, digest: Buffer.from(digest) });
    const { privateKey } = this.object(id);
    if (scheme === 'pkcs1') return privateEncrypt({ key: privateKey!, padding: constants.RSA_PKCS1_PADDING }, Buffer.concat([Buffer.from(DIGEST_INFO[hash], 'hex'), digest]));
    if (scheme === 'ecdsa') return sign('sha256', digest, { key: privateKey!, dsaEncoding: 'ieee-p1363' });
    if (scheme === 'eddsa') return sign(null, digest, privateKey!);
    throw operationError('RSA-PSS over a given digest is not in the fake token', 'CKR_MECHANISM_INVALID');
  }

  async verifyDigest(id: Buffer, scheme: SignatureScheme, hash: HashName, digest: Buffer, signature: Buffer): Promise<boolean> {
    this.calls.push({ op: 'verifyDigest', id: id.toString('hex'), scheme, hash, digest: Buffer.from(digest) });
    const { publicKey } = this.object(id);
    if (scheme === 'pkcs1') {
      try {
        return publicDecrypt({ key: publicKey!, padding: constants.RSA_PKCS1_PADDING }, signature).equals(Buffer.concat([Buffer.from(DIGEST_INFO[hash], 'hex'), digest]));
      } catch {
        return false;
      }
    }
    if (scheme === 'ecdsa') return verify('sha256', digest, { key: publicKey!, dsaEncoding: 'ieee-p1363' }, signature);
    if (scheme === 'eddsa') return verify(null, digest, publicKey!, signature);
    throw operationError('RSA-PSS over a given digest is not in the fake token', 'CKR_MECHANISM_INVALID');
  }

  async destroyObjects(id: Buffer): Promise<void> {
    this.calls.push({ op: 'destroyObjects', id: id.toString('hex') });
    this.objects.delete(id.toString('hex'));
  }

  async listObjects(labelPrefix: string): Promise<TokenObjectInfo[]> {
    return [...this.objects.entries()].filter(([, object]) => object.label.startsWith(labelPrefix)).map(([id, object]) => ({ id: Buffer.from(id, 'hex'), label: object.label }));
  }

  async ping(): Promise<void> {}

  get poolStats(): Token['poolStats'] {
    return { size: 1, live: 1, busy: 0, idle: 1, waiting: 0, stuck: 0, state: 'up' };
  }

  /** The public key of an object, for verifying with node:crypto. */
  publicKeyOf(id: Buffer): KeyObject {
    return this.object(id).publicKey!;
  }
}
