/**
 * Two replicas started at the same moment on one empty DATA_DIR (the embedded token and the
 * SQLite store in it): they must end with one token, one admin identity, one demo PKI and one
 * admin-credentials.json that works on both, and exactly one of them must run the periodic
 * maintenance. Without the token lock (file-lock.ts) each would create a token of the same
 * label; without the bootstrap lease (services/leases.ts) each would make an admin and a demo
 * PKI.
 */
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { newChildDataDir, startChildService, type ListeningChildService } from '../helpers/child-service.js';
import { login, request } from '../helpers/http.js';
import { parseMetrics } from '../helpers/metrics.js';

const dataDir = newChildDataDir('hsm-signer-start-together-');
let replicas: ListeningChildService[] = [];

beforeAll(async () => {
  const started = await Promise.allSettled([startChildService(dataDir, {}, 120_000), startChildService(dataDir, {}, 120_000)]);
  replicas = started.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []));
  const failed = started.find((result) => result.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
}, 240_000);

afterAll(async () => {
  await Promise.all(replicas.map((replica) => replica.kill()));
  rmSync(dataDir, { recursive: true, force: true });
});

it('made one token', () => {
  expect(readdirSync(join(dataDir, 'softhsm', 'tokens'))).toHaveLength(1);
});

it('made one admin identity and one demo PKI, and the one credentials file works on both replicas', async () => {
  const [a, b] = replicas as [ListeningChildService, ListeningChildService];
  // Both read the same file: whichever replica wrote it, it names the one admin there is.
  expect(a.admin.clientId).toBe(b.admin.clientId);
  const onA = await login(a.url, a.admin);
  const onB = await login(b.url, b.admin);

  const identities = await request(b.url, 'GET', '/api/v1/identities', { token: onB });
  expect(identities.status, JSON.stringify(identities.body)).toBe(200);
  expect((identities.body.identities as unknown[]).length).toBe(1);

  const cas = await request(a.url, 'GET', '/api/v1/cert-manager/ca/internal?projectId=default', { token: onA });
  expect(cas.status, JSON.stringify(cas.body)).toBe(200);
  expect((cas.body.cas as Array<{ type: string }>).map((ca) => ca.type).sort()).toEqual(['intermediate', 'root']);

  const profiles = await request(b.url, 'GET', '/api/v1/cert-manager/certificate-profiles?projectId=default', { token: onB });
  expect(profiles.status, JSON.stringify(profiles.body)).toBe(200);
  expect((profiles.body.certificateProfiles as Array<{ id: string }>).map((profile) => profile.id)).toEqual([a.admin.profileId]);
});

it('has exactly one replica running the periodic maintenance', async () => {
  // Each replica runs a maintenance round as it starts; the lease lets one of them lead.
  const leaders = await Promise.all(
    replicas.map(async (replica) => {
      const response = await fetch(`${replica.url}/metrics`);
      return parseMetrics(await response.text()).get('hsm_signer_maintenance_leader');
    }),
  );
  expect(leaders.sort()).toEqual([0, 1]);
});
