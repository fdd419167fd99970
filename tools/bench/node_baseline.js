// node_baseline.js: the example function's job on Node.js and the `ws` package (what Laf runs on),
// for `make bench` to compare build/wshost against. Owns nothing the host uses.
//
// Same contract as plugins/__websocket__.so + plugins/push.so: a random user id per connection
// and the greeting {"event":"connected","user_id":..,"token":..}; every message answered
// "I have received your message"; POST /push {"user_id","message"} -> 200 {"delivered":n};
// GET /_/healthz -> 200. No persistence, like Laf's in-process wsMap.
//
//   node node_baseline.js [port]      (default 8092; `ws` is found through NODE_PATH)
'use strict';
const http = require('http');
const crypto = require('crypto');
const { WebSocketServer } = require('ws');

const port = +(process.argv[2] || 8092);
const users = new Map(); // user id -> socket, Laf's wsMap

function reply(res, status, obj) {
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/_/healthz') return reply(res, 200, { ok: true });
  if (req.method !== 'POST' || req.url !== '/push') return reply(res, 404, { error: 'Function Not Found' });
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString());
    } catch (e) {
      return reply(res, 400, { error: 'Bad Request', message: e.message });
    }
    if (!body || typeof body.user_id !== 'string' || typeof body.message !== 'string')
      return reply(res, 400, { error: 'user_id and message required' });
    const socket = users.get(body.user_id);
    if (!socket) return reply(res, 404, { error: 'no such user' });
    socket.send(body.message);
    reply(res, 200, { delivered: 1 });
  });
});

const wss = new WebSocketServer({ server });
wss.on('connection', (socket) => {
  const userId = crypto.randomBytes(16).toString('base64url');
  const token = crypto.randomBytes(32).toString('base64url');
  users.set(userId, socket);
  socket.send(JSON.stringify({ event: 'connected', user_id: userId, token }));
  socket.on('message', (data) => {
    data.toString();
    socket.send('I have received your message');
  });
  socket.on('close', () => users.delete(userId));
  socket.on('error', () => {});
});

server.listen(port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
