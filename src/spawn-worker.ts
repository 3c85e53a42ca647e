/**
 * Starts a worker thread from a module beside the caller, in whichever form the caller runs:
 * compiled JavaScript under dist/ (production), or TypeScript source under src/ when the tests
 * and the benchmark run the code through tsx. Node 20 does not pass tsx's loader on to worker
 * threads, so a TypeScript entry is reached through a tiny bootstrap that registers tsx inside
 * the worker first; tsx is a development dependency and is never loaded in production.
 *
 * `spawnWorker(import.meta.url, 'token-worker', …)` starts `token-worker.js` next to a compiled
 * caller, or `token-worker.ts` next to a source one.
 */
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker, type WorkerOptions } from 'node:worker_threads';

const TS_BOOTSTRAP = `
const { workerData } = require('node:worker_threads');
import(workerData.__tsxApi).then(({ register }) => {
  register();
  return import(workerData.__entry);
});
`;

export function spawnWorker(callerUrl: string, moduleName: string, options: WorkerOptions = {}): Worker {
  const source = callerUrl.endsWith('.ts');
  const entry = new URL(`./${moduleName}.${source ? 'ts' : 'js'}`, callerUrl);
  if (!source) return new Worker(entry, options);
  // The ESM form of tsx's API (the CommonJS one cannot register from here), found beside the
  // CommonJS one that require.resolve names.
  const tsxApi = pathToFileURL(createRequire(callerUrl).resolve('tsx/esm/api').replace(/\.cjs$/, '.mjs')).href;
  const workerData = { ...(options.workerData as object | undefined), __entry: entry.href, __tsxApi: tsxApi };
  return new Worker(TS_BOOTSTRAP, { ...options, eval: true, workerData });
}
