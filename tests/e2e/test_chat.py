"""The example team chat (plugins/chat.c served as __websocket__, login and rooms;
plugins/chat_page.c at /chat_page) end to end: JWT login from CHAT_USERS, rooms every socket
of the user follows, presence, the throttled typing notice, the last 50 messages replayed on
join, a private message to an offline teammate delivered exactly once, the tick, /rooms.
Once over python-websockets (fast, every detail) and once in headless Chromium."""

import asyncio

import websockets

from harness import *  # noqa: F401,F403
from test_browser import CHROMIUM, Page

SECRET = "an-hs256-secret-of-more-than-32-bytes!!"
USERS = "alice:pw1,bob:pw2,carol:pw3"


def chat_host():
    chat = example("chat")
    return Host(plugins={"__websocket__": chat, "login": chat, "rooms": chat,
                         "chat_page": example("chat_page")},
                flags=["--jwt-secret", SECRET],
                env={"CHAT_USERS": USERS, "CHAT_TICK_MS": "300"})


def login(h, user, password):
    r = h.http("POST", "/login", json_body={"user": user, "password": password})
    assert r.status == 200, r
    return r.json["token"]


async def next_where(ws, pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        m = json.loads(await recv(ws, max(0.05, deadline - time.monotonic())))
        if pred(m):
            return m


async def drain(ws, timeout=0.4):
    """What arrives within timeout seconds (the tick keeps the line busy: a total bound)."""
    out, deadline = [], time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            out.append(json.loads(await asyncio.wait_for(ws.recv(), left)))
        except asyncio.TimeoutError:
            break
    return out


async def test_chat_over_websockets():
    with chat_host() as h:
        for user, pw in (("alice", "nope"), ("mallory", "pw1"), ("alice", None)):
            r = h.http("POST", "/login", json_body={"user": user, "password": pw})
            assert r.status == 401, r
        # Refused as a browser can read it: the 101, then close 4401 with the reason.
        code, reason, _ = await asyncio.to_thread(door_close, h.port, "")
        assert code == 4401 and "log in first" in reason, (code, reason)
        assert h.http("GET", "/rooms").status == 401
        ta, tb = login(h, "alice", "pw1"), login(h, "bob", "pw2")

        a = await h.ws("access_token=" + ta)
        await a.send(json.dumps({"join": "lobby"}))
        assert await next_where(a, lambda m: "event" in m) == \
            {"room": "lobby", "user": "alice", "event": "joined"}
        for i in range(55):  # more than the 50 kept
            await a.send(json.dumps({"say": f"m{i}", "to": "lobby"}))
        await next_where(a, lambda m: m.get("say") == "m54")
        # bob has never connected: the private message waits in his outbox.
        await a.send(json.dumps({"dm": "bob", "say": "psst"}))
        await a.send(json.dumps({"dm": "nobody", "say": "x"}))
        assert await next_where(a, lambda m: "error" in m) == {"error": "no such user"}

        b = await h.ws("access_token=" + tb)
        assert await recv_json(b) == {"dm": "bob", "user": "alice", "say": "psst"}
        await b.send(json.dumps({"join": "lobby"}))
        history = []
        while True:
            m = await recv_json(b)
            if m.get("event") == "joined" and m["user"] == "bob":
                break
            if "count" not in m:  # ticks are live only, never history
                history.append(m)
        assert len(history) == 50, history
        assert history[-1] == {"room": "lobby", "user": "alice", "say": "m54"}, history[-1]
        assert history[0] == {"room": "lobby", "user": "alice", "say": "m5"}, history[0]
        assert await next_where(a, lambda m: m.get("event") == "joined") == \
            {"room": "lobby", "user": "bob", "event": "joined"}

        # Typing: at most one notice per user and room a second.
        for _ in range(5):
            await a.send(json.dumps({"typing": "lobby"}))
        got = [m for m in await drain(b, 0.5) if m.get("event") == "typing"]
        assert got == [{"room": "lobby", "user": "alice", "event": "typing"}], got
        await asyncio.sleep(0.6)
        await a.send(json.dumps({"typing": "lobby"}))
        assert await next_where(b, lambda m: m.get("event") == "typing")

        # The tick counts the room's users.
        assert await next_where(b, lambda m: "count" in m) == {"room": "lobby", "count": 2}
        await b.send(json.dumps({"say": "hi alice", "to": "lobby"}))
        assert await next_where(a, lambda m: m.get("say") == "hi alice") == \
            {"room": "lobby", "user": "bob", "say": "hi alice"}

        rooms = h.http("GET", "/rooms", headers={"Authorization": "Bearer " + ta})
        assert rooms.status == 200, rooms
        assert rooms.json == {"rooms": [{"room": "lobby", "users": 2, "sockets": 2}]}, rooms.json

        # bob's second tab follows his rooms without joining, and the private message is not
        # delivered again.
        b2 = await h.ws("access_token=" + tb)
        await a.send(json.dumps({"say": "both tabs", "to": "lobby"}))
        seen = await drain(b2, 0.6)
        assert not any("dm" in m for m in seen), seen
        assert {"room": "lobby", "user": "alice", "say": "both tabs"} in seen, seen
        await b.close()
        await b2.close()
        assert await next_where(a, lambda m: m.get("event") == "left") == \
            {"room": "lobby", "user": "bob", "event": "left"}
        b3 = await h.ws("access_token=" + tb)
        assert not any("dm" in m for m in await drain(b3, 0.6))
        assert await next_where(a, lambda m: m.get("event") == "joined")  # b3 followed
        await b3.send(json.dumps({"leave": "lobby"}))
        assert await next_where(a, lambda m: m.get("event") == "left") == \
            {"room": "lobby", "user": "bob", "event": "left"}
        await a.send(json.dumps({"say": "gone?", "to": "lobby"}))
        assert not any(m.get("say") == "gone?" for m in await drain(b3, 0.6))
        for ws in (a, b3):
            await ws.close()


async def test_chat_in_chromium():
    if not CHROMIUM:
        raise Fail("chromium is not installed (tools/install-deps installs it)")
    with chat_host() as h:
        url = f"http://127.0.0.1:{h.port}/chat_page"
        assert "/_/client.js" in h.http("GET", "/chat_page").text
        pages = {u: Page(h.port, url=url) for u in ("alice", "bob", "carol")}
        try:
            for p in pages.values():
                await p.attach()

            async def seen(user):
                return json.loads(await pages[user].eval(
                    "JSON.stringify(window.chat ? window.chat.seen : [])") or "[]")

            async def until(user, pred, what):
                async def check():
                    return any(pred(m) for m in await seen(user))
                await async_wait_until(check, 15, what=what)

            async def log_in(user, pw):
                await async_wait_until(
                    lambda: pages[user].eval("typeof window.login == 'function'"), 15,
                    what="the page's script")
                await pages[user].eval(f"document.getElementById('user').value = '{user}';"
                                       f"document.getElementById('password').value = '{pw}';"
                                       "login()")
                await until(user, lambda m: m.get("event") == "joined" and m["user"] == user,
                            f"{user} joined")

            await log_in("alice", "pw1")
            await pages["alice"].eval(
                "document.getElementById('text').value = 'before bob'; say()")
            await pages["alice"].eval(
                "document.getElementById('dm').value = 'carol';"
                "document.getElementById('text').value = 'for carol'; say();"
                "document.getElementById('dm').value = ''")
            await until("alice", lambda m: m.get("say") == "before bob", "alice's message")
            await log_in("bob", "pw2")
            # History on join: bob saw alice's earlier message.
            await until("bob", lambda m: m.get("say") == "before bob", "history for bob")
            await until("alice", lambda m: m.get("event") == "joined" and m["user"] == "bob",
                        "presence: bob joined")
            await pages["bob"].eval("document.getElementById('text').value = 'hi'; say()")
            await until("alice", lambda m: m.get("say") == "hi" and m["user"] == "bob",
                        "bob's message at alice")
            await until("bob", lambda m: m.get("count") == 2, "the tick's count")
            # carol was offline: the private message reaches her exactly once when she logs in.
            await log_in("carol", "pw3")
            await until("carol", lambda m: m.get("dm") == "carol", "carol's private message")
            await asyncio.sleep(0.5)
            dms = [m for m in await seen("carol") if "dm" in m]
            assert dms == [{"dm": "carol", "user": "alice", "say": "for carol"}], dms
            assert "alice to you: for carol" in await pages["carol"].eval(
                "document.getElementById('log').textContent")
            token = login(h, "alice", "pw1")
            rooms = h.http("GET", "/rooms", headers={"Authorization": "Bearer " + token}).json
            assert rooms == {"rooms": [{"room": "lobby", "users": 3, "sockets": 3}]}, rooms
            await pages["bob"].eval("leave()")
            await until("alice", lambda m: m.get("event") == "left" and m["user"] == "bob",
                        "presence: bob left")
        finally:
            for p in pages.values():
                await p.close()


if __name__ == "__main__":
    run(globals())
