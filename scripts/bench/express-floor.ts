/**
 * The Express floor: the same request and answer as the HTTP floor (http-floor.ts), served by
 * Express 5 with `express.json()` and one route answering `res.json`, the least an Express
 * service does. Its CPU per request, beside the bare node:http floor's, says how much of a
 * request Express itself costs on this machine, so the service's figures can be read against
 * what any Express service could reach. Forked by scripts/bench.ts; listens on 127.0.0.1,
 * port 0, and reports the port over IPC.
 */
import { createServer } from 'node:http';
import express from 'express';
import { FLOOR_REPLY, serveFloor } from './floor.js';

const app = express();
app.disable('x-powered-by');
app.set('etag', false);
app.post('/api/v1/kms/keys/:keyId/sign', express.json(), (_req, res) => {
  res.json(FLOOR_REPLY);
});

serveFloor(createServer(app));
