// OAuth2 authorization server test peer for the oauth2 provider, built on oidc-provider.
//
//   node authz.mjs <config.json>
//
// Issues opaque access tokens (so that introspection and revocation work on them) by
// client_credentials and by RFC 8693 token exchange of a JWT from another issuer, bound to
// RFC 8707 resource indicators. Prints exactly one JSON line to stdout once listening, then
// serves until SIGTERM/SIGINT. Everything else goes to stderr. See README.md.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import { createRemoteJWKSet, jwtVerify } from 'jose';
import { Provider, errors } from 'oidc-provider';

// oidc-provider prints some notices with console.info (stdout); keep stdout clean.
console.log = console.info = console.error;

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node authz.mjs <config.json>');
  process.exit(2);
}
const cfg = JSON.parse(readFileSync(configPath, 'utf8'));
const ttl = cfg.ttl ?? 600;
const revocation = cfg.revocation ?? true;
// resource indicator -> { scope: "a b", audience?: string }
const resources = cfg.resources ?? {};
const subjectIssuer = cfg.subject_issuer;

const resourceServerInfo = (indicator) => {
  const resource = Object.hasOwn(resources, indicator) ? resources[indicator] : undefined;
  if (!resource) throw new errors.InvalidTarget(`unknown resource indicator ${indicator}`);
  return {
    audience: resource.audience ?? indicator,
    scope: resource.scope,
    accessTokenTTL: ttl,
    accessTokenFormat: 'opaque',
  };
};

const scopes = new Set();
for (const resource of Object.values(resources)) {
  for (const scope of resource.scope.split(' ')) scopes.add(scope);
}

const server = createServer();
await new Promise((resolve) => server.listen(cfg.port ?? 0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: (cfg.clients ?? []).map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: c.grant_types ?? ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: c.auth_method ?? 'client_secret_basic',
    ...(c.scope === undefined ? {} : { scope: c.scope }),
  })),
  scopes: ['openid', ...scopes],
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  ttl: { AccessToken: ttl, ClientCredentials: ttl },
  // RFC 8693 §4.1: an exchanged token names the party acting for the subject.
  extraTokenClaims: (ctx, token) => (token.gty === TOKEN_EXCHANGE ? { act: { sub: token.clientId } } : undefined),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: revocation },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => cfg.default_resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => resourceServerInfo(indicator),
    },
  },
});

const subjectKeys = subjectIssuer ? createRemoteJWKSet(new URL(subjectIssuer.jwks_uri)) : undefined;

const list = (value) => (value === undefined ? [] : [value].flat());

// RFC 8693 token exchange: a JWT from `subject_issuer` for an opaque access token whose
// subject is the JWT's `sub`, at exactly one resource, with scopes the resource and the
// client allow.
async function tokenExchange(ctx, next) {
  const { params, client } = ctx.oidc;
  if (!subjectKeys) throw new errors.UnauthorizedClient('token exchange is not configured');
  if (!params.subject_token) throw new errors.InvalidRequest('missing required parameter subject_token');
  if (params.subject_token_type !== JWT_TYPE) {
    throw new errors.InvalidRequest(`subject_token_type must be ${JWT_TYPE}`);
  }
  if (params.requested_token_type !== undefined && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
    throw new errors.InvalidRequest(`requested_token_type must be ${ACCESS_TOKEN_TYPE}`);
  }
  if (params.actor_token !== undefined) throw new errors.InvalidRequest('actor_token is not supported');

  let claims;
  try {
    ({ payload: claims } = await jwtVerify(params.subject_token, subjectKeys, {
      issuer: subjectIssuer.issuer,
      audience: subjectIssuer.audience,
    }));
  } catch (err) {
    throw new errors.CustomOIDCProviderError('invalid_grant', `subject_token rejected (${err.code ?? 'invalid'})`);
  }
  if (typeof claims.sub !== 'string' || !claims.sub) {
    throw new errors.CustomOIDCProviderError('invalid_grant', 'subject_token has no sub');
  }

  const indicators = list(params.resource);
  if (indicators.length !== 1) throw new errors.InvalidTarget('exactly one resource indicator is required');
  const resourceServer = new ctx.oidc.provider.ResourceServer(indicators[0], resourceServerInfo(indicators[0]));
  for (const audience of list(params.audience)) {
    if (audience !== resourceServer.audience) throw new errors.InvalidTarget(`unknown audience ${audience}`);
  }

  const requested = params.scope ? [...new Set(params.scope.split(' '))] : [];
  const clientScopes = client.scope === undefined ? undefined : new Set(client.scope.split(' '));
  for (const scope of requested) {
    if (!resourceServer.scopes.has(scope) || (clientScopes && !clientScopes.has(scope))) {
      throw new errors.InvalidScope('requested scope is not allowed', scope);
    }
  }

  const token = new ctx.oidc.provider.AccessToken({
    accountId: claims.sub,
    client,
    gty: TOKEN_EXCHANGE,
    scope: requested.join(' ') || undefined,
  });
  token.resourceServer = resourceServer;
  ctx.oidc.entity('AccessToken', token);
  const value = await token.save();

  ctx.body = {
    access_token: value,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: token.tokenType,
    expires_in: token.expiration,
    scope: token.scope || undefined,
  };
  await next();
}

provider.registerGrantType(
  TOKEN_EXCHANGE,
  tokenExchange,
  ['subject_token', 'subject_token_type', 'requested_token_type', 'actor_token', 'actor_token_type',
    'scope', 'resource', 'audience'],
  ['resource', 'audience'],
);

server.on('request', provider.callback());

process.stdout.write(`${JSON.stringify({
  issuer,
  port,
  token_endpoint: `${issuer}/token`,
  introspection_endpoint: `${issuer}/token/introspection`,
  revocation_endpoint: revocation ? `${issuer}/token/revocation` : null,
})}\n`);

const shutdown = () => {
  server.close();
  server.closeAllConnections();
  process.exit(0);
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
