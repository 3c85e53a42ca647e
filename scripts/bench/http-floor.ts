/**
 * The HTTP floor: a bare node:http server that does the least any JSON signing endpoint must
 * do (read the body, JSON.parse it, answer a small fixed JSON), so that the service's figures
 * for cheap operations can be read against what Node's HTTP stack alone reaches on this
 * machine. Forked by scripts/bench.ts; listens on 127.0.0.1, port 0, and reports the port
 * over IPC.
 */
import { createServer } from 'node:http';
import { FLOOR_REPLY, serveFloor } from './floor.js';

export type { FloorMessage } from './floor.js';

const REPLY = JSON.stringify(FLOOR_REPLY);
const REPLY_BYTES = Buffer.byteLength(REPLY);

const server = createServer((req, res) => {
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
});

serveFloor(server);
