/** /api/v1/kms: keys and their operations (docs/contract.md, KMS). */
import { Router } from 'express';
import type { CryptoService } from '../../services/crypto-service.js';
import type { KeyService } from '../../services/key-service.js';
import { principalOf } from '../request-context.js';
import { on } from '../route.js';

const fromBase64 = (value: string) => Buffer.from(value, 'base64');

export function kmsRoutes(deps: { keys: KeyService; crypto: CryptoService }): Router {
  const { keys, crypto } = deps;
  const router = Router();

  // The operations first: the router tries routes in order, and these are nearly every request.
  // No other route matches their paths (key-name is GET only), so the order changes no answer.
  on(router, 'POST /api/v1/kms/keys/:keyId/encrypt', async ({ params, body }, res) => {
    const ciphertext = await crypto.encrypt(principalOf(res), params.keyId, fromBase64(body.plaintext));
    res.json({ ciphertext: ciphertext.toString('base64') });
  });

  on(router, 'POST /api/v1/kms/keys/:keyId/decrypt', async ({ params, body }, res) => {
    const plaintext = await crypto.decrypt(principalOf(res), params.keyId, fromBase64(body.ciphertext));
    res.json({ plaintext: plaintext.toString('base64') });
  });

  on(router, 'POST /api/v1/kms/keys/:keyId/sign', async ({ params, body }, res) => {
    const signature = await crypto.sign(principalOf(res), params.keyId, { ...body, data: fromBase64(body.data) });
    res.json({ signature: signature.toString('base64'), keyId: params.keyId, signingAlgorithm: body.signingAlgorithm });
  });

  on(router, 'POST /api/v1/kms/keys/:keyId/verify', async ({ params, body }, res) => {
    const signatureValid = await crypto.verify(principalOf(res), params.keyId, {
      ...body,
      data: fromBase64(body.data),
      signature: fromBase64(body.signature),
    });
    res.json({ signatureValid, keyId: params.keyId, signingAlgorithm: body.signingAlgorithm });
  });

  on(router, 'POST /api/v1/kms/keys', async ({ body }, res) => {
    const key = await keys.create(principalOf(res), body);
    res.locals.auditResourceId = key.id;
    res.json({ key });
  });

  on(router, 'GET /api/v1/kms/keys', async ({ query }, res) => {
    res.json(await keys.list(principalOf(res), query));
  });

  on(router, 'GET /api/v1/kms/keys/key-name/:keyName', async ({ params, query }, res) => {
    const key = await keys.getByName(principalOf(res), query.projectId, params.keyName);
    res.locals.auditResourceId = key.id;
    res.json({ key });
  });

  on(router, 'GET /api/v1/kms/keys/:keyId', async ({ params }, res) => {
    res.json({ key: await keys.get(principalOf(res), params.keyId) });
  });

  on(router, 'PATCH /api/v1/kms/keys/:keyId', async ({ params, body }, res) => {
    res.json({ key: await keys.update(principalOf(res), params.keyId, body) });
  });

  on(router, 'DELETE /api/v1/kms/keys/:keyId', async ({ params }, res) => {
    res.json({ key: await keys.remove(principalOf(res), params.keyId) });
  });

  on(router, 'POST /api/v1/kms/keys/:keyId/rotate', async ({ params }, res) => {
    res.json({ key: await keys.rotate(principalOf(res), params.keyId) });
  });

  on(router, 'GET /api/v1/kms/keys/:keyId/public-key', async ({ params }, res) => {
    const publicKey = await crypto.publicKey(principalOf(res), params.keyId);
    res.json({ publicKey: publicKey.toString('base64') });
  });

  on(router, 'GET /api/v1/kms/keys/:keyId/signing-algorithms', async ({ params }, res) => {
    res.json({ signingAlgorithms: await crypto.signingAlgorithms(principalOf(res), params.keyId) });
  });

  return router;
}
