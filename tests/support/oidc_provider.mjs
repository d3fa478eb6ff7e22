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
// Opt-in options (all off by default; without them the behaviour below is unchanged):
//   "clients": [{..., "grant_types": ["authorization_code", "refresh_token"]}]
//       the client's grant types (default ["authorization_code"]). "refresh_token" needs
//       "refresh_tokens": true (oidc-provider only enables that grant with a custom
//       issueRefreshToken, or with offline_access among the scopes); without "authorization_code"
//       the client has no response types and may have no redirect_uris (e.g. a resource server
//       that only authenticates to the introspection endpoint: "grant_types": []).
//   "resource_servers": {"http://127.0.0.1:PORT/mcp": {"scopes": ["notes:read"],
//                        "access_token_ttl": 30, "format": "opaque" | "jwt"}}
//       RFC 8707 resource indicators (features.resourceIndicators, getResourceServerInfo): an
//       authorization request with resource=<that URI> (and some of its scopes in `scope`) gets an
//       access token whose audience is that URI, with the granted resource scopes, lasting
//       access_token_ttl seconds (default 3600). "opaque" (default) tokens can be introspected and
//       revoked; "jwt" ones are RFC 9068 JWTs (typ at+jwt, RS256, aud = the URI, verifiable with
//       /jwks) which oidc-provider refuses at introspection and revocation (rejectStructuredTokens).
//       useGrantedResource is on: the token request needs no `resource` (the code's resource is
//       used, also for refresh); if it sends one, it must be a single value among those granted
//       (else invalid_target). Unknown resources stay refused with invalid_target.
//       Requesting openid scopes together with a resource gives an access token for the resource
//       (not usable at userinfo). At sign-in the requested resource scopes are granted as well.
//   "refresh_tokens": true, "rotate_refresh_tokens": true | false (default true)
//       issueRefreshToken: every client allowed the refresh_token grant gets a refresh token from
//       the code exchange, without `offline_access` or `prompt=consent` (oidc-provider's default
//       wants both, and drops offline_access unless prompt includes consent). expiresWithSession is
//       false (tokens outlive the provider's browser session); refresh tokens last 3600s, as long as
//       the grant. rotateRefreshToken = the option: with rotation each refresh consumes the token
//       and returns a new one (re-using a consumed token is invalid_grant and revokes the whole
//       grant); WITHOUT rotation the refresh response still carries a `refresh_token` field, equal
//       to the one presented, and the token can be used again. Either way the previous access
//       token stays valid until it expires, and a refresh request may narrow `scope`. Refresh
//       tokens introspect as active with no token_type and no aud.
//   "revocation": true      RFC 7009 at /token/revocation (features.revocation). A client may
//       revoke its own tokens only. Revoking a refresh token revokes the grant (every token of
//       it); revoking an access token also deletes every other token of its grant, the refresh
//       token included (oidc-provider's revoke(): revokeByGrantId for all token kinds; only the
//       Grant record itself survives).
//   "introspection": true   RFC 7662 at /token/introspection (features.introspection). A
//       confidential client (e.g. the resource server's own client, "grant_types": []) may
//       introspect any token; a public client only its own. Access tokens answer with active,
//       sub, client_id, scope, aud, exp, iat, iss, token_type "Bearer".
//   "registration": true    RFC 7591 at /reg (features.registration), open: no initial access
//       token. Registered clients may ask for grant_types authorization_code (+ refresh_token when
//       "refresh_tokens" is on) and token_endpoint_auth_method "none" or "client_secret_basic"
//       (the default; a client_secret is then returned). PKCE stays required.
//   OAuth Client ID Metadata Documents (client_id an https URL): oidc-provider 9.13.3 has them only
//       as an experimental feature (features.clientIdMetadataDocument, draft-02, needs
//       `ack: 'draft-02'`); its fetch refuses special-use addresses (127.0.0.0/8 included) unless
//       `fetch` is replaced, and forbids shared-secret client auth. Not enabled by this harness.
//
// Test-only endpoint: GET /test/events answers JSON lines (application/x-ndjson), oldest first,
// one per oidc-provider event: {"event", "client_id", "account_id", "grant_type", "grant_id"}
// (fields that do not apply are null) for grant.success (a token endpoint success; grant_type
// from the request), refresh_token.consumed (rotation), access_token.destroyed and
// refresh_token.destroyed (the revocation endpoint; the latter also on re-use of a rotated refresh
// token), grant.revoked and registration_create.success (client_id only). Tokens deleted with
// their grant produce no event of their own.
//
// Behaviour:
// - Listens on 127.0.0.1:<port> only, over TLS with the given certificate; prints one line
//   `READY <issuer>` to stdout once listening, logs errors to stderr, exits on SIGTERM/SIGINT.
// - Authorization code flow only (response_type=code), PKCE (S256) required for every client, no
//   refresh tokens (the `offline_access` scope is not offered) unless "refresh_tokens" is on. A
//   client without `client_secret` is public (token_endpoint_auth_method "none"), one with it uses
//   client_secret_basic.
// - Metadata at /.well-known/openid-configuration and (RFC 8414)
//   /.well-known/oauth-authorization-server.
// - Scopes -> claims: openid -> sub; email -> email, email_verified (always true); profile -> name;
//   groups -> groups. The account's login is its `sub`.
// - ID tokens are RS256, signed with an RSA key generated at start (fresh JWKS each run, at /jwks).
// - oidc-provider's default `conformIdTokenClaims: true` is kept: when an access token is issued
//   (always, with response_type=code) the ID token carries only sub and the protocol claims (iss,
//   aud, exp, iat, auth_time, nonce, at_hash, sid...), and the scope claims (email, name, groups)
//   are served by the userinfo endpoint. Clients must call userinfo to read them, as Bastion does.
// - The `claims` request parameter is not supported (features.claimsParameter stays off).
// - `resource` (RFC 8707) parameters are refused with invalid_target unless they name one of the
//   "resource_servers" (none by default: oidc-provider's default getResourceServerInfo).
// - Interactions (devInteractions is off) are implemented below, before oidc-provider's handler:
//     GET  /interaction/:uid        a plain HTML sign-in form (fields login, password; "Sign in")
//     POST /interaction/:uid/login  checks the password; wrong -> the form again with status 401 and
//                                   "Invalid login or password"; right -> finishes the interaction
//                                   with the login and an automatically granted consent (all the
//                                   requested OIDC scopes, and the requested scopes of each
//                                   requested resource server), so the browser goes straight
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
  config.resource_servers ??= {};
  for (const [indicator, server] of Object.entries(config.resource_servers)) {
    if (!Array.isArray(server.scopes)) throw new Error(`config: resource_servers["${indicator}"].scopes must be a list`);
    if (!['opaque', 'jwt', undefined].includes(server.format)) {
      throw new Error(`config: resource_servers["${indicator}"].format must be "opaque" or "jwt"`);
    }
  }
  return config;
}

function signingJwks() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { keys: [{ ...jwk, kid: randomUUID(), alg: 'RS256', use: 'sig' }] };
}

function clientMetadata({ client_id, client_secret, redirect_uris, grant_types = ['authorization_code'] }) {
  const metadata = {
    client_id,
    redirect_uris,
    grant_types,
    response_types: grant_types.includes('authorization_code') ? ['code'] : [],
  };
  if (client_secret) {
    metadata.client_secret = client_secret;
    metadata.token_endpoint_auth_method = 'client_secret_basic';
  } else {
    metadata.token_endpoint_auth_method = 'none';
  }
  return metadata;
}

// --- opt-in features (see the header) -------------------------------------------------------

function resourceServerInfo(indicator, server) {
  const info = { scope: server.scopes.join(' '), audience: indicator };
  if (server.access_token_ttl !== undefined) info.accessTokenTTL = server.access_token_ttl;
  if (server.format === 'jwt') {
    info.accessTokenFormat = 'jwt';
    info.jwt = { sign: { alg: 'RS256' } };
  } else {
    info.accessTokenFormat = 'opaque';
  }
  return info;
}

function resourceIndicators(config) {
  const servers = config.resource_servers;
  return {
    useGrantedResource: async () => true,
    async getResourceServerInfo(ctx, indicator) {
      if (!Object.hasOwn(servers, indicator)) throw new errors.InvalidTarget();
      return resourceServerInfo(indicator, servers[indicator]);
    },
  };
}

// Same as oidc-provider's defaults, stated so that it does not warn about them at start.
async function introspectionAllowed(ctx, client, token) {
  return !(client.clientAuthMethod === 'none' && token.clientId !== ctx.oidc.client.clientId);
}

async function revocationAllowed(ctx, client, token) {
  if (token.clientId === client.clientId) return true;
  if (client.clientAuthMethod === 'none') return false;
  throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
}

function optionalConfiguration(config) {
  const options = { features: {} };
  if (Object.keys(config.resource_servers).length) {
    options.features.resourceIndicators = resourceIndicators(config);
  }
  if (config.refresh_tokens) {
    options.issueRefreshToken = async (ctx, client) => client.grantTypeAllowed('refresh_token');
    options.rotateRefreshToken = config.rotate_refresh_tokens ?? true;
    options.expiresWithSession = async () => false;
  }
  if (config.revocation) {
    options.features.revocation = { enabled: true, allowedPolicy: revocationAllowed };
  }
  if (config.introspection) {
    options.features.introspection = { enabled: true, allowedPolicy: introspectionAllowed };
  }
  if (config.registration) {
    options.features.registration = { enabled: true, initialAccessToken: false };
  }
  return options;
}

// --- test events (GET /test/events) ---------------------------------------------------------

const MAX_EVENTS = 1000;

function recordEvents(provider) {
  const events = [];
  const record = (event, { client_id = null, account_id = null, grant_type = null, grant_id = null }) => {
    events.push({ event, client_id, account_id, grant_type, grant_id });
    if (events.length > MAX_EVENTS) events.shift();
  };
  const fromToken = (token) => ({
    client_id: token.clientId ?? null, account_id: token.accountId ?? null, grant_id: token.grantId ?? null,
  });
  provider.on('grant.success', (ctx) => {
    const { client, params, entities } = ctx.oidc;
    const token = entities.AccessToken ?? entities.ClientCredentials;
    record('grant.success', {
      client_id: client?.clientId,
      account_id: token?.accountId ?? entities.Account?.accountId,
      grant_type: params?.grant_type,
      grant_id: token?.grantId,
    });
  });
  for (const event of ['refresh_token.consumed', 'access_token.destroyed', 'refresh_token.destroyed']) {
    provider.on(event, (token) => record(event, fromToken(token)));
  }
  provider.on('grant.revoked', (ctx, grantId) => {
    record('grant.revoked', {
      client_id: ctx.oidc.client?.clientId,
      account_id: ctx.oidc.entities.Account?.accountId
        ?? ctx.oidc.entities.AccessToken?.accountId ?? ctx.oidc.entities.RefreshToken?.accountId,
      grant_id: grantId,
    });
  });
  provider.on('registration_create.success', (ctx, client) => {
    record('registration_create.success', { client_id: client.clientId });
  });
  return events;
}

function sendEvents(res, events) {
  res.statusCode = 200;
  res.setHeader('Content-Type', 'application/x-ndjson');
  res.setHeader('Cache-Control', 'no-store');
  res.end(events.map((event) => `${JSON.stringify(event)}\n`).join(''));
}

function buildProvider(config) {
  const accounts = config.accounts;
  const optional = optionalConfiguration(config);
  const provider = new Provider(config.issuer, {
    ...optional,
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
    features: { devInteractions: { enabled: false }, ...optional.features },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    cookies: { keys: [randomBytes(32).toString('base64url'), randomBytes(32).toString('base64url')] },
    jwks: signingJwks(),
    ttl: {
      AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 3600,
      RefreshToken: 3600,
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
async function autoGrant(provider, resourceServers, interaction, accountId) {
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
    const requested = String(params.scope ?? '').split(' ');
    const scopes = requested.filter((s) => OIDC_SCOPES.has(s));
    if (scopes.length) grant.addOIDCScope(scopes.join(' '));
    // Unknown resources never get here: the authorization endpoint refused them.
    for (const indicator of [params.resource ?? []].flat()) {
      const offered = new Set(resourceServers[indicator]?.scopes ?? []);
      const granted = requested.filter((s) => offered.has(s));
      if (granted.length) grant.addResourceScope(indicator, granted.join(' '));
    }
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

async function handleInteraction(provider, config, req, res, uid, action) {
  const { accounts } = config;
  const interaction = await interactionFor(provider, req, res, uid);

  if (action === undefined && req.method === 'GET') {
    if (interaction.prompt.name === 'consent') {
      const grantId = await autoGrant(provider, config.resource_servers, interaction, interaction.session.accountId);
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
    const grantId = await autoGrant(provider, config.resource_servers, interaction, login);
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

function handler(provider, config, events) {
  const callback = provider.callback();
  return (req, res) => {
    const { pathname } = new URL(req.url, 'https://127.0.0.1');
    if (pathname === '/test/events' && req.method === 'GET') {
      sendEvents(res, events);
      return;
    }
    const match = INTERACTION.exec(pathname);
    if (!match) {
      callback(req, res);
      return;
    }
    handleInteraction(provider, config, req, res, decodeURIComponent(match[1]), match[2])
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
  const events = recordEvents(provider);
  const server = https.createServer({
    cert: readFileSync(config.certfile),
    key: readFileSync(config.keyfile),
  }, handler(provider, config, events));

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
