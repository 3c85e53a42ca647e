/** /api/v1/kms: keys and their operations (docs/contract.md, KMS). */
import { Router } from 'express';
import type { KeyAlgorithm, KeyUsage, SigningAlgorithm } from '../../algorithms.js';
import type { CryptoService } from '../../services/crypto-service.js';
import type { KeyService } from '../../services/key-service.js';
import type { KeyListQuery } from '../../store/key-store.js';
import { inputOf, validate } from '../ajv.js';
import { principalOf } from '../request-context.js';
import * as schemas from '../schemas/kms.js';

type KeyParams = { keyId: string };
type SignBody = { signingAlgorithm: SigningAlgorithm; isDigest: boolean; data: string };

const fromBase64 = (value: string) => Buffer.from(value, 'base64');

export function kmsRoutes(deps: { keys: KeyService; crypto: CryptoService }): Router {
  const { keys, crypto } = deps;
  const router = Router();

  // The operations first: the router tries routes in order, and these are nearly every request.
  // No other route matches their paths (key-name is GET only), so the order changes no answer.
  router.post('/keys/:keyId/encrypt', validate({ params: schemas.keyIdParams, body: schemas.encryptBody }), async (_req, res) => {
    const { params, body } = inputOf<KeyParams, {}, { plaintext: string }>(res);
    const ciphertext = await crypto.encrypt(principalOf(res), params.keyId, fromBase64(body.plaintext));
    res.json({ ciphertext: ciphertext.toString('base64') });
  });

  router.post('/keys/:keyId/decrypt', validate({ params: schemas.keyIdParams, body: schemas.decryptBody }), async (_req, res) => {
    const { params, body } = inputOf<KeyParams, {}, { ciphertext: string }>(res);
    const plaintext = await crypto.decrypt(principalOf(res), params.keyId, fromBase64(body.ciphertext));
    res.json({ plaintext: plaintext.toString('base64') });
  });

  router.post('/keys/:keyId/sign', validate({ params: schemas.keyIdParams, body: schemas.signBody }), async (_req, res) => {
    const { params, body } = inputOf<KeyParams, {}, SignBody>(res);
    const signature = await crypto.sign(principalOf(res), params.keyId, { ...body, data: fromBase64(body.data) });
    res.json({ signature: signature.toString('base64'), keyId: params.keyId, signingAlgorithm: body.signingAlgorithm });
  });

  router.post('/keys/:keyId/verify', validate({ params: schemas.keyIdParams, body: schemas.verifyBody }), async (_req, res) => {
    const { params, body } = inputOf<KeyParams, {}, SignBody & { signature: string }>(res);
    const signatureValid = await crypto.verify(principalOf(res), params.keyId, {
      ...body,
      data: fromBase64(body.data),
      signature: fromBase64(body.signature),
    });
    res.json({ signatureValid, keyId: params.keyId, signingAlgorithm: body.signingAlgorithm });
  });

  router.post('/keys', validate({ body: schemas.createKeyBody }), async (_req, res) => {
    const { body } = inputOf<{}, {}, { projectId: string; name: string; description?: string; keyUsage?: KeyUsage; encryptionAlgorithm?: KeyAlgorithm }>(res);
    const key = await keys.create(principalOf(res), body);
    res.locals.auditResourceId = key.id;
    res.json({ key });
  });

  router.get('/keys', validate({ query: schemas.listKeysQuery }), async (_req, res) => {
    const { query } = inputOf<{}, KeyListQuery>(res);
    res.json(await keys.list(principalOf(res), query));
  });

  router.get('/keys/key-name/:keyName', validate({ params: schemas.keyByNameParams, query: schemas.projectQuery }), async (_req, res) => {
    const { params, query } = inputOf<{ keyName: string }, { projectId: string }>(res);
    const key = await keys.getByName(principalOf(res), query.projectId, params.keyName);
    res.locals.auditResourceId = key.id;
    res.json({ key });
  });

  router.get('/keys/:keyId', validate({ params: schemas.keyIdParams }), async (_req, res) => {
    res.json({ key: await keys.get(principalOf(res), inputOf<KeyParams>(res).params.keyId) });
  });

  router.patch('/keys/:keyId', validate({ params: schemas.keyIdParams, body: schemas.updateKeyBody }), async (_req, res) => {
    const { params, body } = inputOf<KeyParams, {}, { name?: string; description?: string; isDisabled?: boolean }>(res);
    res.json({ key: await keys.update(principalOf(res), params.keyId, body) });
  });

  router.delete('/keys/:keyId', validate({ params: schemas.keyIdParams }), async (_req, res) => {
    res.json({ key: await keys.remove(principalOf(res), inputOf<KeyParams>(res).params.keyId) });
  });

  router.post('/keys/:keyId/rotate', validate({ params: schemas.keyIdParams }), async (_req, res) => {
    res.json({ key: await keys.rotate(principalOf(res), inputOf<KeyParams>(res).params.keyId) });
  });

  router.get('/keys/:keyId/public-key', validate({ params: schemas.keyIdParams }), async (_req, res) => {
    const publicKey = await crypto.publicKey(principalOf(res), inputOf<KeyParams>(res).params.keyId);
    res.json({ publicKey: publicKey.toString('base64') });
  });

  router.get('/keys/:keyId/signing-algorithms', validate({ params: schemas.keyIdParams }), async (_req, res) => {
    res.json({ signingAlgorithms: await crypto.signingAlgorithms(principalOf(res), inputOf<KeyParams>(res).params.keyId) });
  });

  return router;
}
