"""test_deflate.py: permessage-deflate (RFC 7692). Negotiated when a client offers
it (--deflate on), every kind of message round-trips compressed, empty ones too
(lws 4.1.6 aborts on those: the host writes them itself), and a message that inflates past
--max-message is closed with 1009 however small it was on the wire (a deflate bomb). Off by
default. Messages larger than lws's compressor output buffer (written in fragments that fit
it): tests/e2e/test_send_path.py."""

import os
import zlib

from harness import (CLOSE_TOO_BIG, OP_TEXT, VALGRIND, Host, RawWS, default_plugins,
                     expect_close, recv, run, tplugin)

DEFLATE_OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


def echo_host(flags=("--deflate", "on")):
    plugins = default_plugins()
    plugins["__websocket__"] = tplugin("ws_echo")
    return Host(plugins=plugins, flags=list(flags))


async def test_negotiated_and_every_message_round_trips():
    with echo_host() as h:
        ws = await h.ws()
        await recv(ws)  # greeting
        assert [type(e).__name__ for e in ws.extensions] == ["PerMessageDeflate"], ws.extensions
        for msg in ["hello", b"\x00" * 1000, "", b"", "after empty", "é" * 20000, b"", "x"]:
            await ws.send(msg)
            assert await recv(ws) == msg, msg[:20]
        await ws.close()
    with echo_host(["--deflate", "off"]) as h:  # the default
        ws = await h.ws()
        await recv(ws)
        assert ws.extensions == [], ws.extensions
        await ws.send("plain")
        assert await recv(ws) == "plain"
        await ws.close()


async def test_deflate_bomb_is_closed_1009():
    with echo_host(["--deflate", "on", "--max-message", "65536"]) as h:
        ws = await h.ws(max_size=None)
        await recv(ws)
        bomb = "a" * 4_000_000  # a few KB on the wire
        assert len(zlib.compress(bomb.encode())) < 10_000
        await ws.send(bomb)
        code, _ = await expect_close(ws)
        assert code == CLOSE_TOO_BIG, code
        # The host lives on and serves.
        assert h.http("GET", "/_/healthz").status == 200
        ws = await h.ws()
        await recv(ws)
        await ws.send("still serving")
        assert await recv(ws) == "still serving"
        await ws.close()


def deflate_ws(h):
    w = RawWS(h.port, timeout=20, extra_headers=DEFLATE_OFFER)
    assert "permessage-deflate" in w.response_head, w.response_head
    return w


def test_each_message_compressed_on_its_own():
    """The host's compressor starts afresh for every message (no zlib state is kept between
    messages on an idle connection): the same 200 bytes sent twice, well inside its 512-byte
    window, compress to the same size twice. With the stream kept, the second was 5 bytes
    referring back to the first. A client that keeps its inflater across messages (context
    takeover) reads both."""
    with echo_host() as h:
        w = deflate_ws(h)
        w.recv_frame()  # greeting
        text = os.urandom(100).hex()
        sizes, inflater = [], zlib.decompressobj(-15)
        for _ in range(2):
            w.send_frame(OP_TEXT, text)
            fin, op, payload = w.recv_frame()
            assert op == OP_TEXT, op
            while not fin:  # lws sends a compressed message in frames of up to 1 KiB
                fin, op, more = w.recv_frame()
                assert op == 0, op
                payload += more
            sizes.append(len(payload))
            assert inflater.decompress(payload + b"\x00\x00\xff\xff").decode() == text
        print(f"compressed sizes {sizes}")
        assert sizes[1] > sizes[0] // 2, f"compressed sizes {sizes}: history kept between messages"
        w.close()


def recv_compressed(w, inflater):
    fin, op, payload = w.recv_frame()
    while not fin:
        fin, _, more = w.recv_frame()
        payload += more
    return op, inflater.decompress(payload + b"\x00\x00\xff\xff")


def test_shared_output_buffer_under_backpressure():
    """lws's deflate output buffer is one for all connections (host/net/lws_alloc.c): what a
    slow reader's socket refuses must have been copied out before the next connection's
    message is compressed into the same buffer. A reader with a tiny window gets ten
    compressed 60 KB echoes (more than the sockets hold: lws keeps a partial frame, the rest
    waits in the host's queue) while three other connections are answered; every message then
    reads back intact, in order. Before, the 60 KB echoes crashed the host (lws resumed a
    message from a buffer the host had freed)."""
    words = [os.urandom(3).hex() for _ in range(300)]
    msgs = [" ".join(words[(i * 7 + k * 13) % 300] for k in range(8600))[:60000]
            for i in range(10)]
    with echo_host() as h:
        slow = RawWS(h.port, timeout=20, extra_headers=DEFLATE_OFFER, rcvbuf=4096)
        others = [deflate_ws(h) for _ in range(3)]
        infl = {id(w): zlib.decompressobj(-15) for w in [slow] + others}
        for w in [slow] + others:
            recv_compressed(w, infl[id(w)])  # greeting
        for m in msgs:
            slow.send_frame(OP_TEXT, m)  # its echoes pile up: slow reads nothing yet
        for w, m in zip(others, msgs[1:]):
            w.send_frame(OP_TEXT, m)
            assert recv_compressed(w, infl[id(w)]) == (OP_TEXT, m.encode()), "other reader"
        for m in msgs:
            assert recv_compressed(slow, infl[id(slow)]) == (OP_TEXT, m.encode()), "slow reader"
        for w in [slow] + others:
            w.close()


def test_idle_deflate_connections_stay_small():
    """An idle connection that negotiated permessage-deflate and got its (compressed) greeting
    holds no zlib stream: ~4 KB each, against ~17 KB when the compressor lived on."""
    n = 400
    with echo_host() as h:
        pid = h.serving_pid()
        warm = [deflate_ws(h) for _ in range(20)]
        for w in warm:
            w.recv_frame()

        def rss():
            with open(f"/proc/{pid}/status") as f:
                return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
        before = rss()
        conns = []
        for _ in range(n):
            w = deflate_ws(h)
            w.recv_frame()
            conns.append(w)
        per = (rss() - before) / n
        print(f"idle with deflate: {per:.0f} bytes per connection")
        with open(f"/proc/{pid}/maps") as f:
            instrumented = VALGRIND or "libasan" in f.read()
        if not instrumented:
            assert per < 9000, f"{per:.0f} bytes per idle deflate connection (bound 9000)"
        for w in conns + warm:
            w.close()


if __name__ == "__main__":
    run(globals())
