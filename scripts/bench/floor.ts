/** What both floors (http-floor.ts, express-floor.ts) answer, and how they are served. */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type FloorMessage = { type: 'listening'; port: number };

/** The shape of a sign answer. */
const FLOOR_REPLY = {
  signature: 'MEUCIQDx3k8vJ1nq0mJ2m3m0d8T0qg0B9nq2b1Yw9wA4m7Z0QwIgYk1n3qK0Y8m2v0b5Jd8s1a2Q3r4T5y6U7i8O9p0A1s2=',
  keyId: '00000000-0000-4000-8000-000000000000',
  signingAlgorithm: 'ECDSA_SHA_256',
};

const REPLY = JSON.stringify(FLOOR_REPLY);
const REPLY_BYTES = Buffer.byteLength(REPLY);

/**
 * The least any JSON signing endpoint must do: read the body, JSON.parse it, answer a small
 * fixed JSON (or a 400 when the body is not a JSON object).
 */
export function answerFloorRequest(req: IncomingMessage, res: ServerResponse): void {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      parsed = undefined;
    }
    if (typeof parsed !== 'object' || parsed === null) {
      res.writeHead(400, { 'content-type': 'application/json; charset=utf-8' }).end('{"error":"Bad Request"}');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': REPLY_BYTES });
    res.end(REPLY);
  });
}

/**
 * Listens on 127.0.0.1, port 0, tells the benchmark the port over IPC, stops on a signal, and
 * never outlives the benchmark.
 */
export function serveFloor(server: Server): void {
  server.listen(0, '127.0.0.1', () => {
    const message: FloorMessage = { type: 'listening', port: (server.address() as AddressInfo).port };
    process.send?.(message);
  });
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('disconnect', () => process.exit(0));
}
