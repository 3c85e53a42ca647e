/**
 * src/http/express-prototypes.ts: a server built with its classes hands Express requests and
 * responses whose prototype already is `app.request` / `app.response`, so Express's switch is a
 * no-op, and everything Express puts on them (its own and the application's) still works.
 * A real server on port 0, a real HTTP client.
 */
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, get as httpGet, type Server } from 'node:http';
import { get as httpsGet } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import express, { type Request, type Response } from 'express';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { listener } from '../../../src/app.js';
import type { Config } from '../../../src/config/schema.js';
import { expressServerClasses } from '../../../src/http/express-prototypes.js';
import { openssl } from '../../helpers/cli.js';

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))));
});

/** Listens on 127.0.0.1, port 0 (closed after the test); resolves with the base URL. */
async function listen(server: Server, scheme: 'http' | 'https'): Promise<string> {
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `${scheme}://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** One route that reports what Express gave it; `withClasses` false serves it the stock way. */
async function serve(withClasses: boolean): Promise<{ url: string; prototypes: Array<{ request: boolean; response: boolean }> }> {
  const app = express();
  const prototypes: Array<{ request: boolean; response: boolean }> = [];
  const classes = withClasses ? expressServerClasses(app) : {};
  app.post('/things/:id', express.json(), (req: Request, res: Response) => {
    res
      .status(201)
      .set('X-Seen', req.get('x-probe') ?? 'none')
      .json({ id: req.params.id, path: req.path, query: req.query, body: req.body as unknown, app: req.app === app && res.app === app, protocol: req.protocol });
  });
  app.use((req: Request, res: Response) => res.status(404).send(`no ${req.path}`));
  const server = createServer(classes, (req, res) => {
    // Seen before Express switches anything: is the prototype the one Express will set?
    prototypes.push({ request: Object.getPrototypeOf(req) === app.request, response: Object.getPrototypeOf(res) === app.response });
    app(req, res);
  });
  return { url: await listen(server, 'http'), prototypes };
}

const tlsDir = mkdtempSync(join(tmpdir(), 'express-prototypes-'));
afterAll(() => rmSync(tlsDir, { recursive: true, force: true }));

/** GET over HTTP or HTTPS (a throwaway self-signed certificate); resolves with the status. */
function getStatus(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const done = (response: { statusCode?: number; resume(): void }) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    };
    const request = url.startsWith('https:') ? httpsGet(url, { rejectUnauthorized: false }, done) : httpGet(url, done);
    request.on('error', reject);
  });
}

describe('expressServerClasses', () => {
  it("the service's own listener builds its requests and responses with them, over HTTP and HTTPS", async () => {
    const certFile = join(tlsDir, 'cert.pem');
    const keyFile = join(tlsDir, 'key.pem');
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', '/CN=localhost');
    for (const tls of [null, { certFile, keyFile, clientCaFile: null, requestClientCertificate: false }]) {
      const app = express();
      const prototypes: boolean[] = [];
      app.get('/probe', (_req: Request, res: Response) => res.json({ ok: true }));
      const config = { server: { tls } } as unknown as Pick<Config, 'server'>;
      const server = listener(config, expressServerClasses(app), (req, res) => {
        // Before Express runs: built from the classes, not switched afterwards.
        prototypes.push(Object.getPrototypeOf(req) === app.request && Object.getPrototypeOf(res) === app.response);
        app(req, res);
      });
      const base = await listen(server, tls ? 'https' : 'http');
      expect(await getStatus(`${base}/probe`)).toBe(200);
      expect(prototypes).toEqual([true]);
    }
  });

  it('builds requests and responses whose prototype is already the one Express sets', async () => {
    const { url, prototypes } = await serve(true);
    const response = await fetch(`${url}/things/7?a=b`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-probe': 'yes' }, body: '{"n":1}' });
    expect(response.status).toBe(201);
    expect(response.headers.get('x-seen')).toBe('yes');
    expect(await response.json()).toEqual({ id: '7', path: '/things/7', query: { a: 'b' }, body: { n: 1 }, app: true, protocol: 'http' });
    expect(prototypes).toEqual([{ request: true, response: true }]);
  });

  it('the stock server hands Express objects it must switch (what the classes avoid)', async () => {
    const { url, prototypes } = await serve(false);
    const response = await fetch(`${url}/things/7?a=b`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"n":1}' });
    expect(response.status).toBe(201);
    expect(prototypes).toEqual([{ request: false, response: false }]);
  });

  it('keeps Express answering what no route takes', async () => {
    const { url } = await serve(true);
    const response = await fetch(`${url}/elsewhere`);
    expect(response.status).toBe(404);
    expect(await response.text()).toBe('no /elsewhere');
  });

  it('leaves an application whose prototypes are built some other way as it is', () => {
    const app = express();
    const foreign = Object.create(null) as object;
    (app as { request: object }).request = foreign;
    expect(expressServerClasses(app)).toEqual({});
    expect(app.request).toBe(foreign);
  });
});
