/**
 * The HTTP floor: a bare node:http server that does the least any JSON signing endpoint must
 * do (floor.ts, answerFloorRequest), so that the service's figures for cheap operations can be
 * read against what Node's HTTP stack alone reaches on this machine. Forked by
 * scripts/bench.ts; listens on 127.0.0.1, port 0, and reports the port over IPC.
 */
import { createServer } from 'node:http';
import { answerFloorRequest, serveFloor } from './floor.js';

export type { FloorMessage } from './floor.js';

serveFloor(createServer(answerFloorRequest));
