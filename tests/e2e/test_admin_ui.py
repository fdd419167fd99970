"""The operator's page /_/ui in headless Chromium: it shows the users online, the rooms, the
functions with their versions and the quarantine, read from the admin API with the token the
page was given; the page itself holds no data and a wrong token shows the login form."""

import asyncio
import http.client
import json

from harness import *  # noqa: F401,F403
from test_browser import CHROMIUM, Page


async def test_ui_shows_users_rooms_functions_and_quarantine():
    if not CHROMIUM:
        raise Fail("chromium is not installed (tools/install-deps installs it)")
    with Host(plugins={"__websocket__": tplugin("rooms_ws"), "echo": example("echo"),
                       "crash": tplugin("crash")}) as h:
        # A function quarantined after its crashes (at once in-process; after a few with
        # --isolation process), before the sockets connect (an in-process crash drops them).
        for _ in range(10):
            try:
                h.http("GET", "/crash?do=segv", timeout=5)
            except (OSError, http.client.HTTPException):
                pass
            wait_until(lambda: h.http("GET", "/_/healthz").status == 200, 10,
                       what="healthz after a crash")
            if h.http("GET", "/_/status", auth=True).json["quarantine"]:
                break
        assert "crash" in h.http("GET", "/_/status", auth=True).json["quarantine"]
        a, b = await h.ws(), await h.ws()
        await cmd(a, "join lobby")
        await cmd(b, "join lobby")
        await cmd(b, "join ops-room")
        uids = sorted(r[0] for r in h.sql("SELECT user_id FROM online_users"))
        assert len(uids) == 2, uids
        r = h.http("GET", "/_/ui")
        assert r.status == 200 and r.headers["content-type"].startswith("text/html"), r
        assert "frame-ancestors 'none'" in r.headers.get("content-security-policy", ""), r.headers
        assert not any(u in r.text for u in uids), "the page shell carries data"
        page = Page(h.port, url=f"http://127.0.0.1:{h.port}/_/ui#token={ADMIN_TOKEN}")
        try:
            await page.attach()

            async def table(name):
                return json.loads(await page.eval(
                    f"JSON.stringify([...document.querySelectorAll('#{name} tr')].map("
                    "(tr) => [...tr.cells].map((c) => c.textContent)))") or "[]")

            async def users_shown():
                return sorted(row[0] for row in (await table("users"))[1:]) == uids

            await async_wait_until(users_shown, 20, what="the page listing both users")
            assert await table("rooms") == [["room", "users", "sockets"], ["lobby", "2", "2"],
                                            ["ops-room", "1", "1"]], await table("rooms")
            funcs = {row[0]: row for row in (await table("functions"))[1:]}
            assert funcs["echo"][1] == "yes" and funcs["echo"][2] == "1", funcs
            assert "__websocket__" in funcs, funcs
            quarantined = [row[0] for row in (await table("quarantine"))[1:]]
            assert quarantined == ["crash"], await table("quarantine")
            crashes = [row[1] for row in (await table("crashes"))[1:]]
            assert crashes and set(crashes) == {"crash"}, await table("crashes")
            # The token left the address bar: it is in the tab's sessionStorage only.
            assert "token" not in await page.eval("location.href")
            # The disconnect button closes that user's socket.
            await page.eval("document.querySelector('#users tr:nth-child(2) button').click()")
            await async_wait_until(
                lambda: asyncio.to_thread(lambda: len(h.online_users()) == 1), 10,
                what="the disconnect button to close a socket")
            # A wrong token: the login form, and no data.
            await page.eval("sessionStorage.setItem('wshost-admin-token', 'wrong'); refresh()")
            await async_wait_until(
                lambda: page.eval("!document.getElementById('login').hidden && "
                                  "document.getElementById('main').hidden"), 10,
                what="the login form after a refused token")
        finally:
            await page.close()
        await a.close()
        await b.close()


if __name__ == "__main__":
    run(globals())
