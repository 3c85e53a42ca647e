/** What both floors (http-floor.ts, express-floor.ts) answer, and how they are served. */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export type FloorMessage = { type: 'listening'; port: number };

/** The shape of a sign answer. */
export const FLOOR_REPLY = {
  signature: 'MEUCIQDx3k8vJ1nq0mJ2m3m0d8T0qg0B9nq2b1Yw9wA4m7Z0QwIgYk1n3qK0Y8m2v0b5Jd8s1a2Q3r4T5y6U7i8O9p0A1s2=',
  keyId: '00000000-0000-4000-8000-000000000000',
  signingAlgorithm: 'ECDSA_SHA_256',
};

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
