// OIDC issuer test peer for Writ integration tests, built on oidc-provider.
//
//   node server.mjs <config.json>
//
// Prints exactly one JSON line to stdout once listening, then serves until
// SIGTERM/SIGINT. Everything else (oidc-provider notices included) goes to stderr.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import { Provider, errors } from 'oidc-provider';

// oidc-provider prints some notices with console.info (stdout); keep stdout clean.
console.log = console.info = console.error;

const ALGS = new Set(['RS256', 'PS256', 'ES256', 'EdDSA']);

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node server.mjs <config.json>');
  process.exit(2);
}
const cfg = JSON.parse(readFileSync(configPath, 'utf8'));
const audience = cfg.audience ?? 'writ';
const scopes = cfg.scopes ?? ['writ'];
const ttl = cfg.ttl ?? 600;
// "jwt" (default) or "opaque"; oidc-provider only introspects/revokes opaque tokens.
const accessTokenFormat = cfg.access_token_format ?? 'jwt';
// RFC 8707 resource indicators must be absolute URIs, so a bare audience such as
// "writ" cannot be sent as `resource` itself; map it to "urn:writ" by default.
const resource = cfg.resource ?? (URL.canParse(audience) ? audience : `urn:${audience}`);

const clientAlg = new Map();
for (const c of cfg.clients ?? []) {
  const alg = c.alg ?? 'RS256';
  if (!ALGS.has(alg)) throw new Error(`client ${c.client_id}: unsupported alg ${alg}`);
  clientAlg.set(c.client_id, alg);
}

// Fresh signing keys for every run; one key per key type, each with its own kid.
const jwk = (type, opts, kid) => ({
  ...generateKeyPairSync(type, opts).privateKey.export({ format: 'jwk' }),
  kid,
  use: 'sig',
});
const keys = [
  jwk('rsa', { modulusLength: 2048 }, 'rsa-2048'), // RS256 and PS256
  jwk('ec', { namedCurve: 'P-256' }, 'ec-p256'), // ES256
  jwk('ed25519', {}, 'ed25519'), // EdDSA
];

const server = createServer();
await new Promise((resolve) => server.listen(cfg.port ?? 0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: (cfg.clients ?? []).map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: c.auth_method ?? 'client_secret_basic',
  })),
  jwks: { keys },
  scopes: ['openid', ...scopes],
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  ttl: {
    AccessToken: ttl,
    ClientCredentials: ttl,
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo(ctx, indicator, client) {
        if (indicator !== resource) throw new errors.InvalidTarget();
        return {
          audience,
          scope: scopes.join(' '),
          accessTokenTTL: ttl,
          accessTokenFormat,
          jwt: { sign: { alg: clientAlg.get(client.clientId) } },
        };
      },
    },
  },
});
server.on('request', provider.callback());

process.stdout.write(`${JSON.stringify({
  issuer,
  port,
  token_endpoint: `${issuer}/token`,
  jwks_uri: `${issuer}/jwks`,
  introspection_endpoint: `${issuer}/token/introspection`,
  revocation_endpoint: `${issuer}/token/revocation`,
  audience,
  resource,
})}\n`);

const shutdown = () => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
