"""WebSocket events end to end (CONTRACT 1, 2, 3): greeting, messages, fragments, close events,
push, socket handles after close."""

import asyncio
import json

from harness import *  # noqa: F401,F403


def echo_host(**kw):
    """__websocket__ = tests/plugins/ws_echo.c, with /push (example) and /shared (test)."""
    return Host(plugins={"__websocket__": tplugin("ws_echo"), "push": example("push"),
                         "shared": tplugin("shared")}, **kw)


def closer_host(**kw):
    return Host(plugins={"__websocket__": tplugin("ws_closer")}, **kw)


def shared_value(h, key):
    r = h.http("GET", "/shared?key=" + key)
    assert r.status == 200, r
    return r.json


def find_close(h, user_id):
    for c in shared_value(h, "ws_closes") or []:
        if c.get("user_id") == user_id:
            return c
    return None


async def test_greeting_has_user_id_and_token():
    with Host() as h:  # the example __websocket__
        ws1, g1 = await h.user()
        ws2, g2 = await h.user()
        for g in (g1, g2):
            assert g.get("event") == "connected", g
            assert isinstance(g.get("user_id"), str) and USER_ID_RE.match(g["user_id"]), g
            assert isinstance(g.get("token"), str) and len(g["token"]) >= 22, g
        assert g1["user_id"] != g2["user_id"], "two fresh connections got the same user id"
        assert g1["token"] != g2["token"]
        assert g1["token"] != g1["user_id"]
        await ws1.send("hello")
        assert await recv(ws1) == "I have received your message"
        await ws2.send(b"\x00\x01binary")
        assert await recv(ws2) == "I have received your message"
        await ws1.close()
        await ws2.close()


async def test_any_path_upgrades():
    with Host() as h:
        ws, g = await h.user(path="/some/where", query="x=1")
        assert g.get("event") == "connected", g
        await ws.send("hi")
        assert await recv(ws) == "I have received your message"
        await ws.close()


async def test_text_and_binary_echo():
    with echo_host() as h:
        ws, g = await h.user()
        await ws.send("hello, wörld ✓")
        assert await recv(ws) == "hello, wörld ✓"
        blob = bytes(range(256)) * 3
        await ws.send(blob)
        got = await recv(ws)
        assert isinstance(got, bytes), f"binary message came back as {type(got).__name__}"
        assert got == blob
        await ws.send(b"")
        assert await recv(ws) == b""
        await ws.send("")
        assert await recv(ws) == ""
        await ws.close()


def test_fragmented_message_is_one_event():
    with echo_host() as h:
        c = h.raw()
        op, greeting = c.recv_message()
        assert op == OP_TEXT and json.loads(greeting)["event"] == "connected", greeting
        c.send_frame(OP_TEXT, "Hel", fin=False)
        c.send_frame(OP_CONT, "lo, ", fin=False)
        c.send_frame(OP_PING, b"between")  # control frames may interleave fragments
        c.send_frame(OP_CONT, "world", fin=True)
        c.send_frame(OP_TEXT, "next")
        got = []
        while len(got) < 3:
            f = c.recv_frame()
            assert f is not None, f"stream ended, got {got}"
            fin, op, payload = f
            got.append((op, payload))
        assert (OP_PONG, b"between") in got, got
        data = [p.decode() for op, p in got if op == OP_TEXT]
        assert data == ["Hello, world", "next"], \
            f"expected one assembled message then 'next', got {data}"
        # binary, in fragments, one of them empty
        c.send_frame(OP_BINARY, b"\x00\x01", fin=False)
        c.send_frame(OP_CONT, b"", fin=False)
        c.send_frame(OP_CONT, b"\xff", fin=True)
        assert c.recv_message() == (OP_BINARY, b"\x00\x01\xff")
        c.send_close(1000)
        assert c.expect_close()[0] == 1000
        c.close()


def test_utf8_character_split_across_fragments():
    with echo_host() as h:
        c = h.raw()
        c.recv_message()  # greeting
        c.send_frame(OP_TEXT, b"h\xc3", fin=False)  # "é" = c3 a9, split
        c.send_frame(OP_CONT, b"\xa9llo", fin=True)
        m = c.recv_message()
        assert m == (OP_TEXT, "héllo"), f"valid UTF-8 split across fragments: got {m}"
        c.close()


async def test_close_event_reaches_plugin():
    with echo_host() as h:
        ws, g = await h.user()
        uid = g["user_id"]
        await ws.close(4000, "bye-test")
        c = await async_wait_until(lambda: asyncio.to_thread(find_close, h, uid),
                                   what="the close event in cloud_shared")
        assert c["code"] == 4000 and c["reason"] == "bye-test", c


async def test_abrupt_disconnect_reaches_plugin_as_1006():
    with echo_host() as h:
        c = h.raw()
        uid = json.loads(c.recv_message()[1])["user_id"]
        c.close()  # no close frame
        ev = await async_wait_until(lambda: asyncio.to_thread(find_close, h, uid),
                                    what="the close event of a dropped connection")
        assert ev["code"] == 1006, ev


async def test_push_to_connected_client():
    with echo_host() as h:
        ws, g = await h.user()
        other, _ = await h.user()
        r = await h.apush(g["user_id"], "pushed hello")
        assert r.status == 200 and r.json == {"delivered": 1}, r
        assert await recv(ws) == "pushed hello"
        await other.send("mine")  # the other user got nothing but its own echo
        assert await recv(other) == "mine"
        await ws.close()
        await other.close()


def test_push_unknown_user_404():
    with echo_host() as h:
        r = h.push("AAAAAAAAAAAAAAAAAAAAAA", "hi")
        assert r.status == 404 and r.json == {"error": "no such user"}, r
        r = h.http("POST", "/push", json_body={"message": "no user id"})
        assert r.status == 400, r
        r = h.http("POST", "/push", json_body={"user_id": "AAAAAAAAAAAAAAAAAAAAAA"})
        assert r.status == 400, r


async def test_send_on_closed_socket_returns_eclosed():
    with closer_host() as h:
        a = await h.ws()
        await a.send("keep")
        assert await recv(a) == "kept"
        await a.close()
        b = await h.ws()

        async def stale(cmd):
            await b.send(cmd)
            m = await recv(b)
            assert m not in ("are you there?", b"x"), \
                "a send on the closed connection's handle reached another connection"
            return m

        # bounded: the host may notice the closed connection a moment after the handshake
        await async_wait_until(lambda: _is(stale("stale"), str(CLOUD_ECLOSED)),
                               what="cloud_socket_send on the closed handle returning -2")
        assert await stale("stale-binary") == str(CLOUD_ECLOSED)
        assert await stale("stale-close") == str(CLOUD_ECLOSED)
        assert await stale("stale") == str(CLOUD_ECLOSED)
        await b.send("ping")
        assert await recv(b) == "pong"
        await b.close()


async def _is(coro, value):
    return (await coro) == value


async def test_plugin_closes_with_1011():
    with closer_host() as h:
        ws = await h.ws()
        other = await h.ws()
        await ws.send("close1011")
        code, reason = await expect_close(ws)
        assert (code, reason) == (1011, "closer asked"), (code, reason)
        await other.send("ping")
        assert await recv(other) == "pong"
        await other.close()


async def test_handler_error_is_logged_not_closed():
    with closer_host() as h:
        ws = await h.ws()
        await ws.send("fail")
        request_id = await recv(ws)
        assert request_id, "the event had no request id"
        await ws.send("still there?")
        assert await recv(ws) == "pong", "a handler error must not close the connection"
        await asyncio.to_thread(h.wait_log, re.escape(request_id))
        await ws.close()


if __name__ == "__main__":
    run(globals())
