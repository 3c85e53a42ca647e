/**
 * The CSR threads (src/pki/csr-threads.ts) with real worker threads: the same ReadCsr and the
 * same refusals as parseCsr on the calling thread, and what becomes of requests on a thread that
 * dies, hangs, never loads or answers something unexpected.
 */
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { AppError } from '../../../src/errors.js';
import { CsrThreadPool, startCsrWorker, type CsrThreadPoolOptions } from '../../../src/pki/csr-threads.js';
import { opensslCsrMaker } from '../../helpers/openssl-csr.js';
import { parseCsr, type ReadCsr } from '../../../src/pki/csr.js';

const opensslCsr = opensslCsrMaker('csr-threads-');

const pemOf = (der: Buffer) => `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
const derOf = (pem: string) => Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s/g, ''), 'base64');

const rsa = opensslCsr('rsa', ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'], [
  '-subj', '/CN=api.svc.internal/O=Example, Inc./C=DE',
  '-addext', 'subjectAltName=DNS:api.svc.internal,IP:10.0.0.7,IP:2001:db8::1,email:ops@example.com,URI:spiffe://example/api',
  '-addext', 'keyUsage=critical,digitalSignature,keyEncipherment',
  '-addext', 'extendedKeyUsage=serverAuth,clientAuth',
]);
const p256 = opensslCsr('p256', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'], [
  '-subj', '/CN=sub-ca/OU=a+OU=b',
  '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:1',
  '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
]);
const ed25519 = opensslCsr('ed25519', ['-algorithm', 'ed25519'], ['-subj', '/CN=edwards', '-addext', 'subjectAltName=DNS:edwards.example']);
const ed448 = opensslCsr('ed448', ['-algorithm', 'ed448'], ['-subj', '/CN=unsupported']);

function tamperedSignature(): string {
  const der = derOf(p256);
  der[der.length - 10]! ^= 0x01;
  return pemOf(der);
}

function unreadableKey(): string {
  // A P-384 curve OID whose last byte has the continuation bit: the OID never ends.
  const der = derOf(opensslCsr('badcurve', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'], ['-subj', '/CN=curve']));
  const secp384r1 = Buffer.from('06052b81040022', 'hex');
  const at = der.indexOf(secp384r1);
  der[at + secp384r1.length - 1] = 0x9a;
  return pemOf(der);
}

async function outcome(promise: Promise<ReadCsr>): Promise<ReadCsr | AppError> {
  try {
    return await promise;
  } catch (error) {
    if (error instanceof AppError) return error;
    throw error;
  }
}

const pools: CsrThreadPool[] = [];
afterEach(async () => {
  await Promise.all(pools.splice(0).map((pool) => pool.close()));
});

/** A pool whose threads are recorded; `first` replaces the thread started first (a misbehaving one). */
function poolOf(options: Partial<CsrThreadPoolOptions> & { first?: () => Worker } = {}) {
  const workers: Worker[] = [];
  const failures: Error[] = [];
  let first = options.first;
  const pool = new CsrThreadPool({
    size: 1,
    onThreadFailure: (error) => failures.push(error),
    ...options,
    startWorker: () => {
      const start = first ?? startCsrWorker;
      first = undefined;
      const worker = start();
      workers.push(worker);
      return worker;
    },
  });
  pools.push(pool);
  return { pool, workers, failures };
}

/** A thread made of a few lines, posting `ready` and doing `onMessage` with each request. */
const scriptWorker = (onMessage: string, ready = true) => () =>
  new Worker(`const { parentPort } = require('node:worker_threads'); parentPort.on('message', (request) => { ${onMessage} }); ${ready ? 'parentPort.postMessage({ ready: true });' : ''}`, { eval: true });

/** The answers the threads post, as they start (the list fills as threads come). */
function repliesOf(workers: Worker[]): Array<{ ok?: boolean; refusal?: unknown }> {
  const replies: Array<{ ok?: boolean; refusal?: unknown }> = [];
  const seen = new Set<Worker>();
  const watch = () => {
    for (const worker of workers) {
      if (seen.has(worker)) continue;
      seen.add(worker);
      worker.on('message', (reply: { ok?: boolean; refusal?: unknown }) => replies.push(reply));
    }
  };
  watch();
  const push = workers.push.bind(workers);
  workers.push = (...added: Worker[]) => {
    const length = push(...added);
    watch();
    return length;
  };
  return replies;
}

const waitFor = async (condition: () => boolean, ms = 5000) => {
  const until = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > until) throw new Error('timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
};

describe('CSR threads', () => {
  it('give the same ReadCsr as parseCsr for RSA, P-256 (a CA request) and Ed25519 CSRs, with real Buffers', async () => {
    const { pool, workers } = poolOf({ size: 2 });
    const replies = repliesOf(workers);
    for (const pem of [rsa, p256, ed25519]) {
      const expected = await parseCsr(pem);
      const read = await pool.parse(pem);
      expect(read).toEqual(expected);
      expect(Buffer.isBuffer(read.subjectDer) && Buffer.isBuffer(read.publicKeySpki)).toBe(true);
      expect(read.subjectDer.equals(expected.subjectDer)).toBe(true);
      expect(read.publicKeySpki.equals(expected.publicKeySpki)).toBe(true);
      // Views on the transferred arrays, not on a pool slab or a copy.
      expect(read.subjectDer.buffer.byteLength).toBe(read.subjectDer.length);
    }
    expect(workers).toHaveLength(2);
    // Answered by the threads, not parsed again here.
    expect(replies.filter((reply) => reply.ok === true)).toHaveLength(3);
    expect((await pool.parse(rsa)).sans).toEqual(expect.arrayContaining([{ type: 'ip', value: '2001:db8::1' }]));
  });

  it('refuse what parseCsr refuses, with the same AppError (kind, status, message, envelope)', async () => {
    const { pool, workers } = poolOf();
    const replies = repliesOf(workers);
    const refusals = ['hello', '', tamperedSignature(), unreadableKey(), ed448, pemOf(Buffer.from('3003020100', 'hex'))];
    for (const pem of refusals) {
      const expected = await outcome(parseCsr(pem));
      expect(expected).toBeInstanceOf(AppError);
      const got = await outcome(pool.parse(pem));
      expect(got).toBeInstanceOf(AppError);
      const [a, b] = [expected as AppError, got as AppError];
      expect([b.kind, b.name, b.statusCode, b.message, b.retryAfterSeconds]).toEqual([a.kind, a.name, a.statusCode, a.message, a.retryAfterSeconds]);
      expect(b.envelope()).toEqual(a.envelope());
      expect(b.statusCode).toBe(400);
    }
    expect(replies.filter((reply) => reply.refusal !== undefined)).toHaveLength(refusals.length);
    const messages = await Promise.all(refusals.map((pem) => outcome(pool.parse(pem)).then((error) => (error as AppError).message)));
    expect(messages).toEqual(
      expect.arrayContaining([
        'The csr is not a PEM-encoded PKCS#10 certificate signing request',
        'The CSR signature is invalid (no proof of possession of the private key)',
        'The CSR public key cannot be read',
        'The CSR public key type ed448 is not supported (RSA, EC or Ed25519 only)',
      ]),
    );
  });

  it('send each request to the least busy thread', async () => {
    const { pool, workers } = poolOf({ size: 2 });
    await waitFor(() => workers.length === 2);
    const posted = workers.map(() => 0);
    workers.forEach((worker, i) => {
      const post = worker.postMessage.bind(worker);
      worker.postMessage = (message: unknown) => {
        posted[i]!++;
        post(message);
      };
    });
    const results = await Promise.all([rsa, p256, ed25519, rsa].map((pem) => pool.parse(pem)));
    expect(results.map((csr) => csr.keyAlgorithm.kind)).toEqual(['rsa', 'ec', 'ed25519', 'rsa']);
    expect(posted).toEqual([2, 2]);
    expect(pool.stats.inFlight).toBe(0);
  });

  it('a thread that dies fails its requests with a 503, and the next request runs on a new thread', async () => {
    const { pool, workers, failures } = poolOf();
    await pool.parse(p256);
    const dying = workers[0]!;
    // The request never reaches the thread, so it is certainly in flight when the thread dies.
    dying.postMessage = () => undefined;
    const inFlight = outcome(pool.parse(rsa));
    expect(pool.stats.inFlight).toBe(1);
    await dying.terminate();
    const refused = (await inFlight) as AppError;
    expect(refused).toBeInstanceOf(AppError);
    expect([refused.statusCode, refused.kind, refused.message, refused.retryAfterSeconds]).toEqual([503, 'ServiceUnavailable', 'The CSR could not be checked: the thread reading it stopped; retry shortly', 1]);
    expect(await pool.parse(ed25519)).toEqual(await parseCsr(ed25519));
    expect(workers).toHaveLength(2);
    expect(pool.stats).toMatchObject({ threads: 1, inFlight: 0, terminating: 0 });
    expect(failures.map((error) => error.message)).toEqual([expect.stringMatching(/CSR thread exited/)]);
  });

  it('a thread that hangs: its request gets a 503 at the deadline, the thread is terminated and replaced', async () => {
    const { pool, workers } = poolOf({ timeoutMs: 300, first: scriptWorker('for (;;);') });
    await waitFor(() => workers.length === 1);
    const exited = new Promise((resolve) => workers[0]!.once('exit', resolve));
    const started = Date.now();
    const refused = (await outcome(pool.parse(rsa))) as AppError;
    expect(refused).toBeInstanceOf(AppError);
    expect([refused.statusCode, refused.message]).toEqual([503, 'The CSR was not checked within 300 ms; retry shortly']);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    await exited;
    expect(await pool.parse(rsa)).toEqual(await parseCsr(rsa));
    expect(workers).toHaveLength(2);
    expect(pool.stats).toMatchObject({ threads: 1, inFlight: 0, terminating: 0 });
  });

  it('a thread that never loads: its requests are parsed here (never a 503 or 500 for them), and its slot starts again later', async () => {
    const { pool, workers, failures } = poolOf({ first: scriptWorker('', false) });
    const dead = workers[0]!;
    dead.postMessage = () => undefined;
    const read = pool.parse(p256);
    const refused = outcome(pool.parse('hello'));
    // Swallowed requests are answered once the thread exits: make it exit.
    expect(pool.stats.inFlight).toBe(2);
    await dead.terminate();
    expect(await read).toEqual(await parseCsr(p256));
    expect(((await refused) as AppError).message).toBe('The csr is not a PEM-encoded PKCS#10 certificate signing request');
    // Meanwhile, with no thread, the calling thread parses.
    expect(pool.stats.threads).toBe(0);
    expect(await pool.parse(ed25519)).toEqual(await parseCsr(ed25519));
    await waitFor(() => pool.stats.threads === 1);
    expect(await pool.parse(rsa)).toEqual(await parseCsr(rsa));
    expect(workers).toHaveLength(2);
    expect(failures).toHaveLength(1);
  });

  it('an unexpected failure on the thread gets the answer the calling thread gives', async () => {
    const { pool } = poolOf({ first: scriptWorker("parentPort.postMessage({ seq: request.seq, ok: false, unexpected: 'boom' })") });
    expect(await pool.parse(rsa)).toEqual(await parseCsr(rsa));
    expect(((await outcome(pool.parse(tamperedSignature()))) as AppError).message).toBe('The CSR signature is invalid (no proof of possession of the private key)');
  });

  it('size 0 parses on the calling thread and starts no thread', async () => {
    const { pool, workers } = poolOf({ size: 0 });
    expect(await pool.parse(ed25519)).toEqual(await parseCsr(ed25519));
    expect(((await outcome(pool.parse('hello'))) as AppError).statusCode).toBe(400);
    expect(workers).toHaveLength(0);
    expect(pool.stats.threads).toBe(0);
  });

  it('close ends the threads, fails what they held with a 503, and later CSRs are parsed here', async () => {
    const { pool, workers } = poolOf();
    await pool.parse(rsa);
    workers[0]!.postMessage = () => undefined;
    const inFlight = outcome(pool.parse(rsa));
    const exited = new Promise((resolve) => workers[0]!.once('exit', resolve));
    await pool.close();
    await exited;
    expect(((await inFlight) as AppError).statusCode).toBe(503);
    expect(pool.stats).toMatchObject({ threads: 0, inFlight: 0, terminating: 0 });
    expect(await pool.parse(p256)).toEqual(await parseCsr(p256));
    expect(workers).toHaveLength(1);
  });
});
