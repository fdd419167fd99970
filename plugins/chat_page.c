/* chat_page: GET /chat_page, a one-file page for plugins/chat.c (served as __websocket__):
 * join a room, talk, see who is typing and how many are in the room. */
#include <cloud.h>

static const char page[] =
    "<!doctype html><meta charset=utf-8><title>wshost chat</title>\n"
    "<input id=room value=lobby> <button onclick=join()>join</button><br>\n"
    "<input id=text size=50 oninput=typing() onkeydown=\"if(event.key=='Enter')say()\">\n"
    "<span id=status></span><pre id=log></pre>\n"
    "<script>\n"
    "const ws = new WebSocket(`ws://${location.host}/__websocket__`), $ = (id) =>\n"
    "  document.getElementById(id);\n"
    "const send = (o) => ws.send(JSON.stringify(o)), room = () => $('room').value;\n"
    "const join = () => send({join: room()}), typing = () => send({typing: room()});\n"
    "const say = () => { send({say: $('text').value, to: room()}); $('text').value = ''; };\n"
    "ws.onmessage = (e) => {\n"
    "  const m = JSON.parse(e.data);\n"
    "  if (m.count) $('status').textContent = `${m.count} in ${m.room}`;\n"
    "  else if (m.typing) $('status').textContent = `${m.user.slice(0, 6)} is typing`;\n"
    "  else if (m.say) $('log').textContent += `${m.user.slice(0, 6)}: ${m.say}\\n`;\n"
    "  else if (m.join || m.leave)\n"
    "    $('log').textContent += `${m.user.slice(0, 6)} ${m.join ? 'joined' : 'left'}\\n`;\n"
    "};\n"
    "</script>\n";

CLOUD_FUNCTION(ctx) {
  int rc = cloud_response_text(ctx, 200, page);
  return rc < 0 ? rc : cloud_response_header(ctx, "content-type", "text/html; charset=utf-8");
}
