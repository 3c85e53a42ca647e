/**
 * One HTTP request with node:http, for tests of connection handling (fetch would hide
 * connection reuse and cut answers): what came back, whether it was complete, and whether the
 * request went out on a reused keep-alive connection.
 */
import http from 'node:http';

export interface Outcome {
  /** Date.now() when the request was made and when it ended (response end or error). */
  startedAt: number;
  endedAt: number;
  status?: number;
  headers?: http.IncomingHttpHeaders;
  body?: string;
  /** Whether response headers had arrived (an error after that is a cut answer). */
  responseStarted: boolean;
  /** The response ended with every byte its Content-Length promised. */
  complete: boolean;
  error?: NodeJS.ErrnoException;
  reusedSocket: boolean;
}

/** One HTTP request with node:http (fetch would hide connection reuse and cut answers). */
export function send(
  base: string,
  agent: http.Agent,
  method: string,
  path: string,
  options: { token?: string; body?: string; parts?: (req: http.ClientRequest) => Promise<void> } = {},
): Promise<Outcome> {
  const url = new URL(path, base);
  const startedAt = Date.now();
  return new Promise<Outcome>((resolve) => {
    const outcome: Outcome = { startedAt, endedAt: 0, responseStarted: false, complete: false, reusedSocket: false };
    const done = (error?: NodeJS.ErrnoException) => {
      if (outcome.endedAt) return;
      outcome.endedAt = Date.now();
      if (error) outcome.error = error;
      resolve(outcome);
    };
    const headers: Record<string, string | number> = {};
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    if (options.body !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = Buffer.byteLength(options.body);
    }
    const req = http.request(url, { method, agent, headers }, (res) => {
      outcome.responseStarted = true;
      outcome.status = res.statusCode;
      outcome.headers = res.headers;
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', (error) => done(error));
      res.on('aborted', () => done(Object.assign(new Error('response aborted'), { code: 'ECONNRESET' })));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        outcome.body = body.toString('utf8');
        const length = res.headers['content-length'];
        outcome.complete = res.complete && (length === undefined || Number(length) === body.length);
        done();
      });
    });
    req.on('socket', () => (outcome.reusedSocket = req.reusedSocket));
    req.on('error', (error) => done(error));
    if (options.parts) void options.parts(req).catch((error: NodeJS.ErrnoException) => done(error));
    else req.end(options.body);
  });
}
