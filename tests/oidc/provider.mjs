// A real OpenID provider for the test suite: the `oidc-provider` package on loopback, issuing
// JWT access tokens to programs (client credentials) with the claims the test gives each client.
//
//   node provider.mjs SPEC.json
//
// SPEC: { "port": 0, "keys_dir": "...", "keys": ["k1"], "clients": [{ "client_id": "...",
//   "client_secret": "...", "claims": {...}, "audience": "enclave", "ttl": 300 }] }
// `keys` name the signing keys, the first signing; each is made once and kept in `keys_dir`, so
// a restart with another list rotates them. The module's path comes from OIDC_PROVIDER_MODULE
// (the test harness installs the package with npm). Prints `issuer <url>` once listening.

import { generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';

const { default: Provider } = await import(process.env.OIDC_PROVIDER_MODULE);
const spec = JSON.parse(readFileSync(process.argv[2], 'utf8'));

function key(name) {
  const file = join(spec.keys_dir, `${name}.json`);
  if (!existsSync(file)) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = { ...privateKey.export({ format: 'jwk' }), kid: name, alg: 'RS256', use: 'sig' };
    writeFileSync(file, JSON.stringify(jwk));
  }
  return JSON.parse(readFileSync(file, 'utf8'));
}

const byId = Object.fromEntries(spec.clients.map((c) => [c.client_id, c]));

// Bind first so the issuer URL carries the real port.
const server = createServer();
await new Promise((resolve) => server.listen(spec.port || 0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: spec.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: 'api',
  })),
  scopes: ['openid', 'api'],
  jwks: { keys: spec.keys.map(key) },
  features: {
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:enclave',
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource, client) => ({
        scope: 'api',
        audience: byId[client.clientId]?.audience ?? 'enclave',
        accessTokenTTL: byId[client.clientId]?.ttl ?? 300,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  extraTokenClaims: async (ctx, token) => byId[token.clientId]?.claims ?? {},
});

server.on('request', provider.callback());
console.log(`issuer ${issuer}`);
