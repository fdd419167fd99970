"""WebSocket edges lws 4.1 gets wrong, in raw frames: each protocol error gets a close
frame with a code the client can read (RFC 6455 7.4.1), not a dropped TCP connection, and the
plugin's WebSocket:close sees the same code."""

import asyncio

from harness import *  # noqa: F401,F403


def edge_host(**kw):
    return Host(plugins={"__websocket__": tplugin("ws_echo"), "shared": tplugin("shared")}, **kw)


def plugin_close_code(h, user_id):
    def seen():
        r = h.http("GET", "/shared?key=ws_closes")
        for e in (r.json or []) if r.status == 200 else []:
            if e.get("user_id") == user_id:
                return e
        return None
    return wait_until(seen, timeout=10, what=f"close event of {user_id}")["code"]


def raw_user(h, **kw):
    w = RawWS(h.port, timeout=10, **kw)
    op, greeting = w.recv_message()
    return w, json.loads(greeting)["user_id"]


def test_unmasked_first_frame_1002():
    """RFC 6455 5.1: the server MUST fail the connection on an unmasked client frame. lws 4.1
    accepted it and delivered the message; now the first frame of a connection is checked
    (head_guard.c): close 1002, nothing delivered, the plugin sees 1002."""
    with edge_host() as h:
        w, uid = raw_user(h)
        w.send_frame(OP_TEXT, "unmasked hello", mask=False)
        m = w.recv_message()
        assert m == ("close", (1002, "unmasked frame from the client")), m
        w.close()
        assert plugin_close_code(h, uid) == 1002
        w, _ = raw_user(h)  # a masking client is served
        w.send_frame(OP_TEXT, "masked hello")
        assert w.recv_message() == (OP_TEXT, "masked hello")
        w.close()


def test_ping_over_125_bytes_1002():
    """RFC 6455 5.5: control frames carry at most 125 bytes. lws 4.1 hung up without a close
    frame (ops-ws.c illegal_ctl_length); the client must see 1002."""
    with edge_host() as h:
        for n in (126, 1000):
            w, uid = raw_user(h)
            w.send_frame(OP_PING, b"p" * n)
            assert w.expect_close()[0] == 1002, f"{n}-byte ping"
            w.close()
            assert plugin_close_code(h, uid) == 1002
        w, _ = raw_user(h)  # the host serves on
        w.send_frame(OP_TEXT, "still here")
        assert w.recv_message() == (OP_TEXT, "still here")
        w.close()


def test_close_with_one_byte_body_1002():
    """RFC 6455 5.5.1: a close body is empty or starts with a 2-byte code; one byte got a
    dropped connection before, 1002 now."""
    with edge_host() as h:
        w, uid = raw_user(h)
        w.send_frame(OP_CLOSE, b"\x03")
        code, reason = w.expect_close()
        assert code == 1002, (code, reason)
        w.close()
        assert plugin_close_code(h, uid) == 1002


def test_fragmented_message_over_limit_1009_while_still_sending():
    """A message over --max-message in fragments, the client still sending when the host
    refuses it. Before, the host hung up right after its close frame, so the client's next
    sends failed (EPIPE/reset), and asyncio clients (websockets, Node) then drop the close
    frame unread: they saw 1006. Now the host reads and drops frames until the client's close
    (lws's close handshake): every send succeeds and the close frame says 1009."""
    with edge_host(flags=["--max-message", "65536"]) as h:
        w, uid = raw_user(h)
        frames = [RawWS.frame(OP_TEXT if i == 0 else OP_CONT, b"a" * 16384, fin=False)
                  for i in range(400)]
        reset = None
        for f in frames:  # all of it, before reading anything, as a streaming client does
            try:
                w.sock.sendall(f)
            except OSError as e:  # asyncio clients give up here, close frame unread
                reset = e
                break
        result = {"close": w.expect_close(), "reset while sending": reset}
        w.close()
        assert reset is None, result
        assert result.get("close") == (1009, "message too big"), result
        assert plugin_close_code(h, uid) == 1009


async def test_fragmented_message_over_limit_websockets_client():
    """The same with python3-websockets sending one message from an async iterator, the
    client that saw 1006 before."""
    with edge_host(flags=["--max-message", "65536"]) as h:
        ws = await ws_connect(h.ws_url())
        await recv(ws)

        async def parts():
            for _ in range(64):
                yield "a" * 16384
        try:
            await ws.send(parts())
        except websockets.ConnectionClosed:
            pass
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed:
            pass
        assert ws.close_code == 1009, (ws.close_code, ws.close_reason)


if __name__ == "__main__":
    run(globals())
