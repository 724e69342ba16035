// Independent JWT check for Writ integration tests, using jose.
//
//   node verify.mjs <jwks_url> <issuer> <audience> <token>
//
// Exit 0 and print the payload as one JSON line when valid; exit 1 with the
// error message on stderr otherwise.
import { createRemoteJWKSet, jwtVerify } from 'jose';

const [jwksUrl, issuer, audience, token] = process.argv.slice(2);
if (!token) {
  console.error('usage: node verify.mjs <jwks_url> <issuer> <audience> <token>');
  process.exit(2);
}

try {
  const { payload } = await jwtVerify(token, createRemoteJWKSet(new URL(jwksUrl)), {
    issuer,
    audience,
    algorithms: ['RS256', 'PS256', 'ES256', 'EdDSA'],
  });
  process.stdout.write(`${JSON.stringify(payload)}\n`);
} catch (err) {
  console.error(err.message);
  process.exit(1);
}
