/**
 * Reads a request body of a stated Content-Length straight off the socket, for the lean body
 * readers (JSON in create-app.ts, OCSP's DER in routes/ocsp.ts) that skip body-parser's
 * per-request set-up for the requests every client sends. Calls back once: with the bytes, or
 * with why they could not be read (the client went away, or sent another length than stated).
 */
import type { IncomingMessage } from 'node:http';

export function readStatedLength(req: IncomingMessage, expected: number, callback: (error: Error | undefined, body: Buffer) => void): void {
  const chunks: Buffer[] = [];
  let received = 0;
  const done = (error?: unknown) => {
    req.off('data', onData);
    req.off('end', onEnd);
    req.off('aborted', onAborted);
    req.off('error', done);
    if (error !== undefined) return callback(error instanceof Error ? error : new Error(String(error)), Buffer.alloc(0));
    const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, received);
    if (body.length !== expected) return callback(new Error('request size did not match content length'), body);
    callback(undefined, body);
  };
  const onData = (chunk: Buffer) => {
    received += chunk.length;
    chunks.push(chunk);
  };
  const onEnd = () => done();
  const onAborted = () => done(new Error('request aborted'));
  req.on('data', onData);
  req.on('end', onEnd);
  req.on('aborted', onAborted);
  req.on('error', done);
}
