"""test_send_path.py: every frame to a client takes one send path (host/net/ws.c conn_send,
docs/INTERNALS.md "The send path"), so the outbox drain, a live push, an echo and a slow
reader's backlog all get the same limits. With --deflate on, a message larger than lws's
compressor output buffer is written as fragments that each fit it: before, the drain skipped
that cap, lws resumed compressing from a queue frame the host had already freed, and the
serving process died (SIGSEGV in zlib's deflate) or sent corrupt messages whose rows it then
deleted; a live send over 64 KB was refused and parked in the outbox."""

import asyncio
import base64
import os
import socket
import subprocess
import time
import zlib

import harness
from harness import (Fail, Host, RawWS, async_wait_until, collect, default_plugins, free_port,
                     go_offline, is_greeting, no_message, recv, run, tplugin, wait_until)

# The outbox rows are read with SQL: the single node's SQLite outbox.
harness.SINGLE_NODE_FILE = True

DEFLATE = ["--deflate", "on"]
DEFLATE_OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
BIG = 300_000


def big(i, n=BIG):
    """n bytes of text that deflate hardly shrinks (base64 of random bytes: ~75%), so its
    compressed form is larger than lws's 128 KiB output buffer; tagged with i."""
    return (f"{i:03d}:" + base64.b64encode(os.urandom(n)).decode())[:n]


def outbox_count(h, uid):
    return h.sql("SELECT count(*) FROM outbox WHERE user_id = ?", (uid,))[0][0]


async def outbox_empties(h, uid, timeout=20):
    await async_wait_until(lambda: asyncio.to_thread(lambda: outbox_count(h, uid) == 0),
                           timeout=timeout, what=f"the delivered rows of {uid} deleted")


def no_crash(h, pid):
    """The serving process that started is the one serving, and it logged no crash."""
    assert h.http("GET", "/_/healthz").status == 200, "host not answering"
    assert h.serving_pid() == pid, "the serving process was replaced: it died"
    log = h.log()
    for marker in ("SIGSEGV", "crashed", "fatal signal"):
        assert marker not in log, f"{marker!r} in the host's log:\n{h.log_tail()}"


def deflated(ws):
    return [type(e).__name__ for e in ws.extensions] == ["PerMessageDeflate"]


async def offline_with_backlog(h, n, size=BIG):
    """A new user (its connection negotiated deflate) who went away while n messages of size
    bytes were pushed to them: (user id, token, the messages in push order)."""
    ws, g = await h.user()
    assert deflated(ws), ws.extensions
    uid = g["user_id"]
    await go_offline(h, ws, uid)
    msgs = [big(i, size) for i in range(n)]
    for m in msgs:
        r = await h.apush(uid, m, admin=True)
        assert r.status == 200 and r.json == {"delivered": 0}, (r.status, r.json)
    assert outbox_count(h, uid) == n
    return uid, g["token"], msgs


async def resume_and_read(h, uid, token, msgs, timeout=60):
    """Resumes uid with a deflate client and checks its backlog arrives whole, byte for byte,
    in order and once."""
    ws = await h.ws(f"user_id={uid}&token={token}")
    assert deflated(ws), ws.extensions
    g, got = await collect(ws, len(msgs), timeout=timeout)
    assert g["user_id"] == uid, g
    for i, (want, m) in enumerate(zip(msgs, got)):
        if m != want:
            at = next((k for k, (a, b) in enumerate(zip(m, want)) if a != b), min(len(m), len(want)))
            raise Fail(f"{uid} message {i}: {len(m)} bytes, wanted {len(want)}; differs from "
                       f"byte {at}")
    await no_message(ws, 0.5)  # exactly once: nothing comes a second time
    await outbox_empties(h, uid)
    return ws


async def test_two_users_resume_large_backlogs_at_once():
    """Two users with three 300 KB messages queued each resume at the same moment, three
    rounds on one serving process. Before, the serving process died (SIGSEGV in deflate) and
    every reconnect crashed it again, the rows still queued."""
    with Host(flags=DEFLATE) as h:
        pid = h.serving_pid()
        for _ in range(3):
            users = [await offline_with_backlog(h, 3) for _ in range(2)]
            conns = await asyncio.gather(*(resume_and_read(h, *u) for u in users))
            no_crash(h, pid)
            for ws in conns:
                await ws.close()


async def test_one_user_large_backlog_arrives_intact():
    """One user, three 300 KB messages queued. Before, all three arrived at full length but two
    were corrupt from byte 135 680 on, and their rows were deleted as delivered."""
    with Host(flags=DEFLATE) as h:
        pid = h.serving_pid()
        uid, token, msgs = await offline_with_backlog(h, 3)
        ws = await resume_and_read(h, uid, token, msgs)
        await ws.close()
        no_crash(h, pid)


async def test_large_live_push_is_delivered_live():
    """A 200 KB push to an online deflate user is written to its socket (delivered 1, nothing
    in the outbox), by /_/push and by a function's cloud_deferred_send_to_user (/push), and a
    function's 200 KB cloud_socket_send (an echo) arrives too. Before, the push answered
    delivered 0 and was parked in the outbox, and the echo was refused (CLOUD_ETOOBIG)."""
    with Host(flags=DEFLATE) as h:
        pid = h.serving_pid()
        ws, g = await h.user()
        assert deflated(ws), ws.extensions
        uid = g["user_id"]
        for i, admin in enumerate([True, False, True]):
            m = big(i, 200_000)
            r = await h.apush(uid, m, admin=admin)
            assert r.status == 200 and r.json == {"delivered": 1}, (admin, r.status, r.json)
            assert await recv(ws, 20) == m, f"push {i} not intact"
            assert outbox_count(h, uid) == 0, "the push was parked in the outbox"
        await ws.close()
    echo = default_plugins()
    echo["__websocket__"] = tplugin("ws_echo")
    with Host(plugins=echo, flags=DEFLATE) as h:
        pid = h.serving_pid()
        ws = await h.ws()
        assert deflated(ws), ws.extensions
        await recv(ws)  # greeting
        # Around the fragment size (64 KiB) and its multiples, and a message much larger.
        for i, n in enumerate([65535, 65536, 65537, 131072, 131073, 200_000, 1_000_000]):
            m = big(i, n)
            await ws.send(m)
            assert await recv(ws, 20) == m, f"echo of {n} bytes not intact"
        binary = os.urandom(500_000)
        await ws.send(binary)
        assert await recv(ws, 20) == binary, "binary echo not intact"
        await ws.close()
        no_crash(h, pid)


async def test_cluster_resume_large_backlog():
    """In a cluster the outbox is in Redis and its rows come to the same drain, through the same
    send path: three 300 KB rows arrive intact, in order, once."""
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        def pong():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                    c.sendall(b"PING\r\n")
                    return b"PONG" in c.recv(64)
            except OSError:
                return False
        wait_until(pong, timeout=10, what="redis-server to answer PING")
        with Host(flags=DEFLATE + ["--redis", f"redis://127.0.0.1:{port}"]) as h:
            pid = h.serving_pid()
            ws, g = await h.user()
            assert deflated(ws), ws.extensions
            uid = g["user_id"]
            await go_offline(h, ws, uid)
            msgs = [big(i) for i in range(3)]
            for m in msgs:
                r = await h.apush(uid, m, admin=True)
                assert r.status == 200 and r.json == {"delivered": 0}, (r.status, r.json)
            ws = await h.ws(f"user_id={uid}&token={g['token']}")
            _, got = await collect(ws, 3, timeout=60)
            for i, (m, want) in enumerate(zip(got, msgs)):
                assert m == want, f"message {i}: {len(m)} bytes, not intact"
            await no_message(ws, 0.5)
            await ws.close()
            no_crash(h, pid)
    finally:
        redis.kill()
        redis.wait(5)


def rooms_host():
    return Host(plugins={"__websocket__": tplugin("rooms_ws")}, flags=DEFLATE)


async def test_large_room_and_broadcast_fan_out_under_deflate():
    """A 200 KB room message and a 200 KB broadcast reach every deflate member intact, the
    same way as a socket send. Before, each member's send was refused (CLOUD_ETOOBIG): the
    room send answered 0 and nobody got it."""
    with rooms_host() as h:
        pid = h.serving_pid()
        a, b = await h.ws(), await h.ws()
        assert deflated(a) and deflated(b), (a.extensions, b.extensions)
        for ws in (a, b):
            await ws.send("join big")
            assert await recv(ws) == "ok join 0"
        m = big(1, 200_000)
        await a.send("sayall big " + m)
        assert await recv(a, 20) == m, "room message to its sender not intact"
        assert await recv(a) == "ok sayall 2"
        assert await recv(b, 20) == m, "room message to the other member not intact"
        m = big(2, 200_000)
        await a.send("bcast " + m)
        assert await recv(a) == "ok bcast 1"
        assert await recv(b, 20) == m, "broadcast not intact"
        await a.close()
        await b.close()
        no_crash(h, pid)


async def test_invalid_utf8_text_is_refused_by_every_send():
    """Text that is not UTF-8 is refused (CLOUD_EINVAL) by a socket send, a send to a user, a
    room send and a broadcast, and never reaches a client; the connection stays up. Before,
    it was sent, and the client closed the connection with 1007 (RFC 6455 8.1)."""
    with rooms_host() as h:
        ws = await h.ws()
        await ws.send("join u")
        assert await recv(ws) == "ok join 0"
        await ws.send("badutf8 u")
        assert await recv(ws) == "valid caf\u00e9", "the valid send after the refused ones"
        assert await recv(ws) == "ok badutf8 -1 -1 -1 -1 0"
        await ws.send("rooms")
        assert (await recv(ws)).startswith("ok rooms "), "connection not usable after"
        await ws.close()


def recv_compressed(w, inflater, deadline):
    """The next message of a raw deflate connection, read slowly: (opcode, bytes)."""
    parts, first = [], None
    while True:
        if time.monotonic() > deadline:
            raise Fail("slow reader: messages did not arrive in time")
        f = w.recv_frame()
        if f is None:
            raise Fail("slow reader: the host closed the connection")
        fin, op, payload = f
        if first is None:
            first = op
        parts.append(payload)
        time.sleep(0.002)  # a slow reader: the host's socket fills between reads
        if fin:
            return first, inflater.decompress(b"".join(parts) + b"\x00\x00\xff\xff")


async def test_slow_reader_gets_large_backlog_and_live_push():
    """A resumed deflate client with a tiny receive window that does not read: its three
    300 KB rows stay in the outbox (nothing counts as delivered that did not arrive), a live
    200 KB push meanwhile queues behind them, and another user's large echoes are served
    meanwhile. Read slowly, everything arrives intact and in order, and only then are the rows
    gone. Before, the host crashed or sent corrupt messages."""
    with Host(flags=DEFLATE) as h:
        pid = h.serving_pid()
        uid, token, msgs = await offline_with_backlog(h, 3)
        slow = await asyncio.to_thread(
            RawWS, h.port, f"/?user_id={uid}&token={token}", 20, DEFLATE_OFFER, 4096)
        assert "permessage-deflate" in slow.response_head, slow.response_head
        await asyncio.sleep(1.0)
        assert outbox_count(h, uid) == 3, "rows deleted before the reader read them"
        live = big(9, 200_000)
        r = await h.apush(uid, live, admin=True)
        assert r.status == 200 and r.json["delivered"] >= 1, (r.status, r.json)
        # Another connection is served meanwhile: the shared output buffer and the loop work on.
        other, og = await h.user()
        for i in range(2):
            m = big(20 + i, 150_000)
            r = await h.apush(og["user_id"], m, admin=True)
            assert r.json == {"delivered": 1}, r.json
            assert await recv(other, 20) == m
        await other.close()

        def read_all():
            inflater, got, greeting = zlib.decompressobj(-15), [], None
            deadline = time.monotonic() + 90
            while len(got) < 4 or greeting is None:
                op, data = recv_compressed(slow, inflater, deadline)
                text = data.decode()
                if greeting is None and is_greeting(text):
                    greeting = text
                else:
                    got.append(text)
            return got
        got = await asyncio.to_thread(read_all)
        want = msgs + [live]
        assert [m[:4] for m in got] == [m[:4] for m in want], "out of order"
        for i, (m, w) in enumerate(zip(got, want)):
            assert m == w, f"message {i} of the slow reader not intact ({len(m)} of {len(w)})"
        await outbox_empties(h, uid)
        slow.close()
        no_crash(h, pid)


if __name__ == "__main__":
    run(globals())
