// Preload for the MCP conformance CLI: adds extra HTTP headers (e.g. Authorization) to every
// request it sends to one origin. The CLI has no option for this, so the harness runs it with
//   NODE_OPTIONS="--import=/abs/path/tests/conformance/inject_headers.mjs"
//
// Environment:
//   BASTION_CONFORMANCE_HEADERS  JSON object of headers, e.g. {"Authorization": "Bearer abc"}
//   BASTION_CONFORMANCE_AUTH     shortcut for the Authorization header value ("Bearer abc");
//                                a bare token (no space) gets "Bearer " prepended
//   BASTION_CONFORMANCE_ORIGIN   only requests to this origin (scheme://host:port) get the
//                                headers; unset = every request
//   BASTION_CONFORMANCE_DEBUG    "1" logs each injection to stderr
//
// The suite sends HTTP two ways, both covered:
//   * global fetch() - the MCP TypeScript SDK client transport and the raw SSE scenarios;
//     wrapped here, the headers are set unless the request already carries them.
//   * undici.request() from the npm `undici` package - the dns-rebinding-protection scenario
//     (fetch cannot override Host). undici reads its global dispatcher from a process-wide
//     symbol, so we install a dispatcher that adds the headers. The `undici` copy is resolved
//     from the CLI's own location (process.argv[1]).
//   * http.request() / http.get() of node:http (and https likewise) - the 0.2.0 suite's
//     http-header-validation probes (`import g from "http"; g.request(...)`). The functions
//     on the builtin modules are replaced, then syncBuiltinESMExports() makes named ESM
//     imports (`import { request } from "node:http"`) see the replacements too.
// Headers the request already sets (case-insensitively) are never overwritten.

import { realpathSync } from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';

function log(msg) {
  process.stderr.write(`[inject_headers] ${msg}\n`);
}

function configuredHeaders() {
  const headers = {};
  const raw = process.env.BASTION_CONFORMANCE_HEADERS;
  if (raw) {
    let parsed;
    try {
      parsed = JSON.parse(raw);
    } catch (err) {
      throw new Error(`BASTION_CONFORMANCE_HEADERS is not valid JSON: ${err.message}`);
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new Error('BASTION_CONFORMANCE_HEADERS must be a JSON object');
    }
    for (const [k, v] of Object.entries(parsed)) headers[k] = String(v);
  }
  const auth = process.env.BASTION_CONFORMANCE_AUTH;
  if (auth) headers.Authorization = auth.includes(' ') ? auth : `Bearer ${auth}`;
  return headers;
}

const EXTRA = configuredHeaders();
const EXTRA_ENTRIES = Object.entries(EXTRA);
const ORIGIN = process.env.BASTION_CONFORMANCE_ORIGIN
  ? new URL(process.env.BASTION_CONFORMANCE_ORIGIN).origin
  : null;
const DEBUG = process.env.BASTION_CONFORMANCE_DEBUG === '1';

function originMatches(origin) {
  if (ORIGIN === null) return true;
  try {
    return new URL(String(origin)).origin === ORIGIN;
  } catch {
    return false;
  }
}

function installFetchHook() {
  const originalFetch = globalThis.fetch;
  if (typeof originalFetch !== 'function') return;
  globalThis.fetch = function fetchWithExtraHeaders(input, init) {
    const url = typeof input === 'string' || input instanceof URL ? String(input) : input?.url;
    if (!url || !originMatches(url)) return originalFetch.call(this, input, init);
    // Start from the Request's headers (when input is a Request), then init's.
    const headers = new Headers(input instanceof Request ? input.headers : undefined);
    if (init?.headers) new Headers(init.headers).forEach((v, k) => headers.set(k, v));
    for (const [k, v] of EXTRA_ENTRIES) if (!headers.has(k)) headers.set(k, v);
    if (DEBUG) log(`fetch ${init?.method ?? 'GET'} ${url}: +${Object.keys(EXTRA).join(',')}`);
    return originalFetch.call(this, input, { ...init, headers });
  };
}

// undici dispatch options carry headers as an object, a flat [k, v, k, v] array, or an
// iterable of [k, v] pairs; return a plain object/array with the extra headers added.
function withExtraHeaders(headers) {
  if (headers == null) return { ...EXTRA };
  if (Array.isArray(headers) && (headers.length === 0 || !Array.isArray(headers[0]))) {
    const present = new Set();
    for (let i = 0; i < headers.length; i += 2) present.add(String(headers[i]).toLowerCase());
    const out = [...headers];
    for (const [k, v] of EXTRA_ENTRIES) if (!present.has(k.toLowerCase())) out.push(k, v);
    return out;
  }
  const entries =
    typeof headers[Symbol.iterator] === 'function' ? [...headers] : Object.entries(headers);
  const present = new Set(entries.map(([k]) => String(k).toLowerCase()));
  const out = {};
  for (const [k, v] of entries) out[k] = v;
  for (const [k, v] of EXTRA_ENTRIES) if (!present.has(k.toLowerCase())) out[k] = v;
  return out;
}

function installUndiciHook() {
  let undici;
  try {
    const cli = process.argv[1] ? realpathSync(process.argv[1]) : import.meta.filename;
    undici = createRequire(cli)('undici');
  } catch (err) {
    log(`warning: npm 'undici' not found next to the CLI (${err.message}); only fetch() is covered`);
    return;
  }
  const interceptor = (dispatch) => (opts, handler) => {
    if (!originMatches(opts.origin)) return dispatch(opts, handler);
    const headers = withExtraHeaders(opts.headers);
    if (DEBUG) {
      const names = Array.isArray(headers) ? headers.filter((_, i) => i % 2 === 0) : Object.keys(headers);
      log(`undici ${opts.method} ${opts.origin}${opts.path}: header names ${names.join(',')}`);
    }
    return dispatch({ ...opts, headers }, handler);
  };
  undici.setGlobalDispatcher(new undici.Agent().compose(interceptor));
}

// The origin an http(s).request() call connects to, from its (url?, options?, callback?)
// arguments the way Node reads them: a URL string/object, then options overriding its parts.
function nodeRequestOrigin(args, defaultProtocol) {
  let url = null;
  let options = {};
  if (typeof args[0] === 'string' || args[0] instanceof URL) {
    url = new URL(String(args[0]));
    if (args[1] && typeof args[1] === 'object') options = args[1];
  } else if (args[0] && typeof args[0] === 'object') {
    options = args[0];
  }
  const protocol = options.protocol ?? url?.protocol ?? defaultProtocol;
  // Node merges {...the URL's parts, ...options}, then uses hostname || host || 'localhost'.
  let host = String(options.hostname || url?.hostname || options.host || 'localhost');
  if (host.includes(':') && !host.startsWith('[')) host = `[${host}]`; // IPv6 literal
  const port = options.port || url?.port || options.defaultPort || null;
  return `${protocol}//${host}${port ? `:${port}` : ''}`;
}

// Return the call's arguments with the extra headers in its options (a copy; the caller's
// options object is not modified). Node accepts (options, cb), (url, cb) and (url, options, cb).
function nodeRequestArgs(args) {
  const [first, ...rest] = args;
  if (typeof first === 'string' || first instanceof URL) {
    if (rest[0] && typeof rest[0] === 'object') {
      return [first, { ...rest[0], headers: withExtraHeaders(rest[0].headers) }, ...rest.slice(1)];
    }
    return [first, { headers: { ...EXTRA } }, ...rest];
  }
  if (first && typeof first === 'object') {
    return [{ ...first, headers: withExtraHeaders(first.headers) }, ...rest];
  }
  return args;
}

function installNodeHttpHooks() {
  const require = createRequire(import.meta.url);
  for (const [name, defaultProtocol] of [['node:http', 'http:'], ['node:https', 'https:']]) {
    const mod = require(name);
    for (const fn of ['request', 'get']) {
      const original = mod[fn];
      mod[fn] = function requestWithExtraHeaders(...args) {
        let origin;
        try {
          origin = nodeRequestOrigin(args, defaultProtocol);
        } catch {
          return original.apply(this, args); // e.g. an invalid URL: let Node report it
        }
        if (!originMatches(origin)) return original.apply(this, args);
        if (DEBUG) log(`${name} ${fn} ${origin}: +${Object.keys(EXTRA).join(',')}`);
        return original.apply(this, nodeRequestArgs(args));
      };
    }
  }
  syncBuiltinESMExports();
}

if (EXTRA_ENTRIES.length > 0) {
  installFetchHook();
  installUndiciHook();
  installNodeHttpHooks();
  if (DEBUG) log(`active for ${ORIGIN ?? 'all origins'}: ${Object.keys(EXTRA).join(', ')}`);
}
