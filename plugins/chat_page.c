/* chat_page: GET /chat_page, the page of plugins/chat.c: log in (POST /login), then one
 * connection through /_/client.js with ?access_token=; join a room, talk, type, message a
 * teammate directly (queued while they are away). Its state is in window.chat for tests. */
#include <cloud.h>

static const char page[] =
    "<!doctype html><meta charset=utf-8><title>wshost chat</title>\n"
    "<form id=login onsubmit='login(); return false'><input id=user placeholder=user>\n"
    "<input id=password type=password placeholder=password> <button>log in</button></form>\n"
    "<div id=chat hidden><input id=room value=lobby> <button onclick=join()>join</button>\n"
    "<button onclick=leave()>leave</button> <span id=status></span><br>\n"
    "<input id=dm placeholder='to (empty: the room)'> <input id=text size=50 oninput=typing()\n"
    "  onkeydown=\"if (event.key == 'Enter') say()\"><pre id=log></pre></div>\n"
    "<script type=module>\n"
    "import { connect } from '/_/client.js';\n"
    "const $ = (id) => document.getElementById(id), room = () => $('room').value;\n"
    "const chat = (window.chat = { seen: [], ws: null });\n"
    "const send = (o) => chat.ws.send(JSON.stringify(o));\n"
    "const show = (line) => ($('log').textContent += line + '\\n');\n"
    "window.login = async () => {\n"
    "  const r = await fetch('/login', { method: 'POST', headers: { 'content-type':\n"
    "    'application/json' }, body: JSON.stringify({ user: $('user').value,\n"
    "    password: $('password').value }) });\n"
    "  if (!r.ok) return show('login refused');\n"
    "  const { token } = await r.json();\n"
    "  chat.ws = connect(`ws://${location.host}/?access_token=${token}`,\n"
    "    { storageKey: 'chat-' + $('user').value });\n"
    "  chat.ws.on('open', () => { chat.open = true; join(); });\n"
    "  chat.ws.on('message', receive);\n"
    "  $('login').hidden = true; $('chat').hidden = false;\n"
    "};\n"
    "window.join = () => { $('log').textContent = ''; send({ join: room() }); };\n"
    "window.leave = () => send({ leave: room() });\n"
    "window.typing = () => $('dm').value || send({ typing: room() });\n"
    "window.say = () => {\n"
    "  const to = $('dm').value, say = $('text').value;\n"
    "  send(to ? { dm: to, say } : { to: room(), say });\n"
    "  if (to) show(`to ${to}: ${say}`);\n"
    "  $('text').value = '';\n"
    "};\n"
    "function receive(data) {\n"
    "  const m = JSON.parse(data);\n"
    "  chat.seen.push(m);\n"
    "  if (m.count !== undefined) $('status').textContent = `${m.count} in ${m.room}`;\n"
    "  else if (m.event == 'typing') $('status').textContent = `${m.user} is typing...`;\n"
    "  else if (m.event) show(`${m.user} ${m.event} ${m.room}`);\n"
    "  else if (m.dm) show(`${m.user} to you: ${m.say}`);\n"
    "  else if (m.say) show(`${m.user}: ${m.say}`);\n"
    "}\n"
    "</script>\n";

CLOUD_FUNCTION(ctx) {
  int rc = cloud_response_text(ctx, 200, page);
  return rc < 0 ? rc : cloud_response_header(ctx, "content-type", "text/html; charset=utf-8");
}
