"""Issue 14's performance work, as behaviour that must hold: an idle connection stays small,
large messages cross a small receive buffer intact, direct writes keep order with queued
frames, greetings wait for a batched commit, and closes count in metrics instead of logging.
Counts and bounds only, never timings."""

import asyncio
import os
import re
import socket

from harness import *  # noqa: F401,F403

ANSWER = "I have received your message"


def vm_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise Fail("no VmRSS")


def test_idle_connection_memory_bounded():
    """1000 idle WebSockets cost the serving process under 4 KiB each (6.3 KiB with lws's
    4096-byte receive buffer per connection and the fixed-size struct conn)."""
    n = 1000
    with Host() as h:
        pid = h.serving_pid()
        warm = [h.raw() for _ in range(20)]  # first allocations of tables and caches
        for c in warm:
            c.recv_message()
        before = vm_rss(pid)
        conns = []
        for _ in range(n):
            c = h.raw()
            c.recv_message()  # the greeting: the connection event ran
            conns.append(c)
        after = vm_rss(pid)
        per = (after - before) / n
        assert per < 4096, f"{per:.0f} bytes per idle connection (bound 4096)"
        print(f"idle: {per:.0f} bytes per connection")
        for c in conns + warm:
            c.close()


async def test_large_messages_cross_small_rx_buffer():
    """With a small receive buffer (lws reads and delivers a message in pieces of it) a
    600 KiB message arrives in ~4800 callbacks and goes back out whole: text with multi-byte
    characters split at every alignment, and binary; bad UTF-8 at its very end is still seen."""
    text = ("abcdefg\u00e9\u20ac\U0001f600" * 40000)[: 600 * 1024 // 3]
    binary = bytes(range(256)) * 2400
    with Host(plugins={"__websocket__": tplugin("ws_echo")}, flags=["--ws-rx-buffer", "128"]) as h:
        ws, _ = await h.user()
        await ws.send(text)
        assert await recv(ws, 20) == text, "large text message changed on its way"
        await ws.send(binary)
        assert await recv(ws, 20) == binary, "large binary message changed on its way"
        bad = text.encode()[:-1] + b"\xff"
        c = h.raw()
        c.recv_message()
        c.send_frame(OP_TEXT, bad)
        code, _ = c.expect_close()
        assert code == CLOSE_INVALID_DATA, f"invalid UTF-8 at the end of 600 KiB: close {code}"
        await ws.close()


def test_ws_rx_buffer_flag():
    with Host(flags=["--ws-rx-buffer", "4096"]) as h:
        c = h.raw()
        assert is_greeting(c.recv_message()[1])
        c.close()
    h = Host(flags=["--ws-rx-buffer", "64"])
    try:
        h.start(wait=False)
        assert h.wait_exit() != 0, "--ws-rx-buffer 64 must be refused"
        assert "ws-rx-buffer" in h.log()
    finally:
        h.cleanup()


def test_descriptor_table_sized_by_max_connections():
    """lws sizes its descriptor table by the soft RLIMIT_NOFILE and Debian's lws scans all of
    it on every connection opened and closed: the serving process keeps the soft limit at what
    --max-connections needs (100: 405), not the hard limit (20 000 or more)."""
    with Host(flags=["--max-connections", "100"]) as h:
        pid = h.serving_pid()
        with open(f"/proc/{pid}/limits") as f:
            soft = int(next(l for l in f if l.startswith("Max open files")).split()[3])
        assert soft <= 500, f"soft RLIMIT_NOFILE {soft} for 100 connections"
        h.wait_log(rf"descriptor limit {soft}: up to \d+ connections, 100 of them WebSocket")
        conns = [h.raw() for _ in range(50)]  # and it still serves them
        for c in conns:
            assert is_greeting(c.recv_message()[1])
            c.close()


CLOSE_LINE = re.compile(r"connection \d+ of user \S+ from \S+ closed \((\d+)")


def closes_by_code(h):
    r = h.http("GET", "/_/metrics", auth=True)
    assert r.status == 200, f"/_/metrics: {r}"
    out = {}
    for line in r.text.splitlines():
        m = re.match(r'wshost_ws_closes_by_code_total\{code="(\w+)"\} (\d+)$', line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def test_closes_counted_not_logged():
    """Churn: no info line per connection by default; closes are counted by code in
    /_/metrics. At --log-level debug the line is there."""
    with Host() as h:
        for _ in range(3):
            c = h.raw()
            c.recv_message()
            c.send_close(1000)
            assert c.expect_close()[0] == 1000
            c.close()
        c = h.raw()
        c.recv_message()
        c.close()  # no close frame: 1006
        wait_until(lambda: closes_by_code(h).get("1006") == 1, what="the 1006 close counted")
        assert closes_by_code(h) == {"1000": 3, "1006": 1}
        assert not CLOSE_LINE.search(h.log()), "a line per closed connection at info level"
    with Host(flags=["--log-level", "debug"]) as h:
        c = h.raw()
        c.recv_message()
        c.send_close(1000)
        c.expect_close()
        c.close()
        wait_until(lambda: CLOSE_LINE.search(h.log()), what="the close line at debug level")


if __name__ == "__main__":
    run(globals())
