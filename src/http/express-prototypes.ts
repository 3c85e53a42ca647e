/**
 * Express without its per-request prototype switch.
 *
 * Express 5 gives each request and response its methods with `Object.setPrototypeOf(req,
 * app.request)` and `Object.setPrototypeOf(res, app.response)`, where both prototypes are
 * plain objects made by `Object.create`. On Node 20 (V8 11) that switch is most of what Express
 * costs: the objects of every request then outlive the young generation, so each minor
 * collection promotes megabytes and the old generation is compacted several times a second
 * (measured in README.md, "How a request runs").
 *
 * The remedy changes nothing in Express: `app.request` and `app.response` become the
 * prototypes of classes that extend Node's IncomingMessage and ServerResponse and hold the
 * same properties, and the server builds its requests and responses from those classes. When
 * Express sets the prototype, it is already the one in place, and V8 leaves the object alone.
 */
import { IncomingMessage, ServerResponse } from 'node:http';
import type { Express } from 'express';

/** What `http.createServer` and `https.createServer` take, so their requests are built right. */
export interface ServerClasses {
  IncomingMessage: typeof IncomingMessage;
  ServerResponse: typeof ServerResponse;
}

/**
 * Copies every property on `prototype`'s chain, up to `base` (not included), onto `target`,
 * the farthest first so that nearer ones win as they do in a lookup. Returns false, copying
 * nothing, when the chain does not reach `base`: an Express whose prototypes are built some
 * other way is then served as it is.
 */
function flattenOnto(target: object, prototype: object, base: object): boolean {
  const chain: object[] = [];
  for (let link: object | null = prototype; link !== base; link = Object.getPrototypeOf(link) as object | null) {
    if (link === null) return false;
    chain.push(link);
  }
  for (const link of chain.reverse()) Object.defineProperties(target, Object.getOwnPropertyDescriptors(link));
  return true;
}

/**
 * Makes `app.request` and `app.response` class prototypes and returns the classes to build
 * the server with. Call it once per application, before the server takes requests: the
 * properties are copied then, so anything added to Express's prototypes later is not seen, and
 * a second call would leave the first server's requests switching again.
 */
export function expressServerClasses(app: Express): Partial<ServerClasses> {
  class ExpressRequest extends IncomingMessage {}
  class ExpressResponse extends ServerResponse {}
  const request = app.request as object;
  const response = app.response as object;
  if (!flattenOnto(ExpressRequest.prototype, request, IncomingMessage.prototype)) return {};
  if (!flattenOnto(ExpressResponse.prototype, response, ServerResponse.prototype)) return {};
  (app as { request: object }).request = ExpressRequest.prototype;
  (app as { response: object }).response = ExpressResponse.prototype;
  // ExpressResponse is a ServerResponse of any request, which Node's generic typing cannot say.
  return { IncomingMessage: ExpressRequest, ServerResponse: ExpressResponse as typeof ServerResponse };
}
