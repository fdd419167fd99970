// wshost.js: the browser client of a wshost server, one ES module with no build step.
// Owns one logical connection: it keeps the user's id and resume token (localStorage),
// reconnects with exponential backoff and jitter, and resumes as the same user each time.
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
  maxPending: 1000, // messages kept while disconnected; send() returns false past it
  storage: typeof localStorage !== "undefined" ? localStorage : null,
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

export function connect(url, options = {}) {
  const opt = { ...defaults, ...options };
  const handlers = { message: [], open: [], close: [], identity: [] };
  let socket = null;
  let attempt = 0;
  let timer = null;
  let closedByUser = false;
  let pending = []; // sent while disconnected, flushed on open (in order)

  const load = () => {
    try {
      return JSON.parse(opt.storage?.getItem(opt.storageKey) || "null");
    } catch {
      return null;
    }
  };
  const save = (id) => opt.storage?.setItem(opt.storageKey, JSON.stringify(id));
  const emit = (name, arg) => handlers[name].forEach((fn) => fn(arg));

  function target() {
    const id = load();
    if (!id || !id.user_id || !id.token) return url;
    const u = new URL(url, typeof location !== "undefined" ? location.href : undefined);
    u.searchParams.set("user_id", id.user_id);
    u.searchParams.set("token", id.token);
    return u.toString();
  }

  function open() {
    timer = null;
    socket = new WebSocket(target(), opt.protocols);
    socket.binaryType = "arraybuffer";
    socket.onopen = () => {
      attempt = 0;
      const queued = pending;
      pending = [];
      queued.forEach((d) => socket.send(d));
      emit("open", { user_id: load()?.user_id ?? null });
    };
    socket.onmessage = (e) => {
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
      emit("message", e.data);
    };
    socket.onclose = (e) => {
      socket = null;
      const hint = /;\s*(no-reconnect|reconnect)\s*$/.exec(e.reason || "")?.[1];
      if (hint === "no-reconnect") closedByUser = true;
      emit("close", { code: e.code, reason: e.reason, willReconnect: !closedByUser });
      if (!closedByUser) schedule(hint === "reconnect" ? opt.shutdownSpreadMs : 0);
    };
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
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(data);
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
      return !!socket && socket.readyState === WebSocket.OPEN;
    },
  };
}
