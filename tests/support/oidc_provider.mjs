// A real OpenID Connect provider (the `oidc-provider` npm package, v9) on loopback over HTTPS,
// for end-to-end tests. Run with the project's Node 22:
//
//   .tools/bin/node tests/support/oidc_provider.mjs CONFIG.json
//
// CONFIG.json:
//   {"port": 8443, "issuer": "https://127.0.0.1:8443", "certfile": "leaf.pem", "keyfile": "leaf.key",
//    "clients": [{"client_id": "...", "client_secret": "..." (optional), "redirect_uris": ["..."]}],
//    "accounts": {"<login>": {"password": "...", "email": "...", "name": "...", "groups": ["..."]}}}
//
// Behaviour:
// - Listens on 127.0.0.1:<port> only, over TLS with the given certificate; prints one line
//   `READY <issuer>` to stdout once listening, logs errors to stderr, exits on SIGTERM/SIGINT.
// - Authorization code flow only (response_type=code), PKCE (S256) required for every client, no
//   refresh tokens (the `offline_access` scope is not offered). A client without `client_secret`
//   is public (token_endpoint_auth_method "none"), one with it uses client_secret_basic.
// - Scopes -> claims: openid -> sub; email -> email, email_verified (always true); profile -> name;
//   groups -> groups. The account's login is its `sub`.
// - ID tokens are RS256, signed with an RSA key generated at start (fresh JWKS each run, at /jwks).
// - oidc-provider's default `conformIdTokenClaims: true` is kept: when an access token is issued
//   (always, with response_type=code) the ID token carries only sub and the protocol claims (iss,
//   aud, exp, iat, auth_time, nonce, at_hash, sid...), and the scope claims (email, name, groups)
//   are served by the userinfo endpoint. Clients must call userinfo to read them, as Bastion does.
// - The `claims` request parameter is not supported (features.claimsParameter stays off).
// - `resource` (RFC 8707) parameters are refused with invalid_target: no resource servers are
//   configured (oidc-provider's default getResourceServerInfo).
// - Interactions (devInteractions is off) are implemented below, before oidc-provider's handler:
//     GET  /interaction/:uid        a plain HTML sign-in form (fields login, password; "Sign in")
//     POST /interaction/:uid/login  checks the password; wrong -> the form again with status 401 and
//                                   "Invalid login or password"; right -> finishes the interaction
//                                   with the login and an automatically granted consent (all the
//                                   requested OIDC scopes), so the browser goes straight
//                                   back to the client's redirect_uri.
//   A consent-only interaction (a signed-in user whose grant lacks something newly requested) is
//   granted automatically on GET, from the prompt's details (scopes, claims, resource scopes).

import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as https from 'node:https';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// ESM ignores NODE_PATH (set by .tools/bin/node), require.resolve does not; fall back to the
// repository's .tools directory next to this file.
function oidcProviderEntry() {
  try {
    return createRequire(import.meta.url).resolve('oidc-provider');
  } catch {
    const here = path.dirname(fileURLToPath(import.meta.url));
    return path.resolve(here, '../../.tools/node/node_modules/oidc-provider/lib/index.js');
  }
}

const { Provider, errors } = await import(pathToFileURL(oidcProviderEntry()).href);

const SCOPE_CLAIMS = {
  openid: ['sub'],
  email: ['email', 'email_verified'],
  profile: ['name'],
  groups: ['groups'],
};
const OIDC_SCOPES = new Set(Object.keys(SCOPE_CLAIMS));

function logError(where, err) {
  process.stderr.write(`[oidc-provider] ${where}: ${err?.stack || err}\n`);
}

function loadConfig(file) {
  if (!file) {
    throw new Error('usage: oidc_provider.mjs CONFIG.json');
  }
  const config = JSON.parse(readFileSync(file, 'utf8'));
  for (const key of ['port', 'issuer', 'certfile', 'keyfile']) {
    if (!(key in config)) throw new Error(`config: missing "${key}"`);
  }
  config.clients ??= [];
  config.accounts ??= {};
  return config;
}

function signingJwks() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: randomUUID(), alg: 'RS256', use: 'sig' }] };
}

function clientMetadata({ client_id, client_secret, redirect_uris }) {
  const metadata = {
    client_id,
    redirect_uris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
  };
  if (client_secret) {
    metadata.client_secret = client_secret;
    metadata.token_endpoint_auth_method = 'client_secret_basic';
  } else {
    metadata.token_endpoint_auth_method = 'none';
  }
  return metadata;
}

function buildProvider(config) {
  const accounts = config.accounts;
  const provider = new Provider(config.issuer, {
    clients: config.clients.map(clientMetadata),
    clientDefaults: {
      grant_types: ['authorization_code'],
      response_types: ['code'],
      id_token_signed_response_alg: 'RS256',
      token_endpoint_auth_method: 'client_secret_basic',
    },
    responseTypes: ['code'],
    scopes: [...OIDC_SCOPES],
    claims: { ...SCOPE_CLAIMS, acr: null, sid: null, auth_time: null, iss: null },
    pkce: { required: () => true },
    features: { devInteractions: { enabled: false } },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    cookies: { keys: [randomBytes(32).toString('base64url'), randomBytes(32).toString('base64url')] },
    jwks: signingJwks(),
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 300,
      IdToken: 3600,
      Interaction: 3600,
      Session: 3600,
      Grant: 3600,
    },
    async findAccount(ctx, sub) {
      const account = Object.hasOwn(accounts, sub) ? accounts[sub] : undefined;
      if (!account) return undefined;
      return {
        accountId: sub,
        // oidc-provider filters these by the granted scopes/claims and the token's use.
        async claims() {
          return {
            sub,
            email: account.email,
            email_verified: true,
            name: account.name,
            groups: [...(account.groups ?? [])],
          };
        },
      };
    },
  });

  for (const event of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error',
    'jwks.error', 'discovery.error']) {
    provider.on(event, (ctx, err) => logError(event, err));
  }
  return provider;
}

// --- interactions -------------------------------------------------------------------------

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

function sendHtml(res, status, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

function loginPage(res, uid, { status = 200, error = '', login = '' } = {}) {
  const action = `/interaction/${encodeURIComponent(uid)}/login`;
  sendHtml(res, status, `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign in</title></head>
<body>
<h1>Sign in</h1>
${error ? `<p class="error">${escapeHtml(error)}</p>` : ''}
<form method="POST" action="${escapeHtml(action)}">
<label>Login <input type="text" name="login" value="${escapeHtml(login)}" autofocus></label>
<label>Password <input type="password" name="password"></label>
<button type="submit">Sign in</button>
</form>
</body></html>
`);
}

async function readForm(req, limit = 64 * 1024) {
  let size = 0;
  const chunks = [];
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('form body too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// Consent to everything the request asked for: from the prompt details when the prompt is
// "consent", else (at login, when details are not computed yet) from the request parameters.
async function autoGrant(provider, interaction, accountId) {
  const { prompt, params, grantId } = interaction;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  if (prompt.name === 'consent') {
    const { details } = prompt;
    if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
    if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(details.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  } else {
    // The `claims` request parameter is off (oidc-provider's default features.claimsParameter),
    // so the requested claims are exactly those of the requested scopes.
    const scopes = String(params.scope ?? '').split(' ').filter((s) => OIDC_SCOPES.has(s));
    if (scopes.length) grant.addOIDCScope(scopes.join(' '));
  }
  return grant.save();
}

async function interactionFor(provider, req, res, uid) {
  const interaction = await provider.interactionDetails(req, res);
  if (interaction.uid !== uid) {
    throw new errors.SessionNotFound('interaction uid and cookie mismatch');
  }
  return interaction;
}

async function handleInteraction(provider, accounts, req, res, uid, action) {
  const interaction = await interactionFor(provider, req, res, uid);

  if (action === undefined && req.method === 'GET') {
    if (interaction.prompt.name === 'consent') {
      const grantId = await autoGrant(provider, interaction, interaction.session.accountId);
      await provider.interactionFinished(req, res, { consent: { grantId } }, {
        mergeWithLastSubmission: true,
      });
      return;
    }
    loginPage(res, uid);
    return;
  }

  if (action === 'login' && req.method === 'POST') {
    if (interaction.prompt.name !== 'login') {
      sendHtml(res, 400, `<p>unexpected prompt ${escapeHtml(interaction.prompt.name)}</p>`);
      return;
    }
    const form = await readForm(req);
    const login = form.get('login') ?? '';
    const password = form.get('password') ?? '';
    const account = Object.hasOwn(accounts, login) ? accounts[login] : undefined;
    if (!account || account.password !== password) {
      loginPage(res, uid, { status: 401, error: 'Invalid login or password', login });
      return;
    }
    const grantId = await autoGrant(provider, interaction, login);
    await provider.interactionFinished(req, res, {
      login: { accountId: login },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
    return;
  }

  res.statusCode = 405;
  res.end();
}

const INTERACTION = /^\/interaction\/([^/]+)(?:\/(login))?\/?$/;

function handler(provider, accounts) {
  const callback = provider.callback();
  return (req, res) => {
    const { pathname } = new URL(req.url, 'https://127.0.0.1');
    const match = INTERACTION.exec(pathname);
    if (!match) {
      callback(req, res);
      return;
    }
    handleInteraction(provider, accounts, req, res, decodeURIComponent(match[1]), match[2])
      .catch((err) => {
        logError(`${req.method} ${pathname}`, err);
        if (res.headersSent) {
          res.end();
          return;
        }
        const status = err instanceof errors.OIDCProviderError ? err.statusCode ?? 400 : 500;
        sendHtml(res, status, `<p>${escapeHtml(err.error ?? 'server_error')}: ${escapeHtml(err.error_description ?? err.message)}</p>`);
      });
  };
}

// --- main ---------------------------------------------------------------------------------

function main() {
  const config = loadConfig(process.argv[2]);
  const provider = buildProvider(config);
  const server = https.createServer({
    cert: readFileSync(config.certfile),
    key: readFileSync(config.keyfile),
  }, handler(provider, config.accounts));

  server.on('error', (err) => {
    logError('server', err);
    process.exit(1);
  });
  server.listen(config.port, '127.0.0.1', () => {
    process.stdout.write(`READY ${config.issuer}\n`);
  });

  const shutdown = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

try {
  main();
} catch (err) {
  logError('startup', err);
  process.exit(1);
}
