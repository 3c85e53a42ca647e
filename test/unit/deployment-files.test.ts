/**
 * The files users deploy with: docker-compose.yml (two replicas on PostgreSQL behind HAProxy,
 * with Prometheus), config/compose/haproxy.cfg, config/compose/prometheus.yml and
 * softhsm/Dockerfile. No container engine runs here, so they are parsed and checked against
 * what the service needs: the settings it reads (src/config), the files it opens at run time
 * (enumerated from src/), and each other (ports, networks, the subnet HAProxy connects from).
 *
 * Every check returns the list of problems it found, so the same checks run on deliberately
 * broken copies of the files below: each breakage must be reported, or the check is worthless.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadConfig } from '../../src/config/load.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

const REPLICAS = ['hsm-signer-a', 'hsm-signer-b'] as const;
const POSTGRES = 'postgres';
const LOAD_BALANCER = 'load-balancer';
const PROMETHEUS = 'prometheus';
const DOCKERFILE = 'softhsm/Dockerfile';

// Parsed YAML, checked field by field.
type Json = any;

// ---------------------------------------------------------------------------------------------
// docker-compose.yml, normalized (compose accepts a short and a long form of most fields)

/** Compose's YAML: 1.2, with anchors and `<<` merge keys; duplicate keys are an error. */
function parseCompose(text: string): Json {
  return parse(text, { merge: true, uniqueKeys: true });
}

function environmentOf(service: Json): Record<string, string> {
  const env = service?.environment ?? {};
  if (Array.isArray(env)) {
    return Object.fromEntries(
      env.map((entry: string) => {
        const eq = entry.indexOf('=');
        return eq < 0 ? [entry, ''] : [entry.slice(0, eq), entry.slice(eq + 1)];
      }),
    );
  }
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v === null ? '' : String(v)]));
}

function volumesOf(service: Json): { source: string; target: string }[] {
  return (service?.volumes ?? []).map((v: Json) => {
    if (typeof v === 'string') {
      const [source = '', target = ''] = v.split(':');
      return { source, target };
    }
    return { source: String(v.source ?? ''), target: String(v.target ?? '') };
  });
}

function networksOf(service: Json): string[] {
  const networks = service?.networks;
  if (!networks) return ['default'];
  return Array.isArray(networks) ? networks.map(String) : Object.keys(networks);
}

function portsOf(service: Json): { hostIp: string; published: string; target: string }[] {
  return (service?.ports ?? []).map((p: Json) => {
    if (typeof p === 'object') return { hostIp: String(p.host_ip ?? ''), published: String(p.published ?? ''), target: String(p.target ?? '') };
    const parts = String(p).split(':');
    if (parts.length === 3) return { hostIp: parts[0]!, published: parts[1]!, target: parts[2]! };
    if (parts.length === 2) return { hostIp: '', published: parts[0]!, target: parts[1]! };
    return { hostIp: '', published: '', target: parts[0]! };
  });
}

function dependsOn(service: Json): Record<string, string> {
  const deps = service?.depends_on ?? {};
  if (Array.isArray(deps)) return Object.fromEntries(deps.map((name: string) => [name, 'service_started']));
  return Object.fromEntries(Object.entries(deps).map(([name, d]) => [name, String((d as Json)?.condition ?? 'service_started')]));
}

function healthcheckCommand(service: Json): string {
  const test = service?.healthcheck?.test;
  return Array.isArray(test) ? test.join(' ') : String(test ?? '');
}

function subnetsOf(compose: Json, network: string): string[] {
  return (compose.networks?.[network]?.ipam?.config ?? []).map((c: Json) => String(c?.subnet ?? ''));
}

/** Compose's variable syntax, for the values the service will see: ${V}, ${V:-d}, ${V-d}, ${V:?e}, ${V?e}, $$. */
function interpolate(value: string, env: Record<string, string | undefined>): string {
  return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)([-?])([^}]*))?\}/g, (whole, name: string | undefined, colon: string, op: string, arg: string) => {
    if (whole === '$$') return '$';
    const v = env[name!];
    const missing = v === undefined || (colon === ':' && v === '');
    if (!missing) return v!;
    if (op === '-') return arg;
    if (op === '?') throw new Error(`${name}: ${arg}`);
    return '';
  });
}

/** A value that is nothing but a reference to a variable set outside the file. */
const VARIABLE_REFERENCE = /^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[?-][^}]*)?\}$/;
/** Names whose values are secrets and so must never be literal in the file. */
const SECRET_NAME = /PASSWORD|SECRET|(^|_)PIN$/;
const DATABASE_URL = /^postgres(?:ql)?:\/\/([^:@/]+):(\$\{[^}]+\})@([^:/]+):(\d+)\/([^?/]+)$/;

/** A compose or HAProxy duration ("20s", "1m30s", "500ms", or a number: ms for HAProxy) in ms. */
function durationMs(value: unknown, unitless: 'ms' | 's'): number | undefined {
  if (value === undefined || value === null) return undefined;
  const text = String(value).trim();
  if (/^\d+$/.test(text)) return Number(text) * (unitless === 's' ? 1000 : 1);
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== text) return undefined;
  for (const [, n, unit] of parts) total += Number(n) * units[unit!]!;
  return total;
}

/** The replicas' shutdown delay and grace period, as the service reads them (defaults included). */
function shutdownOf(env: Record<string, string>): { delayMs: number; graceMs: number } {
  const server = loadConfig({}, { SHUTDOWN_DELAY_MS: env.SHUTDOWN_DELAY_MS, SHUTDOWN_GRACE_MS: env.SHUTDOWN_GRACE_MS }).server;
  return { delayMs: server.shutdownDelayMs, graceMs: server.shutdownGraceMs };
}

function composeProblems(compose: Json): string[] {
  const problems: string[] = [];
  const services = compose?.services ?? {};
  const namedVolumes = new Set(Object.keys(compose?.volumes ?? {}));
  for (const name of [POSTGRES, ...REPLICAS, LOAD_BALANCER, PROMETHEUS]) {
    if (!services[name]) problems.push(`service ${name} is missing`);
  }

  // Secrets: only references to the environment, never values.
  for (const [name, service] of Object.entries<Json>(services)) {
    for (const [key, value] of Object.entries(environmentOf(service))) {
      if (SECRET_NAME.test(key) && !VARIABLE_REFERENCE.test(value)) problems.push(`${name}: ${key} is a literal value, not \${VARIABLE}`);
      for (const match of value.matchAll(/:\/\/[^:/@\s]+:([^@\s]+)@/g)) {
        if (!VARIABLE_REFERENCE.test(match[1]!)) problems.push(`${name}: ${key} has a literal password in its URL`);
      }
    }
  }

  // PostgreSQL.
  const postgres = services[POSTGRES];
  const pgEnv = environmentOf(postgres);
  if (postgres) {
    if (!/^postgres:\d+(?:[.-][\w.-]+)?$/.test(String(postgres.image))) problems.push(`${POSTGRES}: image ${postgres.image} is not the official image with a pinned major`);
    if (!/\bpg_isready\b/.test(healthcheckCommand(postgres))) problems.push(`${POSTGRES}: no pg_isready healthcheck`);
    if (!volumesOf(postgres).some((v) => namedVolumes.has(v.source))) problems.push(`${POSTGRES}: its data is not on a named volume`);
    if (!VARIABLE_REFERENCE.test(pgEnv.POSTGRES_PASSWORD ?? '')) problems.push(`${POSTGRES}: POSTGRES_PASSWORD is not taken from the environment`);
  }
  const passwordVariable = VARIABLE_REFERENCE.exec(pgEnv.POSTGRES_PASSWORD ?? '')?.[1];

  // The replicas: identical, on the one database and the one DATA_DIR volume.
  const replicaEnvs = REPLICAS.map((name) => environmentOf(services[name]));
  const [envA, envB] = replicaEnvs as [Record<string, string>, Record<string, string>];
  for (const key of new Set([...Object.keys(envA), ...Object.keys(envB)])) {
    if (envA[key] !== envB[key]) problems.push(`replicas differ in ${key}: ${envA[key]} / ${envB[key]}`);
  }
  const [serviceA, serviceB] = REPLICAS.map((name) => services[name] ?? {});
  for (const key of new Set([...Object.keys(serviceA), ...Object.keys(serviceB)])) {
    if (key !== 'environment' && JSON.stringify(serviceA[key]) !== JSON.stringify(serviceB[key])) problems.push(`replicas differ in ${key}`);
  }
  const dataVolumes = new Set<string>();
  const lb = services[LOAD_BALANCER];
  const lbNetworks = lb ? networksOf(lb) : [];
  const lbSubnets = lbNetworks.flatMap((n) => subnetsOf(compose, n));
  const lbPort = portsOf(lb).find((p) => p.hostIp === '127.0.0.1' && p.published === '8080');
  for (const [i, name] of REPLICAS.entries()) {
    const service = services[name];
    if (!service) continue;
    const env = replicaEnvs[i]!;
    const build = typeof service.build === 'string' ? { context: service.build } : (service.build ?? {});
    if (posix.normalize(String(build.context ?? '')) !== '.' || build.dockerfile !== DOCKERFILE) problems.push(`${name}: not built from ${DOCKERFILE} with the repository as context`);

    const url = DATABASE_URL.exec(env.DATABASE_URL ?? '');
    if (!url) {
      problems.push(`${name}: DATABASE_URL ${env.DATABASE_URL} is not postgres://user:\${PASSWORD}@host:port/db`);
    } else {
      const [, user, password, host, port, db] = url;
      if (host !== POSTGRES || port !== '5432') problems.push(`${name}: DATABASE_URL points at ${host}:${port}, not ${POSTGRES}:5432`);
      if (user !== pgEnv.POSTGRES_USER || db !== pgEnv.POSTGRES_DB) problems.push(`${name}: DATABASE_URL's user/database ${user}/${db} are not the ${POSTGRES} service's`);
      if (VARIABLE_REFERENCE.exec(password!)?.[1] !== passwordVariable) problems.push(`${name}: DATABASE_URL's password is not \${${passwordVariable}}, the one PostgreSQL gets`);
    }

    const dataDir = env.DATA_DIR;
    const dataVolume = volumesOf(service).find((v) => v.target === dataDir);
    if (!dataDir) problems.push(`${name}: DATA_DIR is not set`);
    else if (!dataVolume) problems.push(`${name}: nothing is mounted on DATA_DIR ${dataDir}`);
    else if (!namedVolumes.has(dataVolume.source)) problems.push(`${name}: DATA_DIR is on ${dataVolume.source}, not a named volume`);
    else dataVolumes.add(dataVolume.source);

    const apiPort = Number(env.PORT);
    const opsPort = Number(env.OPS_PORT);
    if (!Number.isInteger(opsPort) || opsPort <= 0) problems.push(`${name}: OPS_PORT is not set to a port`);
    else if (opsPort === apiPort) problems.push(`${name}: OPS_PORT is the API port`);
    if (!healthcheckCommand(service).includes(`127.0.0.1:${env.OPS_PORT}/readyz`)) problems.push(`${name}: its healthcheck does not ask the ops port's /readyz`);

    const trusted = (env.TRUSTED_PROXIES ?? '').split(',').map((s) => s.trim()).filter(Boolean);
    if (trusted.length === 0) problems.push(`${name}: TRUSTED_PROXIES is not set`);
    if (lbSubnets.length === 0) problems.push(`${name}: the load balancer's network has no fixed subnet for TRUSTED_PROXIES to name`);
    for (const subnet of lbSubnets) if (!trusted.includes(subnet)) problems.push(`${name}: TRUSTED_PROXIES ${trusted.join(',')} lacks the load balancer's subnet ${subnet}`);
    for (const network of lbNetworks) if (!networksOf(service).includes(network)) problems.push(`${name}: not on the load balancer's network ${network}`);

    if (lbPort && env.PUBLIC_BASE_URL !== `http://127.0.0.1:${lbPort.published}`) problems.push(`${name}: PUBLIC_BASE_URL ${env.PUBLIC_BASE_URL} is not the load balancer's URL`);
    if (dependsOn(service)[POSTGRES] !== 'service_healthy') problems.push(`${name}: does not wait for ${POSTGRES} to be healthy`);
    if (!['always', 'unless-stopped', 'on-failure'].includes(String(service.restart).replace(/:\d+$/, ''))) problems.push(`${name}: no restart policy`);
    if (services[PROMETHEUS] && !networksOf(services[PROMETHEUS]).some((n) => networksOf(service).includes(n))) problems.push(`${name}: shares no network with Prometheus`);
    // compose SIGKILLs a container stop_grace_period (default 10 s) after its SIGTERM: the
    // drain (delay, then grace) must fit, with room to sign the audit head and finalize.
    const { delayMs, graceMs } = shutdownOf(env);
    const stopGraceMs = durationMs(service.stop_grace_period ?? '10s', 's');
    if (stopGraceMs === undefined || stopGraceMs < delayMs + graceMs + 2000) problems.push(`${name}: stop_grace_period ${service.stop_grace_period ?? '(10s)'} leaves no room for the drain (SHUTDOWN_DELAY_MS ${delayMs} + SHUTDOWN_GRACE_MS ${graceMs})`);
  }
  if (dataVolumes.size > 1) problems.push(`the replicas' DATA_DIR are different volumes: ${[...dataVolumes].join(', ')}`);

  // The load balancer.
  if (lb) {
    if (!/^haproxy:\d+(\.\d+)*(-[\w.]+)?$/.test(String(lb.image))) problems.push(`${LOAD_BALANCER}: image ${lb.image} is not a pinned haproxy`);
    if (!lbPort) problems.push(`${LOAD_BALANCER}: not published on 127.0.0.1:8080`);
    if (lbNetworks.length !== 1) problems.push(`${LOAD_BALANCER}: on ${lbNetworks.length} networks; on more than one its source address may fall outside TRUSTED_PROXIES`);
    if (!volumesOf(lb).some((v) => posix.normalize(v.source) === 'config/compose/haproxy.cfg')) problems.push(`${LOAD_BALANCER}: does not mount config/compose/haproxy.cfg`);
  }
  const prometheus = services[PROMETHEUS];
  if (prometheus) {
    if (!/^prom\/prometheus:v\d+\.\d+\.\d+$/.test(String(prometheus.image))) problems.push(`${PROMETHEUS}: image ${prometheus.image} is not a pinned prom/prometheus`);
    if (!volumesOf(prometheus).some((v) => posix.normalize(v.source) === 'config/compose/prometheus.yml' && v.target === '/etc/prometheus/prometheus.yml')) problems.push(`${PROMETHEUS}: does not mount config/compose/prometheus.yml`);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// config/compose/haproxy.cfg

interface HaproxySection {
  kind: string;
  name: string;
  lines: string[][];
}

const HAPROXY_SECTIONS = new Set(['global', 'defaults', 'frontend', 'backend', 'listen', 'resolvers', 'userlist', 'peers', 'mailers', 'program', 'http-errors', 'cache', 'ring']);

function parseHaproxy(text: string): HaproxySection[] {
  const sections: HaproxySection[] = [];
  for (const raw of text.split('\n')) {
    const words = raw.replace(/(^|\s)#.*$/, '').trim().split(/\s+/).filter(Boolean);
    if (words.length === 0) continue;
    if (HAPROXY_SECTIONS.has(words[0]!)) sections.push({ kind: words[0]!, name: words[1] ?? '', lines: [] });
    else if (sections.length > 0) sections.at(-1)!.lines.push(words);
  }
  return sections;
}

function haproxyProblems(text: string, compose: Json): string[] {
  const problems: string[] = [];
  const sections = parseHaproxy(text);
  const env = environmentOf(compose.services?.[REPLICAS[0]]);
  const lbTarget = portsOf(compose.services?.[LOAD_BALANCER]).find((p) => p.published === '8080')?.target;
  const frontends = sections.filter((s) => s.kind === 'frontend' || s.kind === 'listen');
  const frontend = frontends.find((f) => f.lines.some((l) => l[0] === 'bind' && l[1]?.split(':').at(-1) === lbTarget));
  if (!frontend) return [`no frontend binds the published port ${lbTarget}`];
  const backendName = frontend.kind === 'listen' ? frontend.name : frontend.lines.find((l) => l[0] === 'default_backend')?.[1];
  const backend = sections.find((s) => (s.kind === 'backend' || s.kind === 'listen') && s.name === backendName);
  if (!backend) return [`frontend ${frontend.name}: its backend ${backendName} does not exist`];

  const setsForwardedFor = [frontend, backend, ...sections.filter((s) => s.kind === 'defaults')].some((s) =>
    s.lines.some((l) => (l[0] === 'option' && l[1] === 'forwardfor') || (l[0] === 'http-request' && l[1] === 'set-header' && l[2]?.toLowerCase() === 'x-forwarded-for')),
  );
  if (!setsForwardedFor) problems.push('X-Forwarded-For is not set');

  const checksReadyz =
    backend.lines.some((l) => l[0] === 'option' && l[1] === 'httpchk' && l.includes('/readyz')) ||
    (backend.lines.some((l) => l[0] === 'option' && l[1] === 'httpchk') && backend.lines.some((l) => l[0] === 'http-check' && l[1] === 'send' && l[l.indexOf('uri') + 1] === '/readyz'));
  if (!checksReadyz) problems.push(`backend ${backend.name}: its health check does not ask /readyz`);

  const defaults = backend.lines.filter((l) => l[0] === 'default-server').flatMap((l) => l.slice(1));
  const servers = backend.lines.filter((l) => l[0] === 'server').map((l) => ({ address: l[2] ?? '', options: [...defaults, ...l.slice(3)] }));
  for (const replica of REPLICAS) {
    const server = servers.find((s) => s.address === `${replica}:${env.PORT}`);
    if (!server) {
      problems.push(`backend ${backend.name}: no server ${replica}:${env.PORT} (the replica's API port)`);
      continue;
    }
    const port = server.options[server.options.indexOf('port') + 1];
    if (!server.options.includes('check') || port !== env.OPS_PORT) problems.push(`backend ${backend.name}: ${replica} is not health-checked on its ops port ${env.OPS_PORT}`);
    const resolvers = server.options[server.options.indexOf('resolvers') + 1];
    if (server.options.includes('resolvers') && !sections.some((s) => s.kind === 'resolvers' && s.name === resolvers)) problems.push(`backend ${backend.name}: resolvers ${resolvers} is not defined`);
    // A replica told to stop keeps serving for SHUTDOWN_DELAY_MS with /readyz failing: HAProxy
    // must have taken it out of rotation by then (fall failed checks, inter apart; HAProxy's
    // defaults 3 and 2 s), or its new connections are refused.
    const option = (name: string) => (server.options.includes(name) ? server.options[server.options.indexOf(name) + 1] : undefined);
    const interMs = durationMs(option('inter') ?? '2000', 'ms') ?? 2000;
    const fall = Number(option('fall') ?? 3);
    const { delayMs } = shutdownOf(env);
    if (delayMs < fall * interMs) problems.push(`backend ${backend.name}: ${replica}'s SHUTDOWN_DELAY_MS ${delayMs} is shorter than HAProxy takes to see /readyz fail (fall ${fall} × inter ${interMs} ms)`);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// config/compose/prometheus.yml

function prometheusProblems(config: Json, compose: Json): string[] {
  const opsPort = environmentOf(compose.services?.[REPLICAS[0]]).OPS_PORT;
  const scraped = new Set<string>();
  for (const job of config?.scrape_configs ?? []) {
    if ((job.metrics_path ?? '/metrics') !== '/metrics' || (job.scheme ?? 'http') !== 'http') continue;
    for (const sc of job.static_configs ?? []) for (const target of sc.targets ?? []) scraped.add(String(target));
  }
  return REPLICAS.filter((r) => !scraped.has(`${r}:${opsPort}`)).map((r) => `Prometheus does not scrape ${r}:${opsPort}/metrics (the ops port)`);
}

// ---------------------------------------------------------------------------------------------
// softhsm/Dockerfile

interface Instruction {
  keyword: string;
  args: string;
}
interface Stage {
  name: string | undefined;
  image: string;
  instructions: Instruction[];
}

/** Stages of a Dockerfile: continuation lines joined, comments dropped, global ARGs substituted in FROM. */
function parseDockerfile(text: string): Stage[] {
  const logical: string[] = [];
  let current = '';
  for (const raw of text.split('\n')) {
    if (/^\s*#/.test(raw)) continue;
    if (/\\\s*$/.test(raw)) {
      current += raw.replace(/\\\s*$/, ' ');
      continue;
    }
    current += raw;
    if (current.trim()) logical.push(current.trim());
    current = '';
  }
  if (current.trim()) logical.push(current.trim());

  const globalArgs: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const line of logical) {
    const [, keyword = '', args = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? [];
    const upper = keyword.toUpperCase();
    if (upper === 'ARG' && stages.length === 0) {
      const [name, value = ''] = args.split('=');
      globalArgs[name!.trim()] = value.trim();
    } else if (upper === 'FROM') {
      const words = args.split(/\s+/).filter((w) => !w.startsWith('--'));
      const image = words[0]!.replace(/\$\{?(\w+)\}?/g, (_, v: string) => globalArgs[v] ?? '');
      const asIndex = words.findIndex((w) => w.toUpperCase() === 'AS');
      stages.push({ name: asIndex > 0 ? words[asIndex + 1] : undefined, image, instructions: [] });
    } else if (stages.length > 0) {
      stages.at(-1)!.instructions.push({ keyword: upper, args });
    }
  }
  return stages;
}

interface Copy {
  from: string | undefined;
  sources: string[];
  dest: string;
}

function copiesOf(stage: Stage): { copy: Copy; workdir: string }[] {
  let workdir = '/';
  const out: { copy: Copy; workdir: string }[] = [];
  for (const { keyword, args } of stage.instructions) {
    if (keyword === 'WORKDIR') workdir = posix.resolve(workdir, args.trim());
    if (keyword !== 'COPY' && keyword !== 'ADD') continue;
    const words = args.trim().startsWith('[') ? (JSON.parse(args) as string[]) : args.split(/\s+/).filter(Boolean);
    const flags = words.filter((w) => w.startsWith('--'));
    const paths = words.filter((w) => !w.startsWith('--'));
    const from = flags.find((f) => f.startsWith('--from='))?.slice('--from='.length);
    out.push({ copy: { from, sources: paths.slice(0, -1), dest: paths.at(-1)! }, workdir });
  }
  return out;
}

/** Where each copied source lands in the image, as [repository path, image path] (directories copy their contents). */
function copiedPaths(stage: Stage, stages: Stage[]): [string, string][] {
  const out: [string, string][] = [];
  for (const { copy, workdir } of copiesOf(stage)) {
    const fromStage = copy.from === undefined ? undefined : stages.find((s) => s.name === copy.from);
    const fromWorkdir = fromStage ? (copiesOf(fromStage).at(-1)?.workdir ?? '/') : undefined;
    const dest = posix.resolve(workdir, copy.dest);
    for (const source of copy.sources) {
      // A source from the build stage is its path there; mapped back to the repository through
      // that stage's WORKDIR, where it was built from the repository's layout.
      const repoPath = fromWorkdir === undefined ? posix.normalize(source) : posix.relative(fromWorkdir, posix.resolve('/', source));
      const onDisk = join(ROOT, repoPath);
      const isDirectory = existsSync(onDisk) ? statSync(onDisk).isDirectory() : !posix.extname(repoPath);
      const intoDirectory = copy.sources.length > 1 || copy.dest.endsWith('/');
      out.push([repoPath, isDirectory || !intoDirectory ? dest : posix.join(dest, posix.basename(repoPath))]);
    }
  }
  return out;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(posix.join(dir, e.name)) : e.name.endsWith('.ts') ? [posix.join(dir, e.name)] : [],
  );
}

/**
 * What the running service opens from disk, as repository paths, enumerated from src/: files
 * and folders named by `new URL('…', import.meta.url)` (resolved from where the compiled module
 * sits under dist/), worker modules started by spawnWorker, package.json (its "type": "module"
 * is what lets Node load dist/), the entry point, and the tools shipped with the image
 * (softhsm/init-token.sh and the files it reads beside it).
 */
function runtimePaths(): string[] {
  const paths = new Set<string>(['package.json', 'dist/main.js', 'softhsm/init-token.sh']);
  for (const file of sourceFiles('src')) {
    // Comment lines quote calls as examples; only code counts.
    const text = read(file)
      .split('\n')
      .filter((line) => !/^\s*(\/\/|\/\*|\*)/.test(line))
      .join('\n');
    const compiledDir = posix.dirname(posix.join('dist', posix.relative('src', file)));
    for (const match of text.matchAll(/new URL\(\s*(['"`])(.*?)\1\s*,\s*import\.meta\.url\s*\)/g)) {
      let relative = match[2]!;
      // A template (`…/${engine}/`): its fixed folder is what must be there.
      if (relative.includes('${')) relative = relative.slice(0, relative.indexOf('${')).replace(/[^/]*$/, '');
      paths.add(posix.normalize(posix.join(compiledDir, relative)).replace(/\/$/, ''));
    }
    for (const match of text.matchAll(/spawnWorker\(\s*import\.meta\.url\s*,\s*'([^']+)'/g)) {
      paths.add(posix.join(compiledDir, `${match[1]}.js`));
    }
  }
  for (const match of read('softhsm/init-token.sh').matchAll(/\$here\/([\w.-]+)/g)) paths.add(`softhsm/${match[1]}`);
  return [...paths].sort();
}

function dockerignorePatterns(text: string): RegExp[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#') && !l.startsWith('!'))
    .map((p) => {
      const body = p
        .replace(/^\/+|\/+$/g, '')
        .split(/(\*\*\/?|\*|\?)/)
        .map((part) => (part.startsWith('**') ? '(?:.*/)?' : part === '*' ? '[^/]*' : part === '?' ? '[^/]' : part.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
        .join('');
      return new RegExp(`^${body}(?:/.*)?$`);
    });
}

const TOOLCHAIN = /(^|[\s;&|])(g\+\+|gcc|cc|clang|make|cmake|python3?|build-essential|node-gyp)(?=$|[\s;&|])/;
const DEV_ONLY = ['vitest', 'autocannon', '@infisical/sdk', 'typescript', 'tsx', 'esbuild', 'fast-check', 'yaml'];

function dockerfileProblems(text: string, dockerignore: string): string[] {
  const problems: string[] = [];
  const stages = parseDockerfile(text);
  if (stages.length < 2) return [`${stages.length} stage(s): not a multi-stage build`];
  const final = stages.at(-1)!;
  const finalCopies = copiesOf(final).map((c) => c.copy);
  const buildName = finalCopies.find((c) => c.from !== undefined)?.from;
  const build = stages.find((s) => s.name !== undefined && s.name === buildName);
  if (!build) return ['the final stage copies nothing from a named build stage'];
  if (build.image !== final.image) problems.push(`the build stage is on ${build.image} and the final one on ${final.image}: native modules are built for the wrong base`);

  const buildRuns = build.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args);
  const at = (re: RegExp) => buildRuns.findIndex((r) => re.test(r));
  const npmCi = at(/\bnpm ci\b/);
  const tsc = at(/\btsc -p tsconfig\.build\.json\b/);
  const prune = at(/\bnpm prune\b.*--omit=dev|\bnpm ci\b.*--omit=dev/);
  if (npmCi < 0) problems.push('the build stage does not run npm ci');
  if (tsc < 0) problems.push('the build stage does not compile with tsc -p tsconfig.build.json');
  if (prune < 0 || prune < tsc) problems.push('the build stage does not drop the devDependencies after compiling (npm prune --omit=dev)');
  if (!buildRuns.some((r) => TOOLCHAIN.test(r))) problems.push('the build stage installs no toolchain for the native modules');

  const finalRuns = final.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args);
  for (const run of finalRuns) {
    if (TOOLCHAIN.test(run)) problems.push(`the final stage installs a compiler toolchain: ${run}`);
    if (/\bnpm (ci|install|i)\b/.test(run)) problems.push(`the final stage installs npm packages itself: ${run}`);
  }
  const apt = finalRuns.join(' ');
  for (const pkg of ['softhsm2', 'openssl']) if (!new RegExp(`apt-get install[^;&]*\\s${pkg}(\\s|$)`).test(apt)) problems.push(`the final stage does not install ${pkg}`);
  const modulePath = (JSON.parse(read('config/default.json')) as Json).hsm.modulePath as string;
  if (modulePath.includes('softhsm') && !/\ssofthsm2(\s|$)/.test(apt)) problems.push(`nothing provides the default module ${modulePath}`);

  const fromBuild = finalCopies.filter((c) => c.from === buildName).flatMap((c) => c.sources.map((s) => posix.basename(s)));
  for (const needed of ['node_modules', 'dist']) if (!fromBuild.includes(needed)) problems.push(`the final stage does not copy ${needed} from the build stage`);

  const user = final.instructions.filter((i) => i.keyword === 'USER').at(-1)?.args.trim().split(':')[0];
  if (!user || user === 'root' || user === '0') problems.push(`the final stage runs as ${user ?? 'root (no USER)'}`);
  const cmd = final.instructions.filter((i) => i.keyword === 'CMD').at(-1)?.args;
  let command: unknown;
  try {
    command = cmd === undefined ? undefined : JSON.parse(cmd);
  } catch {
    command = cmd;
  }
  if (JSON.stringify(command) !== JSON.stringify(['node', 'dist/main.js'])) problems.push(`the final stage's CMD is ${cmd}, not ["node","dist/main.js"]`);

  // Every runtime path lands where the compiled code looks for it: /app/<path>, as in the repository.
  const workdir = copiesOf(final).at(-1)?.workdir ?? '/';
  const copied = copiedPaths(final, stages);
  for (const path of runtimePaths()) {
    const covered = copied.some(([repo, image]) => (path === repo || path.startsWith(`${repo}/`)) && posix.join(image, posix.relative(repo, path)) === posix.join(workdir, path));
    if (!covered) problems.push(`the final stage does not put ${path} at ${posix.join(workdir, path)}`);
  }

  // .dockerignore must not hide what the build copies from the context.
  const ignored = dockerignorePatterns(dockerignore);
  for (const stage of stages) {
    for (const { copy } of copiesOf(stage)) {
      if (copy.from !== undefined) continue;
      for (const source of copy.sources) if (ignored.some((re) => re.test(posix.normalize(source)))) problems.push(`.dockerignore leaves out ${source}, which the build copies`);
    }
  }
  for (const local of ['node_modules', 'data']) if (!ignored.some((re) => re.test(local))) problems.push(`.dockerignore does not leave out ${local}`);
  return problems;
}

// ---------------------------------------------------------------------------------------------

const composeText = read('docker-compose.yml');
const fresh = () => parseCompose(composeText) as Json;
const edit = (change: (c: Json) => void) => {
  // A deep copy without shared references, so editing one replica leaves the other alone.
  const copy = JSON.parse(JSON.stringify(fresh())) as Json;
  change(copy);
  return copy;
};

describe('docker-compose.yml', () => {
  it('runs PostgreSQL, two identical replicas on it and one DATA_DIR volume, HAProxy and Prometheus', () => {
    expect(composeProblems(fresh())).toEqual([]);
  });

  it('gives the replicas settings the service accepts, with the ops port, the proxies and the database', () => {
    const compose = fresh();
    for (const name of REPLICAS) {
      const env = Object.fromEntries(Object.entries(environmentOf(compose.services[name])).map(([k, v]) => [k, interpolate(v, { POSTGRES_PASSWORD: 'from-the-environment' })]));
      const config = loadConfig({}, env);
      expect(config.server.opsPort).toBeGreaterThan(0);
      expect(config.server.opsPort).not.toBe(config.server.port);
      expect(config.server.host).toBe('0.0.0.0');
      expect(config.server.trustedProxies).toEqual(subnetsOf(compose, networksOf(compose.services[LOAD_BALANCER])[0]!));
      expect(config.database.url).toBe('postgres://hsm_signer:from-the-environment@postgres:5432/hsm_signer');
      expect(config.dataDir).toBe('/data');
      expect(config.server.publicBaseUrl).toBe('http://127.0.0.1:8080');
    }
  });

  it('refuses to start without POSTGRES_PASSWORD and holds no password', () => {
    const url = environmentOf(fresh().services[REPLICAS[0]]).DATABASE_URL!;
    expect(() => interpolate(url, {})).toThrow(/POSTGRES_PASSWORD/);
    expect(() => interpolate(url, { POSTGRES_PASSWORD: '' })).toThrow(/POSTGRES_PASSWORD/);
    // Whatever the YAML says, no line sets a password-like key to anything but a reference.
    for (const line of composeText.split('\n')) {
      const m = /^\s*-?\s*"?([A-Z_]*(?:PASSWORD|SECRET|_PIN))"?\s*[:=]\s*(.+?)\s*$/.exec(line);
      if (m) expect(m[2]!.replace(/^"|"$/g, ''), line).toMatch(VARIABLE_REFERENCE);
    }
  });

  it('reports what is missing or wrong', () => {
    const cases: [string, (c: Json) => void, RegExp][] = [
      ['a replica removed', (c) => delete c.services['hsm-signer-b'], /service hsm-signer-b is missing/],
      ['PostgreSQL removed', (c) => delete c.services.postgres, /service postgres is missing/],
      ['the DATA_DIR volume of one replica removed', (c) => delete c.services['hsm-signer-b'].volumes, /hsm-signer-b: nothing is mounted on DATA_DIR/],
      ['another DATA_DIR volume', (c) => ((c.volumes.other = null), (c.services['hsm-signer-b'].volumes = ['other:/data'])), /different volumes/],
      ['OPS_PORT removed from one replica', (c) => delete c.services['hsm-signer-b'].environment.OPS_PORT, /hsm-signer-b: OPS_PORT is not set|replicas differ in OPS_PORT/],
      ['OPS_PORT removed from both', (c) => REPLICAS.forEach((r) => delete c.services[r].environment.OPS_PORT), /OPS_PORT is not set/],
      ['TRUSTED_PROXIES without the LB subnet', (c) => REPLICAS.forEach((r) => (c.services[r].environment.TRUSTED_PROXIES = '192.0.2.0/24')), /lacks the load balancer's subnet/],
      ['no fixed subnet', (c) => delete c.networks.edge.ipam, /no fixed subnet/],
      ['another database', (c) => (c.services['hsm-signer-a'].environment.DATABASE_URL = 'postgres://hsm_signer:${POSTGRES_PASSWORD}@elsewhere:5432/hsm_signer'), /points at elsewhere/],
      ['a literal password', (c) => (c.services.postgres.environment.POSTGRES_PASSWORD = 'hunter2'), /POSTGRES_PASSWORD is a literal/],
      ['a literal password in the URL', (c) => REPLICAS.forEach((r) => (c.services[r].environment.DATABASE_URL = 'postgres://hsm_signer:hunter2@postgres:5432/hsm_signer')), /literal password in its URL/],
      ['a literal PIN', (c) => REPLICAS.forEach((r) => (c.services[r].environment.HSM_PIN = '1234')), /HSM_PIN is a literal/],
      ['another Dockerfile', (c) => (c.services['hsm-signer-a'].build = { context: '.', dockerfile: 'Dockerfile' }), /hsm-signer-a: not built from softhsm\/Dockerfile/],
      ['no health wait', (c) => (c.services['hsm-signer-a'].depends_on = ['postgres']), /does not wait for postgres/],
      ['healthcheck on the API port', (c) => (c.services['hsm-signer-a'].healthcheck.test = ['CMD', 'true']), /ops port's \/readyz/],
      ['no restart policy', (c) => delete c.services['hsm-signer-b'].restart, /hsm-signer-b: no restart policy/],
      ['one replica on fewer networks', (c) => c.services['hsm-signer-b'].networks.pop(), /replicas differ in networks/],
      ['PUBLIC_BASE_URL at a replica', (c) => REPLICAS.forEach((r) => (c.services[r].environment.PUBLIC_BASE_URL = 'http://hsm-signer-a:8080')), /PUBLIC_BASE_URL/],
      ['LB on two networks', (c) => c.services['load-balancer'].networks.push('ops'), /on 2 networks/],
      ['postgres:latest', (c) => (c.services.postgres.image = 'postgres:latest'), /pinned major/],
      ['compose\'s default stop_grace_period', (c) => REPLICAS.forEach((r) => delete c.services[r].stop_grace_period), /stop_grace_period \(10s\) leaves no room for the drain/],
      ['a drain longer than stop_grace_period', (c) => REPLICAS.forEach((r) => (c.services[r].environment.SHUTDOWN_DELAY_MS = '15000')), /leaves no room for the drain \(SHUTDOWN_DELAY_MS 15000/],
    ];
    for (const [what, change, expected] of cases) {
      expect(composeProblems(edit(change)).join('\n'), what).toMatch(expected);
    }
  });
});

describe('config/compose/haproxy.cfg', () => {
  const cfg = read('config/compose/haproxy.cfg');

  it('balances both replicas on their API port, checks /readyz on their ops port and sets X-Forwarded-For', () => {
    expect(haproxyProblems(cfg, fresh())).toEqual([]);
  });

  it('reports a missing replica, a wrong port and an unchecked server', () => {
    const broken: [string, string, RegExp][] = [
      ['a replica removed', cfg.replace(/^\s*server hsm-signer-b .*$/m, ''), /no server hsm-signer-b:8080/],
      ['the ops port as the API port', cfg.replace('hsm-signer-a:8080', 'hsm-signer-a:8081'), /no server hsm-signer-a:8080/],
      ['no check', cfg.replace(/(server hsm-signer-b \S+) check port \d+/, '$1'), /hsm-signer-b is not health-checked/],
      ['no X-Forwarded-For', cfg.replace(/^\s*http-request set-header X-Forwarded-For .*$/m, ''), /X-Forwarded-For is not set/],
      ['health on /', cfg.replace('uri /readyz', 'uri /'), /does not ask \/readyz/],
      ['checks too far apart for the drain', cfg.replace(/\binter 2s\b/, 'inter 10s'), /SHUTDOWN_DELAY_MS \d+ is shorter than HAProxy takes to see \/readyz fail \(fall 2 × inter 10000 ms\)/],
    ];
    for (const [what, text, expected] of broken) expect(haproxyProblems(text, fresh()).join('\n'), what).toMatch(expected);
  });
});

describe('config/compose/prometheus.yml', () => {
  const path = join(ROOT, 'config/compose/prometheus.yml');
  const config = parse(read('config/compose/prometheus.yml')) as Json;

  it("scrapes both replicas' ops ports", () => {
    expect(prometheusProblems(config, fresh())).toEqual([]);
    const withoutB = JSON.parse(JSON.stringify(config)) as Json;
    withoutB.scrape_configs[0].static_configs[0].targets = ['hsm-signer-a:8081'];
    expect(prometheusProblems(withoutB, fresh())).toEqual(['Prometheus does not scrape hsm-signer-b:8081/metrics (the ops port)']);
    const apiPort = JSON.parse(JSON.stringify(config)) as Json;
    apiPort.scrape_configs[0].static_configs[0].targets = ['hsm-signer-a:8080', 'hsm-signer-b:8080'];
    expect(prometheusProblems(apiPort, fresh())).toHaveLength(2);
  });

  it('passes promtool check config', () => {
    const result = spawnSync('promtool', ['check', 'config', path], { encoding: 'utf8' });
    if (result.error) throw new Error(`promtool: ${result.error.message} (Debian package prometheus; npm test installs it)`);
    expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
  });
});

describe('softhsm/Dockerfile', () => {
  const dockerfile = read(DOCKERFILE);
  const dockerignore = read('.dockerignore');

  it('finds the runtime paths in src/ (so the check below checks something)', () => {
    const paths = runtimePaths();
    expect(paths).toEqual(expect.arrayContaining(['package.json', 'dist/main.js', 'config', 'src/store/migrations', 'softhsm/softhsm2.conf.template', 'dist/pkcs11/token-worker.js']));
    for (const path of paths.filter((p) => !p.startsWith('dist/'))) expect(existsSync(join(ROOT, path)), path).toBe(true);
    for (const path of paths.filter((p) => p.startsWith('dist/'))) expect(existsSync(join(ROOT, path.replace(/^dist/, 'src').replace(/\.js$/, '.ts'))), path).toBe(true);
  });

  it('builds in one stage and runs the pruned result, unprivileged, with what the service reads at run time', () => {
    expect(dockerfileProblems(dockerfile, dockerignore)).toEqual([]);
  });

  it('leaves every development-only package to npm prune', () => {
    const pkg = JSON.parse(read('package.json')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
    for (const name of DEV_ONLY) {
      expect(pkg.dependencies[name], name).toBeUndefined();
      expect(pkg.devDependencies[name], name).toBeDefined();
    }
  });

  it('reports a toolchain, root, a missing copy, another base or no prune', () => {
    const broken: [string, string, RegExp][] = [
      ['the migrations not copied', dockerfile.replace(/^COPY src\/store\/migrations .*$/m, ''), /does not put src\/store\/migrations/],
      ['config not copied', dockerfile.replace(/^COPY config .*$/m, ''), /does not put config/],
      ['package.json not copied', dockerfile.replace(/^COPY --from=build \/app\/package\.json .*$/m, ''), /does not put package\.json/],
      ['dist elsewhere', dockerfile.replace('./dist', './lib'), /does not put dist\/main\.js/],
      ['the template not copied', dockerfile.replace(' softhsm/softhsm2.conf.template', ''), /softhsm2\.conf\.template/],
      ['root', dockerfile.replace(/^USER node$/m, 'USER root'), /runs as root/],
      ['no USER', dockerfile.replace(/^USER node$/m, ''), /runs as root/],
      ['a compiler in the final stage', dockerfile.replace('softhsm2 openssl', 'softhsm2 openssl g++'), /installs a compiler toolchain/],
      ['npm ci in the final stage', dockerfile.replace(/^CMD/m, 'RUN npm ci\nCMD'), /installs npm packages itself/],
      ['another CMD', dockerfile.replace('"dist/main.js"', '"src/main.ts"'), /CMD/],
      ['no prune', dockerfile.replace(/^RUN npm prune .*$/m, ''), /npm prune --omit=dev/],
      ['another base for the final stage', dockerfile.replace(/^FROM \$\{NODE_IMAGE\}$/m, 'FROM node:20-alpine'), /native modules are built for the wrong base/],
      ['one stage', 'FROM node:20\nCMD ["node","dist/main.js"]\n', /not a multi-stage build/],
    ];
    for (const [what, text, expected] of broken) expect(dockerfileProblems(text, dockerignore).join('\n'), what).toMatch(expected);
    expect(dockerfileProblems(dockerfile, `${dockerignore}\nsrc\n`).join('\n')).toMatch(/\.dockerignore leaves out src/);
  });
});
