/**
 * The route table (src/http/route-table.ts) is the one place each fact about a route lives:
 * this fails when a route lacks one, when a fact contradicts another (a path parameter its
 * schema does not name, an audited family's authenticated route without an audit action), and
 * when the application's routers serve a route the table does not have, or the reverse.
 */
import { Ajv } from 'ajv';
import type { Express } from 'express';
import { describe, expect, it } from 'vitest';
import { createHttpApp, type HttpDeps } from '../../../src/http/create-app.js';
import { FAMILIES, familyOf, ROUTES, TABLE, type RouteFacts } from '../../../src/http/route-table.js';
import { RESPONSES } from '../../../src/http/schemas/responses.js';
import { ACTIONS } from '../../../src/services/permissions.js';
import { pino } from 'pino';
import { servedRoutes } from '../../helpers/served-routes.js';

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PATCH', 'DELETE']);
const AUTH = new Set(['bearer', 'credentials', 'est', 'acme-jws', 'none']);
const PERMISSIONS = new Set<string>([...ACTIONS, 'admin', 'grantor', 'account', 'none']);
const RESOURCE_TYPES = new Set(['key', 'ca', 'profile', 'certificate', 'identity', 'audit', 'acme-account', 'acme-order']);
/** Every fact a route must state, even when the fact is "none" (null). */
const REQUIRED_FACTS: Array<keyof RouteFacts> = ['family', 'summary', 'auth', 'permission', 'audit', 'metric', 'responses'];

/** The application with stand-ins for its services: building it touches none of them. */
function app(): Express {
  const unused = new Proxy({}, { get: () => () => undefined });
  const deps = {
    logger: pino({ level: 'silent' }),
    bodyLimitBytes: 1024,
    identities: unused,
    keys: unused,
    crypto: unused,
    cas: unused,
    certificates: unused,
    ocsp: unused,
    est: unused,
    audit: unused,
    deniedRequests: unused,
    token: unused,
    readyTimeoutMs: 1000,
    rateLimit: { perIdentityPerSecond: 1, burst: 1, perAddressPerSecond: 1, perAddressBurst: 1 },
    trustedProxies: [],
    loginThrottle: { maxFailuresPerClient: 1, maxFailuresPerAddress: 1, windowSeconds: 1 },
    draining: () => false,
    alive: () => true,
  } as unknown as HttpDeps;
  return createHttpApp(deps);
}

describe('route table', () => {
  it('states every fact of every route', () => {
    const problems: string[] = [];
    for (const { key, method, template, facts } of TABLE) {
      for (const fact of REQUIRED_FACTS) if (!(fact in facts) || facts[fact] === undefined) problems.push(`${key}: no ${fact}`);
      if (!METHODS.has(method)) problems.push(`${key}: method ${method}`);
      const family = FAMILIES[facts.family];
      if (!family) {
        problems.push(`${key}: unknown family ${facts.family}`);
        continue;
      }
      if (!template.startsWith(family.prefix)) problems.push(`${key}: not under its family's prefix ${family.prefix}`);
      if (family.prefix !== '' && familyOf(template) !== facts.family) problems.push(`${key}: its path falls in family ${familyOf(template)}, not ${facts.family}`);
      if (!facts.summary?.trim()) problems.push(`${key}: empty summary`);
      if (!AUTH.has(facts.auth)) problems.push(`${key}: auth ${facts.auth}`);
      if (!PERMISSIONS.has(facts.permission)) problems.push(`${key}: permission ${facts.permission}`);
      if (facts.auth === 'bearer' && facts.permission === 'none') problems.push(`${key}: authenticated but no permission stated`);
      if (facts.audit !== null) {
        const [action, resourceType] = facts.audit;
        if (!/^[a-z]+(?:\.[a-z]+(?:-[a-z]+)*)+$/.test(action)) problems.push(`${key}: audit action ${action}`);
        if (resourceType !== null && !RESOURCE_TYPES.has(resourceType)) problems.push(`${key}: audit resource type ${resourceType}`);
        if (!family.audited) problems.push(`${key}: an audit action in a family that is never audited`);
      } else if (family.audited && facts.auth !== 'none') {
        problems.push(`${key}: a caller with credentials in an audited family, but no audit action`);
      }
      const metric = facts.metric as unknown;
      if (metric !== null && metric !== 'certificates-issued' && metric !== 'ocsp-responses' && !(typeof metric === 'object' && ['encrypt', 'decrypt', 'sign', 'verify'].includes((metric as { kmsOperation: string }).kmsOperation))) {
        problems.push(`${key}: metric ${JSON.stringify(metric)}`);
      }
      const statuses = Object.keys(facts.responses);
      if (!statuses.some((status) => status.startsWith('2'))) problems.push(`${key}: no success answer`);
      for (const [status, answer] of Object.entries(facts.responses)) {
        if (!answer.description) problems.push(`${key}: ${status} without a description`);
        if ('json' in answer && !(answer.json in RESPONSES)) problems.push(`${key}: ${status} names an unknown body ${answer.json}`);
        if ('types' in answer && answer.types.length === 0 && answer.schema !== undefined) problems.push(`${key}: ${status} has a body schema but no media type`);
      }
      // Path parameters: the template's and the schema's are the same names.
      const inPath = [...template.matchAll(/:([A-Za-z0-9_]+)/g)].map((match) => match[1]).sort();
      const inSchema = Object.keys(((facts.params as { properties?: object } | undefined)?.properties ?? {})).sort();
      if (JSON.stringify(inPath) !== JSON.stringify(inSchema)) problems.push(`${key}: path parameters ${inPath} but schema ${inSchema}`);
      if (facts.body !== undefined && facts.rawBody !== undefined) problems.push(`${key}: both a JSON and a raw body`);
      if ((facts.body !== undefined || facts.rawBody !== undefined) && (method === 'GET' || method === 'HEAD')) problems.push(`${key}: a ${method} with a body`);
    }
    expect(problems).toEqual([]);
  });

  it('has schemas ajv compiles', () => {
    const ajv = new Ajv({ strict: false, validateFormats: false });
    ajv.addKeyword('maxDecodedBytes');
    for (const { facts } of TABLE) for (const schema of [facts.params, facts.query, facts.body]) if (schema !== undefined) expect(() => ajv.compile(schema)).not.toThrow();
    for (const schema of Object.values(RESPONSES)) expect(() => ajv.compile(schema)).not.toThrow();
  });

  it('is what the application serves: every route registered from it, none beside it', () => {
    const served = servedRoutes(app());
    const expected = TABLE.map(({ method, facts, template }) => `${method} ${facts.expressPath ? FAMILIES[facts.family].prefix + facts.expressPath : template}`);
    expect([...served].sort()).toEqual([...expected].sort());
    // Each once: two registrations of one route would mean the second is dead code.
    expect(new Set(served).size).toBe(served.length);
    expect(Object.keys(ROUTES).length).toBe(TABLE.length);
  });

  it('names families that match the paths their routes are mounted at', () => {
    expect(familyOf('/api/v1/cert-manager/ocsp/x/y')).toBe('ocsp');
    expect(familyOf('/api/v1/cert-manager/ca/internal')).toBe('certManager');
    expect(familyOf('/api/v1/cert-manager/acme/profiles/x/directory')).toBe('acme');
    expect(familyOf('/api/v1/kms')).toBe('kms');
    expect(familyOf('/api/v1/kmsx')).toBeUndefined();
    expect(familyOf('/healthz')).toBeUndefined();
  });
});
