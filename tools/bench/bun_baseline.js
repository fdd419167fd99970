// bun_baseline.js: the example function's job on Bun's built-in WebSocket server (uWebSockets
// underneath), for `make bench` to compare build/wshost against. Owns nothing the host uses.
//
// Same contract as node_baseline.js and plugins/__websocket__.so + push.so: a random user id per
// connection and the greeting {"event":"connected","user_id":..,"token":..}; every message
// answered "I have received your message"; POST /push {"user_id","message"} -> {"delivered":n};
// GET /_/healthz -> 200. No persistence.
//
//   bun bun_baseline.js [port]      (default 8093)
const port = +(process.argv[2] || 8093);
const users = new Map(); // user id -> socket
const json = (status, obj) =>
  new Response(JSON.stringify(obj), { status, headers: { "content-type": "application/json" } });
const id = (n) => Buffer.from(crypto.getRandomValues(new Uint8Array(n))).toString("base64url");

Bun.serve({
  port,
  hostname: "127.0.0.1",
  async fetch(req, server) {
    const url = new URL(req.url);
    if (req.method === "GET" && url.pathname === "/_/healthz") return json(200, { ok: true });
    if (req.method === "POST" && url.pathname === "/push") {
      let body;
      try {
        body = await req.json();
      } catch (e) {
        return json(400, { error: "Bad Request", message: e.message });
      }
      if (!body || typeof body.user_id !== "string" || typeof body.message !== "string")
        return json(400, { error: "user_id and message required" });
      const socket = users.get(body.user_id);
      if (!socket) return json(404, { error: "no such user" });
      socket.send(body.message);
      return json(200, { delivered: 1 });
    }
    if (server.upgrade(req, { data: { userId: id(16) } })) return;
    return json(404, { error: "Function Not Found" });
  },
  websocket: {
    maxPayloadLength: 1 << 20, // the host's --max-message default
    open(ws) {
      users.set(ws.data.userId, ws);
      ws.send(JSON.stringify({ event: "connected", user_id: ws.data.userId, token: id(32) }));
    },
    message(ws) {
      ws.send("I have received your message");
    },
    close(ws) {
      users.delete(ws.data.userId);
    },
  },
});
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));
