"""The example chat (plugins/chat.c served as __websocket__, plugins/chat_page.c at
/chat_page) end to end: join notices to the room, messages, the typing indicator to all but
the typist, the member count every second, and a leave notice when a socket closes."""

from harness import *  # noqa: F401,F403


async def next_where(ws, pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        m = json.loads(await recv(ws, max(0.05, deadline - time.monotonic())))
        if pred(m):
            return m


async def test_chat_in_a_room():
    with Host(plugins={"__websocket__": example("chat"), "chat_page": example("chat_page")}) as h:
        page = h.http("GET", "/chat_page")
        assert page.status == 200 and "text/html" in page.headers["content-type"], page
        assert "new WebSocket" in page.text
        a, b, other = await h.ws(), await h.ws(), await h.ws()
        await a.send(json.dumps({"join": "lobby"}))
        ja = await next_where(a, lambda m: "join" in m)
        await b.send(json.dumps({"join": "lobby"}))
        await other.send(json.dumps({"join": "elsewhere"}))
        jb = await next_where(a, lambda m: m.get("join") and m["user"] != ja["user"])
        await b.send(json.dumps({"typing": "lobby"}))
        t = await next_where(a, lambda m: "typing" in m)
        assert t == {"typing": "lobby", "user": jb["user"]}
        await b.send(json.dumps({"say": "hi all", "to": "lobby"}))
        said = await next_where(a, lambda m: "say" in m)
        assert said == {"to": "lobby", "say": "hi all", "user": jb["user"]}
        # b gets its own message but not its own typing indicator.
        got_b = []
        while True:
            m = json.loads(await recv(b))
            got_b.append(m)
            if "say" in m:
                break
        assert not any("typing" in m for m in got_b), got_b
        count = await next_where(a, lambda m: "count" in m, timeout=5)
        assert count == {"room": "lobby", "count": 2}, count
        await b.close()
        left = await next_where(a, lambda m: "leave" in m)
        assert left == {"leave": "lobby", "user": jb["user"]}
        # Nothing of lobby reached the other room.
        for m in [json.loads(x) for x in await drain_all(other)]:
            assert m.get("room", m.get("join", m.get("to"))) == "elsewhere", m
        await a.close()
        await other.close()


async def drain_all(ws, timeout=0.3):
    out = []
    while True:
        try:
            out.append(await asyncio.wait_for(ws.recv(), timeout))
        except asyncio.TimeoutError:
            return out


if __name__ == "__main__":
    run(globals())
