// wshost.js: the browser client of a wshost server, one ES module with no build step.
// Owns one logical connection: it keeps the user's id and resume token (localStorage),
// reconnects with exponential backoff and jitter, and resumes as the same user each time.
// Runs unchanged in browsers and in Node (pass the `ws` package as the WebSocket option).
// Events, options and types: docs/SDK.md and wshost.d.ts.
//
//   import { connect } from "/_/client.js";
//   const ws = connect("ws://127.0.0.1:8080/");
//   ws.on("message", (data) => console.log(data));
//   ws.on("open", ({ user_id }) => ws.send("hi"));
//
// The server's connection handler tells a new client who it is in its greeting, as the
// example __websocket__ does: {"event":"connected","user_id":"...","token":"..."}. The
// `identity` option reads another greeting shape; return {user_id, token} or null.

const defaults = {
  storageKey: "wshost",
  minDelayMs: 250, // first reconnect delay
  maxDelayMs: 30000, // backoff cap
  // A server that drains closes with 1001 and a reason ending in "; reconnect" (come back:
  // another instance serves) or "; no-reconnect" (do not). A fleet told to reconnect at once
  // spreads its return over this many ms (a random delay each), not the same millisecond.
  shutdownSpreadMs: 5000,
  protocols: undefined, // Sec-WebSocket-Protocol offer, passed to WebSocket
  // A connection is open once its first message came or this many ms passed without a close
  // (a refusal at the door closes right after the upgrade).
  settleMs: 100,
  maxPending: 1000, // messages kept while disconnected; send() returns false past it
  // {getItem, setItem} keeping the identity: localStorage (one user for every tab), else
  // sessionStorage, else memory (Node; null also means memory).
  storage: undefined,
  // The WebSocket constructor: globalThis.WebSocket (browsers, Node 22); in Node 20 the
  // `ws` package: connect(url, { WebSocket: (await import("ws")).WebSocket }).
  WebSocket: undefined,
  // A JWT sent as ?access_token=: a string, or a function (may be async) called before every
  // (re)connect, so an expired token is refreshed. A close 4401 (bad or expired token) calls
  // it again; with a fixed string the client stops there (the same token cannot get better).
  token: undefined,
  identity(text) {
    if (typeof text !== "string" || text[0] !== "{") return null;
    try {
      const m = JSON.parse(text);
      return m && m.event === "connected" && typeof m.user_id === "string" ? m : null;
    } catch {
      return null;
    }
  },
};

// Close codes with a meaning for the client. 4401: the JWT was refused (bad or expired);
// 4403: refused by the server's function; 4001: the server said "do not reconnect" (an
// admin's disconnect). 4000 ("reconnect") and every other code: reconnect, with backoff.
const UNAUTHORIZED = 4401, FORBIDDEN = 4403, NO_RECONNECT = 4001;
const OPEN = 1; // WebSocket.OPEN, without needing the constructor

function memoryStorage() {
  const m = new Map();
  return { getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)) };
}

function defaultStorage() {
  for (const name of ["localStorage", "sessionStorage"])
    try {
      const s = globalThis[name];
      if (s && typeof s.getItem === "function") return s;
    } catch {
      // a sandboxed frame throws on access: try the next
    }
  return memoryStorage();
}

export function connect(url, options = {}) {
  const opt = { ...defaults, ...options };
  if (!opt.storage) opt.storage = defaultStorage();
  const WS = opt.WebSocket ?? globalThis.WebSocket;
  if (typeof WS !== "function")
    throw new TypeError("no WebSocket: pass the WebSocket option (Node 20: the ws package)");
  const handlers = { message: [], open: [], close: [], identity: [] };
  let socket = null;
  let attempt = 0;
  let timer = null;
  let closedByUser = false;
  let pending = []; // sent while disconnected, flushed on open (in order)
  let ready = false; // the socket is open and confirmed (confirm): sends go straight to it
  let settle = null;

  const load = () => {
    try {
      return JSON.parse(opt.storage?.getItem(opt.storageKey) || "null");
    } catch {
      return null;
    }
  };
  const save = (id) => opt.storage?.setItem(opt.storageKey, JSON.stringify(id));
  const emit = (name, ...args) => handlers[name].forEach((fn) => fn(...args));

  function target(jwt) {
    const id = load();
    const resume = id && id.user_id && id.token;
    if (!resume && !jwt) return url;
    const u = new URL(url, typeof location !== "undefined" ? location.href : undefined);
    if (resume) {
      u.searchParams.set("user_id", id.user_id);
      u.searchParams.set("token", id.token);
    }
    if (jwt) u.searchParams.set("access_token", jwt);
    return u.toString();
  }

  // A token function runs before each attempt; a plain one (or none) keeps open() synchronous.
  function open() {
    timer = null;
    if (typeof opt.token !== "function") return dial(opt.token);
    let pending;
    try {
      pending = Promise.resolve(opt.token());
    } catch (err) {
      pending = Promise.reject(err);
    }
    pending.then(
      (jwt) => {
        if (!closedByUser) dial(jwt);
      },
      () => {
        // No token now (the identity provider is down?): try again later, with backoff.
        if (!closedByUser) schedule();
      },
    );
  }

  function dial(jwt) {
    socket = new WS(target(typeof jwt === "string" && jwt ? jwt : null), opt.protocols);
    socket.binaryType = "arraybuffer";
    ready = false;
    // A server refusing at the door (4401, 4403) completes the upgrade and closes at once: the
    // connection counts as open (the open event, the queued messages sent, the backoff reset)
    // only after its first message or settleMs without a close, so a refused attempt neither
    // claims to be open nor takes the queued messages with it.
    // A failed attempt is told by its close event; the `ws` package (an EventEmitter) throws an
    // 'error' nobody listens to, so it is listened to.
    socket.onerror = () => {};
    const ws = socket;
    socket.onopen = () => {
      settle = setTimeout(() => confirm(ws), opt.settleMs);
    };
    socket.onmessage = (e) => {
      if (!ready) confirm(ws);
      const id = opt.identity(e.data);
      if (id) {
        const known = load();
        // A resumed user's greeting carries no token: keep the one we have. A fresh
        // id (the old one was unknown or its token wrong) replaces it.
        if (id.token || !known || known.user_id !== id.user_id)
          save({ user_id: id.user_id, token: id.token ?? null });
        emit("identity", { user_id: id.user_id });
        return;
      }
      emit("message", e.data, { seq: null });
    };
    socket.onclose = (e) => {
      socket = null;
      ready = false;
      clearTimeout(settle);
      const hint = /;\s*(no-reconnect|reconnect)\s*$/.exec(e.reason || "")?.[1];
      // Stop: told so, refused by the function, or a refused token that cannot change.
      if (
        hint === "no-reconnect" ||
        e.code === NO_RECONNECT ||
        e.code === FORBIDDEN ||
        (e.code === UNAUTHORIZED && typeof opt.token !== "function")
      )
        closedByUser = true;
      emit("close", { code: e.code, reason: e.reason, willReconnect: !closedByUser });
      // 4401 with a token function: the next attempt asks it for a fresh token (backoff still
      // applies, so a provider that keeps handing out a bad token is not hammered).
      if (!closedByUser) schedule(hint === "reconnect" ? opt.shutdownSpreadMs : 0);
    };
  }

  // Its timer is cleared by the close, so ws is the live socket.
  function confirm(ws) {
    if (ready) return;
    clearTimeout(settle);
    ready = true;
    attempt = 0;
    const queued = pending;
    pending = [];
    queued.forEach((d) => ws.send(d));
    // session_id, resumed and replayed describe a session (null, false, 0 without one).
    const user_id = load()?.user_id ?? null;
    emit("open", { user_id, session_id: null, resumed: false, replayed: 0 });
  }

  // Full jitter (a random delay up to the exponential bound, at least `spread` after a
  // drain): clients that lost the same server do not all come back in the same millisecond.
  function schedule(spread = 0) {
    const bound = Math.max(spread, Math.min(opt.maxDelayMs, opt.minDelayMs * 2 ** attempt++));
    timer = setTimeout(open, Math.random() * bound);
  }

  open();
  return {
    on(name, fn) {
      if (!handlers[name]) throw new Error(`unknown event ${name}`);
      handlers[name].push(fn);
      return this;
    },
    // Sends now when connected; otherwise keeps the message for the next connection (at most
    // maxPending of them: a client offline for hours must not grow without bound).
    send(data) {
      if (socket && ready && socket.readyState === OPEN) socket.send(data);
      else if (pending.length < opt.maxPending) pending.push(data);
      else return false;
      return true;
    },
    close(code = 1000, reason = "") {
      closedByUser = true;
      if (timer) clearTimeout(timer);
      if (socket) socket.close(code, reason);
    },
    get userId() {
      return load()?.user_id ?? null;
    },
    get connected() {
      return !!socket && ready && socket.readyState === OPEN;
    },
  };
}
