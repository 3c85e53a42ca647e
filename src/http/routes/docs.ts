/**
 * /api/docs: the OpenAPI document (openapi.json) and a reference page that renders it with
 * Swagger UI, whose script and style sheet are served from node_modules (swagger-ui-dist): the
 * page works where the service has no internet, as these services often do. The document is
 * made on the first request for it and kept; the files are read once.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Router, type Response } from 'express';
import { buildOpenApi } from '../openapi.js';
import { on } from '../route.js';

const BASE = '/api/docs';

/**
 * The API's own policy is `default-src 'none'` (front-door.ts); the page needs its own scripts
 * and style sheet, the inline styles and data: icons Swagger UI makes, and fetches back to the
 * service (the document, and "Try it out"). Still nothing from anywhere else.
 */
const PAGE_POLICY = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hsm-signer API</title>
<link rel="stylesheet" href="${BASE}/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="${BASE}/assets/swagger-ui-bundle.js"></script>
<script src="${BASE}/assets/start.js"></script>
</body>
</html>
`;

// validatorUrl null: Swagger UI would otherwise send the document to validator.swagger.io.
const START = `window.ui = SwaggerUIBundle({ url: '${BASE}/openapi.json', dom_id: '#swagger-ui', deepLinking: true, validatorUrl: null, docExpansion: 'list' });\n`;

interface Asset {
  type: string;
  read: () => Buffer;
}

function once(read: () => Buffer): () => Buffer {
  let kept: Buffer | undefined;
  return () => (kept ??= read());
}

export function docsRoutes(): Router {
  const router = Router();
  const dist = dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
  const assets: Record<string, Asset> = {
    'swagger-ui-bundle.js': { type: 'text/javascript; charset=utf-8', read: once(() => readFileSync(join(dist, 'swagger-ui-bundle.js'))) },
    'swagger-ui.css': { type: 'text/css; charset=utf-8', read: once(() => readFileSync(join(dist, 'swagger-ui.css'))) },
    'start.js': { type: 'text/javascript; charset=utf-8', read: () => Buffer.from(START) },
  };
  const document = once(() => Buffer.from(JSON.stringify(buildOpenApi())));

  const send = (res: Response, type: string, body: Buffer, cache: string) => {
    res.setHeader('Content-Type', type);
    res.setHeader('Cache-Control', cache);
    res.end(body);
  };

  on(router, 'GET /api/docs', (_input, res) => {
    res.setHeader('Content-Security-Policy', PAGE_POLICY);
    send(res, 'text/html; charset=utf-8', Buffer.from(PAGE), 'no-cache');
  });
  on(router, 'GET /api/docs/openapi.json', (_input, res) => {
    send(res, 'application/json; charset=utf-8', document(), 'no-cache');
  });
  on(router, 'GET /api/docs/assets/:file', ({ params }, res) => {
    const asset = assets[params.file]!;
    send(res, asset.type, asset.read(), 'public, max-age=3600');
  });
  return router;
}
