// Independent JWT check for Writ integration tests, using jose.
//
//   node verify.mjs <jwks_url> <issuer> <audience> <token> [typ]
//
// With `typ`, the JWT header's typ must be it (a Security Event Token is
// `secevent+jwt`).
//
// Exit 0 and print the payload as one JSON line when valid; exit 1 with the
// error message on stderr otherwise.
import { createRemoteJWKSet, jwtVerify } from 'jose';

const [jwksUrl, issuer, audience, token, typ] = process.argv.slice(2);
if (!token) {
  console.error('usage: node verify.mjs <jwks_url> <issuer> <audience> <token>');
  process.exit(2);
}

try {
  const options = { issuer, audience, algorithms: ['RS256', 'PS256', 'ES256', 'EdDSA'] };
  if (typ) options.typ = typ;
  const { payload } = await jwtVerify(token, createRemoteJWKSet(new URL(jwksUrl)), options);
  process.stdout.write(`${JSON.stringify(payload)}\n`);
} catch (err) {
  console.error(err.message);
  process.exit(1);
}
