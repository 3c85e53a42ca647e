/**
 * The Express floor: the same request and answer as the HTTP floor (http-floor.ts), served by
 * Express 5 with `express.json()` and one route answering `res.json`, the least an Express
 * service does. Its CPU per request, beside the bare node:http floor's, says how much of a
 * request Express itself costs on this machine, so the service's figures can be read against
 * what any Express service could reach. Forked by scripts/bench.ts; listens on 127.0.0.1,
 * port 0, and reports the port over IPC.
 */
import express from 'express';
import type { AddressInfo } from 'node:net';
import { FLOOR_REPLY } from './floor-reply.js';
import type { FloorMessage } from './http-floor.js';

const app = express();
app.disable('x-powered-by');
app.set('etag', false);
app.post('/api/v1/kms/keys/:keyId/sign', express.json(), (_req, res) => {
  res.json(FLOOR_REPLY);
});

const server = app.listen(0, '127.0.0.1', () => {
  const message: FloorMessage = { type: 'listening', port: (server.address() as AddressInfo).port };
  process.send?.(message);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// Never outlive the benchmark.
process.on('disconnect', () => process.exit(0));
