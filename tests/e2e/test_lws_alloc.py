"""Large messages: lws reads a WebSocket in pieces of --ws-rx-buffer (64 KiB by
default) while each connection keeps only a 160-byte receive buffer (host/net/lws_alloc.c), which
holds control frames. Counts and payloads only, never timings."""

import re
import time

from harness import *  # noqa: F401,F403


def metric(h, name):
    r = h.http("GET", "/_/metrics", auth=True)
    assert r.status == 200, f"/_/metrics: {r}"
    m = re.search(rf"^{name} (\d+)$", r.text, re.M)
    assert m, f"{name} not in /_/metrics"
    return int(m.group(1))


def echo_host(flags=()):
    return Host(plugins={"__websocket__": tplugin("ws_echo")}, flags=list(flags))


def greeted(h):
    w = RawWS(h.port, timeout=20)
    w.recv_message()
    return w


def test_64k_message_in_few_reads():
    """A 64 KiB message sent in one go reaches the host in a few pieces (one per read). With
    lws's receive buffer at 512 bytes per connection (the old default) it took at least 128."""
    with echo_host() as h:
        w = greeted(h)
        msg = ("0123456789abcdef" * 4096)  # 64 KiB of text
        w.send_frame(OP_TEXT, "warm")
        assert w.recv_message() == (OP_TEXT, "warm")
        before = metric(h, "wshost_ws_received_pieces_total")
        for _ in range(5):
            w.send_frame(OP_TEXT, msg)
            assert w.recv_message() == (OP_TEXT, msg), "64 KiB message changed on its way"
        pieces = metric(h, "wshost_ws_received_pieces_total") - before
        # A read takes what the kernel has: a loaded machine may split a message a few times.
        assert pieces <= 5 * 8, f"{pieces} pieces for 5 messages of 64 KiB"
        w.close()


def test_small_read_size_still_works():
    """--ws-rx-buffer 128 reads in small pieces: many pieces, same message."""
    with echo_host(["--ws-rx-buffer", "128"]) as h:
        w = greeted(h)
        before = metric(h, "wshost_ws_received_pieces_total")
        msg = bytes(range(256)) * 64  # 16 KiB binary
        w.send_frame(OP_BINARY, msg)
        assert w.recv_message() == (OP_BINARY, msg)
        pieces = metric(h, "wshost_ws_received_pieces_total") - before
        assert pieces >= 16384 // 128, f"{pieces} pieces of at most 128 bytes for 16 KiB"
        w.close()


def test_read_size_bounds():
    """--ws-rx-buffer: 128..1048576 (one buffer for the process, not per connection)."""
    with echo_host(["--ws-rx-buffer", "1048576"]) as h:
        w = greeted(h)
        msg = "m" * 300000
        w.send_frame(OP_TEXT, msg)
        assert w.recv_message() == (OP_TEXT, msg)
        w.close()
    for bad in ("127", "1048577"):
        h = echo_host(["--ws-rx-buffer", bad])
        try:
            h.start(wait=False)
            assert h.wait_exit() != 0, f"--ws-rx-buffer {bad} must be refused"
            assert "ws-rx-buffer" in h.log()
        finally:
            h.cleanup()


def test_control_frames_byte_by_byte_on_many_connections():
    """Control frames are the only thing lws copies into a connection's own (now 160-byte)
    buffer. Pings of the largest legal size (125 bytes) and a close with a 123-byte reason,
    dribbled one byte per read, interleaved across connections and inside a fragmented
    64 KiB message, come back whole: each connection's buffer is its own and big enough."""
    with echo_host() as h:
        ws = [greeted(h) for _ in range(4)]
        pings = [bytes((i * 31 + k) % 251 for k in range(125)) for i in range(len(ws))]
        frames = [RawWS.frame(OP_PING, p) for p in pings]
        part = "x" * 32768
        for w in ws:  # a fragmented message is open on every connection
            w.send_frame(OP_TEXT, part, fin=False)
        for k in range(len(frames[0])):  # one byte of each connection's ping at a time
            for w, f in zip(ws, frames):
                w.send_bytes(f[k:k + 1])
            time.sleep(0.002)
        for w, p in zip(ws, pings):
            f = w.recv_frame()
            assert f == (True, OP_PONG, p), f"pong {f and f[:2]} with {f and len(f[2])} bytes"
        for w in ws:
            w.send_frame(OP_CONT, part, fin=True)
        for w in ws:
            assert w.recv_message() == (OP_TEXT, part * 2), "message around the ping changed"
        reason = "r" * 123
        for w in ws:
            f = RawWS.frame(OP_CLOSE, b"\x0f\xa0" + reason.encode())  # 4000
            for k in range(len(f)):
                w.send_bytes(f[k:k + 1])
                time.sleep(0.001)
        for w in ws:
            code, why = w.expect_close()
            assert code == 4000, f"close echoed with {code}"
            w.close()
        w = greeted(h)
        w.send_frame(OP_TEXT, "still here")
        assert w.recv_message() == (OP_TEXT, "still here")
        w.close()


if __name__ == "__main__":
    run(globals())
