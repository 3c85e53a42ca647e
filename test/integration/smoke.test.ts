import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { login, request } from '../helpers/http.js';
import { startTestService, type TestService } from '../helpers/service.js';
import { tokenObjects } from '../helpers/token-objects.js';

describe('service smoke', () => {
  let svc: TestService;
  beforeAll(async () => {
    svc = await startTestService();
  });
  afterAll(async () => {
    await svc?.close();
  });

  it('logs in, creates an AES key and round-trips a ciphertext', async () => {
    const token = await login(svc.url, svc.admin);
    const created = await request(svc.url, 'POST', '/api/v1/kms/keys', { token, body: { projectId: 'default', name: 'smoke' } });
    expect(created.status).toBe(200);
    const keyId = created.body.key.id;
    const enc = await request(svc.url, 'POST', `/api/v1/kms/keys/${keyId}/encrypt`, { token, body: { plaintext: Buffer.from('hi').toString('base64') } });
    expect(enc.status).toBe(200);
    const dec = await request(svc.url, 'POST', `/api/v1/kms/keys/${keyId}/decrypt`, { token, body: { ciphertext: enc.body.ciphertext } });
    expect(Buffer.from(dec.body.plaintext, 'base64').toString()).toBe('hi');
    const objects = tokenObjects(svc);
    const secret = objects.find((o) => o.class === 'secret');
    expect(secret).toMatchObject({ sensitive: true, extractable: false, valueReadable: false });
  });
});
