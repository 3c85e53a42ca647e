/**
 * The Express floor: the HTTP floor's own handler (floor.ts, answerFloorRequest) as the one
 * route of an Express 5 application, served as the service serves its own (with
 * src/http/express-prototypes.ts), so the difference between the two floors is what Express
 * itself adds to a request (its router, its request and response decoration) and nothing an
 * application chooses. Its CPU per request, beside the bare node:http floor's, bounds what any
 * Express service could reach on this machine (README, "Benchmark", says what it leaves out).
 * Forked by scripts/bench.ts; listens on 127.0.0.1, port 0, and reports the port over IPC.
 */
import { createServer } from 'node:http';
import express from 'express';
import { expressServerClasses } from '../../src/http/express-prototypes.js';
import { answerFloorRequest, serveFloor } from './floor.js';

const app = express();
app.disable('x-powered-by');
app.set('etag', false);
app.post('/api/v1/kms/keys/:keyId/sign', (req, res) => answerFloorRequest(req, res));

serveFloor(createServer(expressServerClasses(app), app));
