/**
 * A small fetch wrapper for tests: JSON in, status/headers/JSON out, never throws on 4xx/5xx.
 * Every answer is held to the service's OpenAPI document (openapi-recorder.ts): one that
 * contradicts it throws, so every integration test that goes through here also checks the
 * document against what the service really answers.
 */
import { checkAnswer } from './openapi-recorder.js';


export interface ApiResponse<T = any> {
  status: number;
  headers: Headers;
  body: T;
}

export async function request<T = any>(
  baseUrl: string,
  method: string,
  path: string,
  options: { token?: string; body?: unknown; rawBody?: string; headers?: Record<string, string> } = {},
): Promise<ApiResponse<T>> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  let body: string | undefined;
  if (options.rawBody !== undefined) {
    body = options.rawBody;
    headers['content-type'] ??= 'application/json';
  } else if (options.body !== undefined) {
    body = JSON.stringify(options.body);
    headers['content-type'] = 'application/json';
  }
  const response = await fetch(`${baseUrl}${path}`, { method, headers, body });
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // Not JSON: leave the text for the assertion to show.
  }
  const problems = checkAnswer(method, path, response.status, response.headers.get('content-type'), parsed);
  if (problems.length > 0) throw new Error(`the answer contradicts the OpenAPI document:\n${problems.join('\n')}`);
  return { status: response.status, headers: response.headers, body: parsed as T };
}

export async function login(baseUrl: string, credentials: { clientId: string; clientSecret: string }): Promise<string> {
  const response = await request<{ accessToken: string }>(baseUrl, 'POST', '/api/v1/auth/universal-auth/login', { body: credentials });
  if (response.status !== 200) throw new Error(`login failed: ${response.status} ${JSON.stringify(response.body)}`);
  return response.body.accessToken;
}

/** Creates an identity with the given permissions through the admin API and returns its credentials. */
export async function createIdentity(
  baseUrl: string,
  adminToken: string,
  name: string,
  permissions: Array<{ projectId: string; actions: string[] }>,
): Promise<{ identityId: string; clientId: string; clientSecret: string }> {
  const created = await request(baseUrl, 'POST', '/api/v1/identities', { token: adminToken, body: { name, permissions } });
  if (created.status !== 200) throw new Error(`create identity failed: ${created.status} ${JSON.stringify(created.body)}`);
  const secret = await request(baseUrl, 'POST', `/api/v1/identities/${created.body.identity.id}/client-secrets`, { token: adminToken, body: {} });
  if (secret.status !== 200) throw new Error(`create secret failed: ${secret.status} ${JSON.stringify(secret.body)}`);
  return { identityId: created.body.identity.id, clientId: created.body.identity.clientId, clientSecret: secret.body.clientSecret };
}
