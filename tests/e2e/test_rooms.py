"""Rooms and broadcast end to end (CONTRACT 8) through tests/plugins/rooms_ws.c:
only a room's messages reach its members, `except` leaves the sender out, a closed socket
leaves its rooms (GET /_/rooms/<name>), broadcast reaches every socket, /_/status counts rooms,
sends from 8 threads at once arrive whole (run under ASan in make test-asan, TSan in
make test-tsan). Also the host-private invocation record: a plugin that forges
ctx->socket / ctx->host gets errors, and nothing is written through them; and a function
built against the ABI 1 header still loads and serves."""

import asyncio

from harness import *  # noqa: F401,F403


def rooms_host(**kw):
    return Host(plugins={"__websocket__": tplugin("rooms_ws")}, **kw)


async def test_two_rooms_receive_only_their_messages():
    with rooms_host() as h:
        a, b, c = [await h.ws() for _ in range(3)]
        assert await cmd(a, "join red") == "0"
        assert await cmd(a, "join blue") == "0"
        assert await cmd(b, "join red") == "0"
        assert await cmd(c, "join green") == "0"
        assert await cmd(a, "join red") == "0", "joining twice is fine"
        # c says something to red and to blue (it is in neither: sending needs no membership).
        assert await cmd(c, "sayall red to-red") == "2"
        assert await cmd(c, "sayall blue to-blue") == "1"
        assert await cmd(c, "sayall green to-green") == "1"
        got_a, got_b, got_c = await drain(a), await drain(b), await drain(c)
        assert sorted(got_a) == ["to-blue", "to-red"], got_a
        assert got_b == ["to-red"], got_b
        assert got_c == ["to-green"], got_c
        # Leaving stops delivery; leaving a room one is not in is CLOUD_EINVAL.
        assert await cmd(a, "leave red") == "0"
        assert await cmd(a, "leave red") == str(CLOUD_EINVAL)
        assert await cmd(c, "sayall red again") == "1"
        assert await drain(a) == []
        assert await drain(b) == ["again"]
        assert json.loads(await cmd(a, "rooms")) == ["blue"]
        # Bad names are refused.
        assert await cmd(a, "join bad/name") == str(CLOUD_EINVAL)
        assert await cmd(a, "join " + "x" * 129) == str(CLOUD_EINVAL)
        assert await cmd(a, "join " + "x" * 128) == "0"
        assert await cmd(a, "join A-z_0.9:@x") == "0"
        for ws in (a, b, c):
            await ws.close()


async def test_except_excludes_the_sender():
    with rooms_host() as h:
        a, b = await h.ws(), await h.ws()
        for ws in (a, b):
            assert await cmd(ws, "join lobby") == "0"
        assert await cmd(a, "say lobby hello") == "1"
        assert await drain(a) == []
        assert await drain(b) == ["hello"]
        assert await cmd(a, "sayall lobby everyone") == "2"
        assert await drain(a) == ["everyone"]
        assert await drain(b) == ["everyone"]
        await a.close()
        await b.close()


async def test_closed_socket_leaves_its_rooms():
    with rooms_host() as h:
        a, b = await h.ws(), await h.ws()
        for ws in (a, b):
            assert await cmd(ws, "join r1") == "0"
            assert await cmd(ws, "join r2") == "0"
        members = json.loads(await cmd(a, "members r1"))
        assert len(members) == 2 and all(m["sockets"] == 1 for m in members), members
        r = h.http("GET", "/_/rooms/r1", auth=True)
        assert r.status == 200 and len(r.json["members"]) == 2, r
        assert h.http("GET", "/_/rooms/r1").status == 401, "the members list is admin only"
        assert h.http("GET", "/_/status", auth=True).json["rooms"] == 2
        await b.close()
        await async_wait_until(
            lambda: len(h.http("GET", "/_/rooms/r1", auth=True).json["members"]) == 1,
            what="the closed socket to leave r1")
        assert len(h.http("GET", "/_/rooms/r2", auth=True).json["members"]) == 1
        assert len(json.loads(await cmd(a, "members r2"))) == 1
        assert await cmd(a, "sayall r1 x") == "1"
        await a.close()
        # The last member gone, the rooms are gone.
        await async_wait_until(lambda: h.http("GET", "/_/status", auth=True).json["rooms"] == 0,
                               what="rooms to be removed")
        r = h.http("GET", "/_/rooms/r1", auth=True)
        assert r.status == 200 and r.json["members"] == [], r
        assert h.http("GET", "/_/rooms/bad%20name", auth=True).status == 400


async def test_broadcast_reaches_every_socket():
    with rooms_host() as h:
        clients = [await h.ws() for _ in range(12)]
        assert await cmd(clients[0], "join somewhere") == "0"  # rooms do not matter
        assert await cmd(clients[0], "bcast hello all") == "11"
        assert await drain(clients[0]) == []
        for ws in clients[1:]:
            assert await recv(ws) == "hello all"
        for ws in clients:
            await ws.close()


async def test_close_log_line_shows_what_the_plugin_got():
    # The line per closed connection is debug (closes are counted in metrics).
    with Host(plugins={"__websocket__": tplugin("ws_echo"), "shared": tplugin("shared")},
              flags=["--log-level", "debug"]) as h:
        ws, _ = await h.user()
        await ws.close(4001, "bye now")
        h.wait_log(r"closed \(4001 bye now\)")
        raw = h.raw()
        raw.sock.close()  # no close frame: the plugin gets 1006, and so does the log
        h.wait_log(r"closed \(1006\)")


async def test_sends_from_8_threads_at_once():
    with rooms_host() as h:
        a, b = await h.ws(), await h.ws()
        assert await cmd(a, "join t") == "0"
        assert await cmd(b, "join t") == "0"
        n = 200
        await a.send(f"threads {n}")
        got, deadline = [], time.monotonic() + 30
        while len(got) < 8 * n + 1:
            got.append(await recv(a, max(0.1, deadline - time.monotonic())))
        assert "ok threads 8" in got
        msgs = [m for m in got if m.startswith("thread ")]
        assert len(msgs) == 8 * n and len(set(msgs)) == 8 * n
        # Each thread's messages stay in the order it sent them.
        for i in range(8):
            mine = [int(m.split()[-1]) for m in msgs if m.startswith(f"thread {i} ")]
            assert mine == list(range(n)), (i, mine[:10])
        # The room copy went to b only (a was the `except`).
        room = []
        while len(room) < 8 * n:
            room.append(await recv(b, 10))
        assert len(set(room)) == 8 * n
        assert await drain(a, 0.2) == []
        h.wait_log(r"warn .*thread 7 sent 200|thread \d sent 200")
        assert len(re.findall(r"thread \d sent 200", h.log())) == 8
        await a.close()
        await b.close()


async def test_forged_context_writes_nowhere():
    """ctx->socket cleared and ctx->host pointing at plugin memory: the host answers from its
    own record (CLOUD_ESTATE) and writes nothing there (the plugin checks its buffer, ASan
    watches the rest)."""
    with Host(plugins={"__websocket__": tplugin("rooms_ws"),
                       "forge_http": tplugin("forge_http")}) as h:
        ws = await h.ws()
        assert await cmd(ws, "forge") == " ".join(
            [str(CLOUD_ESTATE), str(CLOUD_ESTATE), str(CLOUD_ESTATE), str(CLOUD_ESTATE), "1"])
        r = h.http("GET", "/forge_http")
        assert r.status == 200, r
        assert r.text == f"bind {CLOUD_ESTATE} copy {CLOUD_ESTATE} junk 1", r
        await ws.send("rooms")  # the host still serves this connection
        assert await recv(ws) == "ok rooms []"
        await ws.close()


async def test_abi1_plugin_still_works():
    with Host(plugins={"__websocket__": tplugin("abi1"), "abi1": tplugin("abi1")}) as h:
        st = h.http("GET", "/_/status", auth=True).json["plugins"]
        assert st["abi1"]["abi"] == 1 and st["__websocket__"]["abi"] == 1, st
        r = h.http("GET", "/abi1?x=1")
        assert r.status == 200 and r.json == {"abi": 1, "url": "/abi1?x=1"}, r
        ws = await h.ws()
        await ws.send("hello v1")
        assert await recv(ws) == "hello v1"
        await ws.close()


if __name__ == "__main__":
    run(globals())
