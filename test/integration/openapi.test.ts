/**
 * GET /api/docs/openapi.json and GET /api/docs on a running service:
 *
 * - the document is the one made from the route table, and passes an independent OpenAPI 3.1
 *   validator (@seriousme/openapi-schema-validator, the OpenAPI Initiative's JSON schemas);
 * - its operations are exactly the routes the running application's routers serve (read from
 *   Express's router stack), and a live request to each reaches a route (never "no such route");
 * - the reference page renders in headless Chromium (Debian's `chromium`) from files the
 *   service serves itself, with every operation in the DOM; a screenshot is kept under
 *   test-artifacts/ (git ignores it).
 *
 * That live answers match the document is checked on every answer of every integration test
 * that uses test/helpers/http.ts (openapi-recorder.ts), this file's included.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Validator } from '@seriousme/openapi-schema-validator';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildOpenApi, openApiPath } from '../../src/http/openapi.js';
import { FAMILIES, TABLE } from '../../src/http/route-table.js';
import { login, request } from '../helpers/http.js';
import { servedRoutes } from '../helpers/served-routes.js';
import { startTestService, type TestService } from '../helpers/service.js';

const run = promisify(execFile);
const ARTIFACTS = join(import.meta.dirname, '..', '..', 'test-artifacts');

let svc: TestService;
let token: string;

beforeAll(async () => {
  svc = await startTestService();
  token = await login(svc.url, svc.admin);
});

afterAll(async () => {
  await svc?.close();
});

type Document = { openapi: string; paths: Record<string, Record<string, { operationId: string; summary: string }>> };

const operationsOf = (document: Document) => Object.entries(document.paths).flatMap(([path, item]) => Object.keys(item).map((method) => `${method.toUpperCase()} ${path}`));

describe('OpenAPI document', () => {
  it('is served as made from the route table, and passes an OpenAPI 3.1 validator', async () => {
    const response = await fetch(`${svc.url}/api/docs/openapi.json`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    const document = (await response.json()) as Document;
    expect(document).toEqual(JSON.parse(JSON.stringify(buildOpenApi())));
    expect(document.openapi).toBe('3.1.0');

    const validator = new Validator();
    const result = await validator.validate(document as unknown as Parameters<Validator['validate']>[0]);
    expect(result.errors ?? [], JSON.stringify(result.errors)).toEqual([]);
    expect(result.valid).toBe(true);
    expect(validator.version).toBe('3.1');
  });

  it('has exactly the routes the running application serves', async () => {
    const document = (await (await fetch(`${svc.url}/api/docs/openapi.json`)).json()) as Document;
    const app = svc.service.app;
    // Express paths to the document's: parameters in braces, a wildcard as the parameter it is.
    const served = servedRoutes(app).map((route) => {
      const [method, path] = route.split(' ') as [string, string];
      return `${method} ${openApiPath(path.replace(/\*([A-Za-z0-9_]+)/, ':$1'))}`;
    });
    expect(new Set(served).size).toBe(served.length);
    expect([...served].sort()).toEqual(operationsOf(document).sort());
    expect(operationsOf(document).length).toBe(TABLE.length);
  });

  it('names routes a live request reaches: none of them is "no such route"', async () => {
    const document = (await (await fetch(`${svc.url}/api/docs/openapi.json`)).json()) as Document;
    const reached: string[] = [];
    for (const operation of operationsOf(document)) {
      const [method, template] = operation.split(' ') as [string, string];
      const path = template.replace(/\{([^}]+)\}/g, (_, name: string) => (name === 'file' ? 'start.js' : name === 'request' ? 'MAo%3D' : randomUUID()));
      const body = method === 'GET' || method === 'HEAD' || method === 'DELETE' ? undefined : {};
      const answer = await request(svc.url, method, path, { token, body });
      // The app's own "no such route" (envelope), or the ACME router's (a problem document).
      const noRoute = answer.status === 404 && ((typeof answer.body?.message === 'string' && answer.body.message.startsWith('Route ')) || (typeof answer.body?.detail === 'string' && answer.body.detail.startsWith('No ACME resource')));
      if (!noRoute) reached.push(operation);
    }
    expect(reached.sort()).toEqual(operationsOf(document).sort());
  });
});

describe('API reference page', () => {
  it('is an HTML page whose scripts and styles the service serves itself', async () => {
    const page = await fetch(`${svc.url}/api/docs`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    const csp = page.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toMatch(/https?:/);
    const html = await page.text();
    const sources = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((match) => match[1]!);
    expect(sources.length).toBeGreaterThanOrEqual(3);
    for (const source of sources) {
      expect(source.startsWith('/api/docs/')).toBe(true);
      const asset = await fetch(`${svc.url}${source}`);
      expect(asset.status, source).toBe(200);
      expect((await asset.arrayBuffer()).byteLength, source).toBeGreaterThan(0);
    }
  });

  it('renders every route in headless Chromium, offline', async () => {
    const profile = mkdtempSync(join(tmpdir(), 'chromium-'));
    mkdirSync(ARTIFACTS, { recursive: true });
    const screenshot = join(ARTIFACTS, 'api-docs.png');
    rmSync(screenshot, { force: true });
    const common = [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      `--user-data-dir=${profile}`,
      // Only the service is reachable: a page that fetched anything else would render without it.
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
      '--proxy-server=direct://',
      '--virtual-time-budget=15000',
      '--window-size=1280,4000',
    ];
    try {
      const { stdout: dom } = await run('chromium', [...common, '--dump-dom', `${svc.url}/api/docs`], { maxBuffer: 64 * 1024 * 1024, timeout: 90_000 });
      const document = buildOpenApi() as unknown as Document;
      const shown = [...dom.matchAll(/class="opblock-summary-path"[^>]*data-path="([^"]+)"/g)].map((match) => match[1]!);
      const methods = [...dom.matchAll(/class="opblock-summary-method">([A-Z]+)</g)].map((match) => match[1]!);
      expect(new Set(shown)).toEqual(new Set(Object.keys(document.paths)));
      expect(methods.length).toBe(TABLE.length);
      // The tags (one per route family with routes) are the sections of the page.
      for (const family of new Set(TABLE.map((route) => route.facts.family))) expect(dom).toContain(FAMILIES[family].tag.replace(/&/g, '&amp;'));
      expect(dom).toContain('hsm-signer');

      await run('chromium', [...common, `--screenshot=${screenshot}`, `${svc.url}/api/docs`], { timeout: 90_000 });
      expect(statSync(screenshot).size).toBeGreaterThan(10_000);
    } finally {
      rmSync(profile, { recursive: true, force: true });
    }
  }, 240_000);
});
