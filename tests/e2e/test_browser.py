"""test_browser.py: the browser client (sdk/js/wshost.js, served at /_/client.js) in a real
headless Chromium (Debian's chromium, driven over the DevTools protocol with python3-websockets).

The page loses its host (kill -9), the host comes back on the same port and database, and the
page reconnects by itself as the same user and receives a message pushed while it was away.
"""

import asyncio
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import urllib.request

import websockets

from harness import Fail, Host, async_wait_until, example, free_port, run, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PAGE = """<!doctype html><meta charset="utf-8"><title>wshost client test</title>
<script type="module">
import { connect } from "http://127.0.0.1:%(port)d/_/client.js";
window.events = [];
const ws = connect("ws://127.0.0.1:%(port)d/", { minDelayMs: 100, maxDelayMs: 800 });
ws.on("open", (e) => events.push(["open", e.user_id]));
ws.on("identity", (e) => events.push(["identity", e.user_id]));
ws.on("message", (d) => events.push(["message", d]));
ws.on("close", (e) => events.push(["close", e.code]));
window.ws = ws;
</script>"""


class Page:
    """One Chromium tab on a page served from a second origin (so the module is imported
    across origins, as an app would from its own site)."""

    def __init__(self, host_port, url=None):
        """url: open that page instead of serving the client test page."""
        self.server = None
        self.profile = tempfile.mkdtemp(prefix="wshost-chromium-")
        if url is None:
            url = self._serve((PAGE % {"port": host_port}).encode())
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.devtools = None
        self.next_id = 0

    def _serve(self, body):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    async def attach(self):
        # Chromium names its DevTools port on stderr; the page target comes from /json/list.
        line = await asyncio.wait_for(asyncio.to_thread(self._devtools_line), 30)
        port = int(re.search(r"ws://127\.0\.0\.1:(\d+)/", line).group(1))

        def page_target():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            return pages[0]["webSocketDebuggerUrl"] if pages else None

        target = await async_wait_until(lambda: asyncio.to_thread(page_target), 15,
                                        what="a page target")
        self.devtools = await websockets.connect(target, max_size=None)

    def _devtools_line(self):
        for line in self.proc.stderr:
            if "DevTools listening on" in line:
                threading.Thread(target=self.proc.stderr.read, daemon=True).start()
                return line
        raise Fail("chromium exited without a DevTools endpoint")

    async def eval(self, expr):
        self.next_id += 1
        await self.devtools.send(json.dumps({"id": self.next_id, "method": "Runtime.evaluate",
                                             "params": {"expression": expr,
                                                        "returnByValue": True}}))
        while True:
            m = json.loads(await asyncio.wait_for(self.devtools.recv(), 10))
            if m.get("id") == self.next_id:
                return m["result"]["result"].get("value")

    async def events(self):
        return json.loads(await self.eval("JSON.stringify(window.events || [])") or "[]")

    async def close(self):
        if self.devtools:
            await self.devtools.close()
        self.proc.kill()
        self.proc.wait(10)
        if self.server:
            self.server.shutdown()
        shutil.rmtree(self.profile, ignore_errors=True)


async def test_page_reconnects_as_same_user_and_gets_queued_message():
    if not CHROMIUM:
        raise Fail("chromium is not installed (tools/install-deps installs it)")
    port = free_port()
    # The last --port wins over the harness's --port 0: the page needs the same address twice.
    h = Host(flags=["--port", str(port)])
    h.start()
    page = Page(port)
    try:
        await page.attach()

        async def identity():
            ev = await page.events()
            ids = [e[1] for e in ev if e[0] == "identity"]
            return ids[0] if ids else None

        uid = await async_wait_until(identity, 20, what="the page's greeting")
        stored = json.loads(await page.eval("localStorage.getItem('wshost')"))
        assert stored["user_id"] == uid and len(stored["token"]) == 43, stored
        wait_until(lambda: h.online_users() == [uid], 5, what="the page online")

        # The page talks: an answer comes back through the client's on('message').
        await page.eval("ws.send('hello from the page')")
        await async_wait_until(
            lambda: _has(page, ["message", "I have received your message"]), 10,
            what="the answer to the page's message")

        h.kill9()
        await async_wait_until(lambda: _count(page, "close"), 10, what="the page seeing the close")

        # Back without __websocket__: the page's reconnects are refused (503) while a message
        # for its user is queued, so the queued path is what delivers it.
        os.remove(os.path.join(h.plugins_dir, "__websocket__.so"))
        h.start()
        assert h.push(uid, "pushed while you were away", admin=True).json == {"delivered": 0}
        await asyncio.sleep(1.0)
        closes_before = await _count(page, "close")
        assert closes_before >= 2, "the page kept trying while the function was missing"
        h.add_plugin("__websocket__", example("__websocket__"))

        await async_wait_until(
            lambda: _has(page, ["message", "pushed while you were away"]), 20,
            what="the queued message after the page reconnected by itself")
        ev = await page.events()
        ids = [e[1] for e in ev if e[0] == "identity"]
        assert set(ids) == {uid}, f"resumed as another user: {ids}"
        opens = [e for e in ev if e[0] == "open"]
        assert len(opens) >= 2 and opens[-1][1] == uid, opens
        # The connection's row is in the store's next batch (up to 20 ms after the frames of a
        # resumed user may leave): wait for it rather than race it.
        await async_wait_until(lambda: asyncio.to_thread(lambda: h.online_users() == [uid]), 5,
                               what="the page's user online")
        assert "token=" not in h.log(), "a resume token reached the log"
    finally:
        await page.close()
        h.stop()


async def _has(page, event):
    return event in await page.events()


async def _count(page, kind):
    return sum(1 for e in await page.events() if e[0] == kind)


async def test_client_js_is_served_publicly():
    with Host() as h:
        r = h.http("GET", "/_/client.js")
        assert r.status == 200, r
        assert r.headers["content-type"].startswith("text/javascript"), r.headers
        assert r.headers.get("access-control-allow-origin") == "*"
        src_path = os.path.join(os.path.dirname(__file__), "..", "..", "sdk", "js", "wshost.js")
        with open(src_path, "rb") as f:
            assert r.body == f.read(), "/_/client.js is not sdk/js/wshost.js"
        assert "export function connect" in r.text


if __name__ == "__main__":
    run(globals())
