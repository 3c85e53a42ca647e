// Starts a TypeScript worker under tsx: a worker_thread does not inherit the parent's tsx
// loader on Node 20, so it registers tsx itself before importing its entry
// (workerData.entryUrl).
import { workerData } from 'node:worker_threads';

const { register } = await import('tsx/esm/api');
register();
await import(workerData.entryUrl);
