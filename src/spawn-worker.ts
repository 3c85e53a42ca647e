/**
 * Starts a worker thread from a module beside the caller, in whichever form the caller runs:
 * compiled JavaScript under dist/ (production), or TypeScript source under src/ when the tests
 * and the benchmark run the code through tsx.
 *
 * Node 20 does not pass tsx's loader hooks on to worker threads (only its command-line flags,
 * which load tsx again in each worker for ~250 ms, longer than a stuck thread's replacement may
 * take). So a TypeScript entry is bundled once per
 * process with esbuild (a development dependency, never loaded in production) into one
 * JavaScript file under node_modules/.cache (so its packages resolve from the project's
 * node_modules), whose workers then start in milliseconds like compiled ones.
 *
 * `spawnWorker(import.meta.url, 'token-worker', …)` starts `token-worker.js` next to a compiled
 * caller, or a bundle of `token-worker.ts` next to a source one.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker, type WorkerOptions } from 'node:worker_threads';

const bundles = new Map<string, URL>();
let bundleDir: string | undefined;

function bundleOf(entry: URL): URL {
  const known = bundles.get(entry.href);
  if (known) return known;
  // Loaded lazily and from the caller's tree: production never reaches this line.
  const require = createRequire(entry);
  const esbuild = require('esbuild') as typeof import('esbuild');
  if (!bundleDir) {
    const cache = join(dirname(dirname(require.resolve('esbuild/package.json'))), '.cache', 'hsm-signer-workers');
    mkdirSync(cache, { recursive: true });
    bundleDir = mkdtempSync(join(cache, `${process.pid}-`));
    const dir = bundleDir;
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  const outfile = join(bundleDir, `${bundles.size}-${fileURLToPath(entry).split('/').pop()!.replace(/\.ts$/, '.mjs')}`);
  esbuild.buildSync({
    entryPoints: [fileURLToPath(entry)],
    outfile,
    bundle: true,
    // node_modules stay where they are (native addons such as pkcs11js cannot be bundled).
    packages: 'external',
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'silent',
  });
  const url = pathToFileURL(outfile);
  bundles.set(entry.href, url);
  return url;
}

export function spawnWorker(callerUrl: string, moduleName: string, options: WorkerOptions = {}): Worker {
  const source = callerUrl.endsWith('.ts');
  const entry = new URL(`./${moduleName}.${source ? 'ts' : 'js'}`, callerUrl);
  if (!source) return new Worker(entry, options);
  // Workers inherit the parent's execArgv, which under tsx loads tsx again in every worker
  // (~250 ms each, for nothing: the bundle is plain JavaScript).
  return new Worker(bundleOf(entry), { execArgv: [], ...options });
}
