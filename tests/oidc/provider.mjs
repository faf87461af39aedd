// A real OpenID provider for the test suite: the `oidc-provider` package on loopback, issuing
// JWT access tokens to programs (client credentials) with the claims the test gives each client,
// and signing people in through browsers (authorization code flow, with the package's own
// development login and consent pages) with the claims the test gives each person.
//
//   node provider.mjs SPEC.json
//
// SPEC: { "port": 0, "keys_dir": "...", "keys": ["k1"], "clients": [{ "client_id": "...",
//   "client_secret": "...", "claims": {...}, "audience": "enclave", "ttl": 300 }],
//   "web": { "client_id": "...", "client_secret": "..." }, "people": { "alice": {...claims} } }
// The web client may be sent back to `http://127.0.0.1:<any port>/auth/callback`: the test's
// Enclave listens on a port chosen when it starts.
// `keys` name the signing keys, the first signing; each is made once and kept in `keys_dir`, so
// a restart with another list rotates them. The module's path comes from OIDC_PROVIDER_MODULE
// (the test harness installs the package with npm). Prints `issuer <url>` once listening.

import { generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
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
// With `tls: { cert, key }` (PEM files), HTTPS under the test's own CA.
const server = spec.tls
  ? createTlsServer({ cert: readFileSync(spec.tls.cert), key: readFileSync(spec.tls.key) })
  : createServer();
await new Promise((resolve) => server.listen(spec.port || 0, '127.0.0.1', resolve));
const issuer = `${spec.tls ? 'https' : 'http'}://127.0.0.1:${server.address().port}`;

const people = spec.people ?? {};
const web = spec.web
  ? [{
    client_id: spec.web.client_id,
    client_secret: spec.web.client_secret,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/auth/callback'],
    scope: 'openid profile',
  }]
  : [];

const provider = new Provider(issuer, {
  clients: spec.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: 'api',
  })).concat(web),
  scopes: ['openid', 'profile', 'api'],
  // Profile claims come from userinfo (the ID token carries `sub` and the sign-in's nonce).
  claims: { openid: ['sub'], profile: ['preferred_username', 'tenant', 'clearance', 'groups', 'citizenship'] },
  findAccount: async (ctx, id) => (people[id]
    ? { accountId: id, claims: async () => ({ sub: id, preferred_username: id, ...people[id] }) }
    : undefined),
  jwks: { keys: spec.keys.map(key) },
  features: {
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Programs' tokens are for Enclave's API; a browser's access token is for userinfo.
      defaultResource: (ctx, client) => (client.clientId === spec.web?.client_id ? undefined : 'urn:enclave'),
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

// Any loopback port, this path only.
const allowed = provider.Client.prototype.redirectUriAllowed;
provider.Client.prototype.redirectUriAllowed = function redirectUriAllowed(uri) {
  return /^http:\/\/127\.0\.0\.1:\d+\/auth\/callback$/.test(uri) || allowed.call(this, uri);
};

server.on('request', provider.callback());
console.log(`issuer ${issuer}`);
