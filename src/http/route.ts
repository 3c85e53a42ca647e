/**
 * Registering a handler for a route of the table (route-table.ts): the path, the validation
 * and the template the request is named by all come from the table, and the handler's input
 * is typed from the same schemas that validate it (json-schema-to-ts), so no route states its
 * input a second time.
 */
import type { Request, RequestHandler, Response, Router } from 'express';
import type { FromSchema } from 'json-schema-to-ts';
import { validate, type ValidatedInput } from './ajv.js';
import { BY_KEY, routerPathOf, type RouteKey, ROUTES } from './route-table.js';
import type { JSONSchema } from './schemas/common.js';

type Facts<K extends RouteKey> = (typeof ROUTES)[K];
type Part<K extends RouteKey, P extends 'params' | 'query' | 'body', Otherwise> = Facts<K> extends { readonly [X in P]: infer S extends JSONSchema } ? FromSchema<S> : Otherwise;

/** What a route's handler reads, typed from the route's schemas. */
export type InputOf<K extends RouteKey> = ValidatedInput<Part<K, 'params', Record<string, string>>, Part<K, 'query', Record<string, never>>, Part<K, 'body', Record<string, never>>>;

export type RouteHandler<K extends RouteKey> = (input: InputOf<K>, res: Response, req: Request) => Promise<unknown> | unknown;

export interface RouteOptions {
  /** Middleware between validation and the handler (a body parser for a non-JSON body). */
  after?: RequestHandler[];
  /**
   * False for a route that answers bad input in its own protocol (OCSP): the schemas describe
   * it, but only the route's own code judges it.
   */
  validate?: boolean;
}

/** Registers `handler` for the route `key` on its family's router. */
export function on<K extends RouteKey>(router: Router, key: K, handler: RouteHandler<NoInfer<K>>, options: RouteOptions = {}): void {
  const route = BY_KEY.get(key)!;
  const facts = route.facts;
  const check = validate(options.validate === false ? {} : { params: facts.params, query: facts.query, body: facts.body }, route.template);
  const method = route.method.toLowerCase() as 'get' | 'post' | 'patch' | 'delete';
  router[method](routerPathOf(route), check, ...(options.after ?? []), (req: Request, res: Response) => handler(res.locals.input as InputOf<K>, res, req));
}
