"""Bad input over raw TCP (CONTRACT 5): the lines of CONTRACT 5 that test_ws.py,
test_ws_limits.py and test_http.py leave open. Each bad client gets the RFC answer (an HTTP
error, a close code) or its connection closed, within a bound, while a well-behaved client
keeps being served: every test checks the bystander after (and where it takes time, during)
the abuse.

Already covered elsewhere, so not repeated here: message size 1009 (default, flag,
fragmented), invalid UTF-8 1007, reserved opcodes 3/0xB, RSV1, continuation without start,
ping > 125 bytes, fragmented ping, close code 999, a 2^63-1 length followed by 1.5 MiB, TLS
hello / GARBAGE / 20 KB header junk, heartbeat, slow reader via /push, --max-connections 503,
--allowed-origins 403 (test_ws_limits.py); 404 names, 400 JSON, 413, chunked (test_http.py).
"""

import asyncio
import base64
import json
import os
import socket
import struct
import threading
import time

from harness import *  # noqa: F401,F403

ANSWER = "I have received your message"


def echo_host(**kw):
    """__websocket__ = ws_echo (records close events in cloud_shared), /shared, /counter."""
    return Host(plugins={"__websocket__": tplugin("ws_echo"), "shared": tplugin("shared"),
                         "counter": tplugin("counter"), "push": example("push")}, **kw)


async def bystander(h):
    """A well-behaved client: (ws, user_id). Works with either __websocket__."""
    ws, g = await h.user()
    return ws, g["user_id"]


async def served(h, ws, what=""):
    """The bystander is answered, a fresh client is served, HTTP answers."""
    await ws.send("still there?")
    m = await recv(ws, 10)
    assert m in ("still there?", ANSWER), f"bystander got {m!r} {what}"
    fresh, _ = await h.user()
    await fresh.send("fresh")
    assert await recv(fresh, 10) in ("fresh", ANSWER), f"a fresh client was not served {what}"
    await fresh.close()
    r = await h.ahttp("GET", "/_/healthz", timeout=10)
    assert r.status == 200, f"healthz {r} {what}"
    assert h.running(), f"host died {what}"


def exchange(port, data, timeout=15.0, read_all=True):
    """Sends data on a fresh TCP connection; returns (bytes received until the server
    closed or timeout, closed by the server?, seconds)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    t0 = time.monotonic()
    got, closed = b"", False
    try:
        s.sendall(data)
        while True:
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                break
            s.settimeout(left)
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not d:
                closed = True
                break
            got += d
            if not read_all and b"\r\n\r\n" in got:
                break
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    finally:
        s.close()
    return got, closed, time.monotonic() - t0


def status_of(resp):
    if not resp.startswith(b"HTTP/1."):
        return None
    return int(resp.split(b" ", 2)[1])


def upgrade_request(key=None, version="13", method="GET", extra=""):
    key = base64.b64encode(os.urandom(16)).decode() if key is None else key
    req = f"{method} / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    if key != "":
        req += f"Sec-WebSocket-Key: {key}\r\n"
    if version is not None:
        req += f"Sec-WebSocket-Version: {version}\r\n"
    return (req + extra + "\r\n").encode()


def user_count(h):
    return h.sql("SELECT count(*) FROM users")[0][0]


def shared_value(h, key):
    r = h.http("GET", "/shared?key=" + key)
    assert r.status == 200, r
    return r.json


# ---------------------------------------------------------------------------------------


async def test_not_http_at_all():
    """Garbage instead of HTTP: an HTTP error or a close, never a hang past lws's 10 s header
    timeout; the ones lws sits on are run together, while the bystander is served."""
    with Host(flags=["--max-header", "2048"]) as h:
        ws, _ = await bystander(h)
        junk = {
            "random bytes": os.urandom(4096),
            "bare newlines": b"\n\n\n\n",
            "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "NUL in a header": b"GET /_/healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
            "header without colon": b"GET /_/healthz HTTP/1.1\r\nHost x\r\n\r\n",
            "obsolete line folding": b"GET /_/healthz HTTP/1.1\r\nHost: x\r\nX-F: a\r\n b\r\n\r\n",
            "request line over --max-header": b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n",
            "only a method": b"DELETE\r\n\r\n",
            "unknown method": b"BREW /echo HTTP/1.1\r\nHost: x\r\n\r\n",
        }
        results = {}

        def run(name, data):
            results[name] = exchange(h.port, data, timeout=15)

        threads = [threading.Thread(target=run, args=kv) for kv in junk.items()]
        for t in threads:
            t.start()
        await asyncio.sleep(0.3)
        await served(h, ws, "while junk connections are pending")
        for t in threads:
            await asyncio.to_thread(t.join, 20)
        for name, (got, closed, dt) in results.items():
            st = status_of(got)
            assert closed, f"{name}: still open after {dt:.1f}s (got {got[:80]!r})"
            assert st is None or 400 <= st < 500, f"{name}: answered {got[:120]!r}"
            assert st is not None or got == b"", f"{name}: non-HTTP answer {got[:80]!r}"
        await served(h, ws, "after the junk")
        await ws.close()


async def test_upgrade_handshake_checked():
    """RFC 6455 4.2.1/4.2.2: no key, a key that is not 16 bytes, not GET -> 400; a version
    other than 13 -> 426 with Sec-WebSocket-Version: 13. No 101, and no user is created."""
    with Host() as h:
        ws, _ = await bystander(h)
        users = user_count(h)
        cases = {
            "no Sec-WebSocket-Key": (upgrade_request(key=""), 400),
            "key of 4 bytes": (upgrade_request(key="dGVzdA=="), 400),
            "key not base64": (upgrade_request(key="!!!!!!!!!!!!!!!!!!!!!!=="), 400),
            "key of 17 bytes": (upgrade_request(key=base64.b64encode(b"x" * 17).decode()), 400),
            "POST upgrade": (upgrade_request(method="POST", extra="Content-Length: 0\r\n"), 400),
            "version 8": (upgrade_request(version="8"), 426),
            "version 14": (upgrade_request(version="14"), 426),
            "no version": (upgrade_request(version=None), 426),
        }
        for name, (req, want) in cases.items():
            got, closed, dt = exchange(h.port, req, timeout=5, read_all=False)
            st = status_of(got)
            assert st == want, f"{name}: expected {want}, got {got[:200]!r}"
            if want == 426:
                assert b"sec-websocket-version: 13" in got.lower(), \
                    f"{name}: 426 without Sec-WebSocket-Version: 13: {got[:300]!r}"
        assert user_count(h) == users, "a refused upgrade created a user"
        # the good handshake still works on the same host
        c = h.raw()
        assert json.loads(c.recv_message()[1])["event"] == "connected"
        c.close()
        await served(h, ws)
        await ws.close()


async def test_reserved_bits_and_opcodes():
    """RSV2, RSV3 and every reserved opcode (beyond 3 and 0xB) fail with 1002; a ping of
    exactly 125 bytes is answered with its pong."""
    with Host() as h:
        ws, _ = await bystander(h)
        cases = {"RSV2": dict(opcode=OP_TEXT, rsv=2), "RSV3": dict(opcode=OP_TEXT, rsv=1),
                 "RSV on a ping": dict(opcode=OP_PING, rsv=4)}
        for op in (4, 5, 6, 7, 0xC, 0xD, 0xE, 0xF):
            cases[f"opcode {op:#x}"] = dict(opcode=op)
        for name, kw in cases.items():
            c = h.raw()
            c.recv_message()
            op = kw.pop("opcode")
            c.send_frame(op, "x", **kw)
            code, reason = c.expect_close()
            assert code == CLOSE_PROTOCOL, f"{name}: close {code} {reason!r}"
            c.close()
        c = h.raw()
        c.recv_message()
        c.send_frame(OP_PING, b"p" * 125)
        f = c.recv_frame()
        assert f is not None and f[1] == OP_PONG and f[2] == b"p" * 125, \
            f"125-byte ping: got {f!r}"
        c.close()
        await served(h, ws)
        await ws.close()


async def test_close_codes():
    """RFC 6455 7.4: a close with a code no endpoint may send is answered 1002, a reason
    that is not UTF-8 1007, a 1-byte payload is dropped; valid codes are echoed. The plugin's
    WebSocket:close never sees an invalid code."""
    with echo_host() as h:
        ws, _ = await bystander(h)
        invalid = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
        valid = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4000, 4999]
        seen = {}
        for code in invalid + valid:
            c = h.raw()
            uid = json.loads(c.recv_message()[1])["user_id"]
            seen[uid] = code
            c.send_close(code, "why")
            got, reason = c.expect_close()
            want = CLOSE_PROTOCOL if code in invalid else code
            assert got == want, f"client close {code}: answered {got} {reason!r}, want {want}"
            c.close()
        c = h.raw()
        bad_reason_uid = json.loads(c.recv_message()[1])["user_id"]
        c.send_frame(OP_CLOSE, struct.pack("!H", 1000) + b"bad \xff\xfe utf-8")
        got, reason = c.expect_close()
        assert got in (CLOSE_INVALID_DATA, None), f"close reason not UTF-8: answered {got}"
        c.close()
        c = h.raw()
        c.recv_message()
        c.send_frame(OP_CLOSE, b"\x03")
        got, _ = c.expect_close()
        assert got in (CLOSE_PROTOCOL, None), f"1-byte close payload: answered {got}"
        c.close()

        def plugin_saw():
            # Per user: with --isolation process two workers' appends to one list can race.
            closes = {}
            for u in list(seen) + [bad_reason_uid]:
                got = shared_value(h, "ws_close:" + u)
                if not got:
                    return None
                closes[u] = got[-1]
            return closes

        closes = await async_wait_until(lambda: asyncio.to_thread(plugin_saw),
                                        what="every close event in cloud_shared")
        for uid, code in seen.items():
            want = CLOSE_PROTOCOL if code in invalid else code
            assert closes[uid]["code"] == want, \
                f"client close {code}: plugin saw {closes[uid]}, want {want}"
        e = closes[bad_reason_uid]
        assert e["code"] == CLOSE_INVALID_DATA and e["reason"] in ("", None), \
            f"close reason not UTF-8: the plugin saw {e}"
        await served(h, ws)
        await ws.close()


async def test_huge_declared_length():
    """A frame header announcing 2^63-1 bytes allocates nothing: the first payload bytes
    get 1009; with no payload at all the heartbeat drops the connection; a length with the
    top bit set is refused at once."""
    with Host(flags=["--ping-interval", "1", "--pong-timeout", "1"]) as h:
        live, _ = await bystander(h)  # python-websockets answers the pings
        head = bytes([0x82, 0xFF]) + (2**63 - 1).to_bytes(8, "big") + os.urandom(4)

        def first_bytes():
            c = h.raw()
            c.recv_message()
            t0 = time.monotonic()
            c.send_bytes(head + b"0123456789")
            code = c.expect_close()[0]
            c.close()
            return code, time.monotonic() - t0

        code, dt = await asyncio.to_thread(first_bytes)
        assert code == CLOSE_TOO_BIG and dt < 3, f"2^63-1 + 10 bytes: close {code} after {dt:.1f}s"

        def header_only():
            c = h.raw(timeout=15)
            c.recv_message()
            t0 = time.monotonic()
            c.send_bytes(head)
            try:
                while True:  # pings come; never answered
                    f = c.recv_frame()
                    if f is None or f[1] == OP_CLOSE:
                        return time.monotonic() - t0
            except Fail:
                return None
            finally:
                c.close()

        dt = await asyncio.to_thread(header_only)
        assert dt is not None and dt < 10, \
            f"a connection stuck after a 2^63-1 header was not dropped by the heartbeat ({dt})"

        c = h.raw()
        c.recv_message()
        c.send_bytes(bytes([0x82, 0xFF]) + (2**64 - 1).to_bytes(8, "big") + os.urandom(4))
        code, _ = await asyncio.to_thread(c.expect_close)
        assert code in (CLOSE_PROTOCOL, CLOSE_TOO_BIG, None), f"length with bit 63: {code}"
        c.close()
        await served(h, live)
        await live.close()


async def test_slowloris():
    """Headers dribbled a byte at a time and requests that stop half way hold nothing: every
    other client is served meanwhile, and lws drops them (10 s header timeout; a body that
    stops coming: 20 s, server.c timeout_secs)."""
    with echo_host() as h:
        ws, _ = await bystander(h)
        stop = threading.Event()
        outcome = {}

        def dribble(i):
            s = socket.create_connection(("127.0.0.1", h.port), timeout=1)
            t0 = time.monotonic()
            data = b"GET /_/healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
            try:
                for k in range(len(data)):
                    if stop.is_set():
                        break
                    s.send(data[k:k + 1])
                    try:
                        if s.recv(1) == b"":
                            break
                    except socket.timeout:
                        pass
                outcome[i] = time.monotonic() - t0
            except (BrokenPipeError, ConnectionResetError):
                outcome[i] = time.monotonic() - t0
            finally:
                s.close()

        def half(i, data, timeout):
            got, closed, dt = exchange(h.port, data, timeout=timeout)
            outcome[i] = dt if closed else None

        threads = [threading.Thread(target=dribble, args=(i,)) for i in range(10)]
        for i in range(50):
            threads.append(threading.Thread(target=half, args=(
                100 + i, b"GET /_/healthz HTTP/1.1\r\nHost: x\r\nX-Half: ", 25)))
        for i in range(5):
            threads.append(threading.Thread(target=half, args=(
                200 + i, b"POST /counter HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                b"Content-Length: 100\r\n\r\nabc", 30)))
        for t in threads:
            t.start()
        t0 = time.monotonic()
        rounds = 0
        while time.monotonic() - t0 < 8:  # the slow ones are all still pending now
            await served(h, ws, f"with 65 slow connections open (round {rounds})")
            rounds += 1
            await asyncio.sleep(0.5)
        for t in threads:
            await asyncio.to_thread(t.join, 35)
        stop.set()
        slow = {i: dt for i, dt in outcome.items() if i < 100}
        heads = {i: dt for i, dt in outcome.items() if 100 <= i < 200}
        bodies = {i: dt for i, dt in outcome.items() if i >= 200}
        assert len(slow) == 10 and all(dt < 15 for dt in slow.values()), \
            f"dribbling clients not dropped within 15 s: {slow}"
        assert len(heads) == 50 and all(dt is not None and dt < 15 for dt in heads.values()), \
            f"half-sent headers not dropped within 15 s: {heads}"
        assert len(bodies) == 5 and all(dt is not None and dt < 28 for dt in bodies.values()), \
            f"half-sent bodies not dropped within 28 s: {bodies}"
        r = await h.ahttp("GET", "/shared?key=counter_calls")
        assert r.json is None, f"the handler ran for a body that never arrived: {r.json}"
        await served(h, ws, "after the slow clients")
        await ws.close()


async def test_max_header_flag():
    """--max-header: a request whose headers fit is served; one past it (plain or an
    upgrade) is refused or closed, never served."""
    with Host(flags=["--max-header", "2048"]) as h:
        ws, _ = await bystander(h)
        r = await h.ahttp("GET", "/_/healthz", headers={"X-Fits": "f" * 1000})
        assert r.status == 200, f"1000-byte header under --max-header 2048: {r}"
        for name, req in {
            "plain": b"GET /_/healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 3000 + b"\r\n\r\n",
            "many headers": b"GET /_/healthz HTTP/1.1\r\nHost: x\r\n"
                            + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 40) for i in range(80))
                            + b"\r\n",
            "upgrade": upgrade_request(extra="Cookie: " + "c" * 3000 + "\r\n"),
        }.items():
            got, closed, dt = exchange(h.port, req, timeout=12, read_all=False)
            st = status_of(got)
            assert st is None or st in (400, 413, 431), f"{name} past --max-header: {got[:200]!r}"
            assert closed or st is not None, f"{name}: neither answered nor closed in {dt:.1f}s"
        await served(h, ws)
        await ws.close()


async def test_http_framing():
    """RFC 9112 6: a body whose length is unclear is refused and the connection closed, so
    a request smuggled behind it never runs; the handler never runs either."""
    with echo_host() as h:
        ws, _ = await bystander(h)
        head = b"POST /counter HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
        smuggled = b"GET /counter HTTP/1.1\r\nHost: x\r\n\r\n"
        cases = {
            "Content-Length -1": (head + b"Content-Length: -1\r\n\r\nabc", 400),
            "Content-Length abc": (head + b"Content-Length: abc\r\n\r\n" + smuggled, 400),
            "Content-Length 0x10": (head + b"Content-Length: 0x10\r\n\r\n" + b"a" * 16, 400),
            "two Content-Lengths": (head + b"Content-Length: 3\r\nContent-Length: 40\r\n\r\nabc"
                                    + smuggled, 400),
            "CL and TE": (head + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"3\r\nabc\r\n0\r\n\r\n" + smuggled, 400),
            "TE gzip": (head + b"Transfer-Encoding: gzip\r\n\r\nabc", 501),
        }
        for name, (req, want) in cases.items():
            got, closed, dt = exchange(h.port, req, timeout=5)
            st = status_of(got)
            assert st == want, f"{name}: expected {want}, got {got[:200]!r}"
            assert closed and dt < 4, f"{name}: connection not closed after the {st}"
            assert got.count(b"HTTP/1.") == 1, f"{name}: more than one response: {got!r}"
        r = await h.ahttp("GET", "/shared?key=counter_calls")
        assert r.json is None, f"a handler ran for a refused or smuggled request: {r.json}"
        # Content-Length 2^63-1: 413 at once, nothing read
        got, closed, _ = exchange(h.port, head + b"Content-Length: 9223372036854775807\r\n\r\n",
                                  timeout=5)
        assert status_of(got) == 413 and closed, got[:200]
        await served(h, ws)
        await ws.close()


async def test_slow_reader_inside_an_event():
    """A client that sends but never reads, answered by the plugin from inside its message
    event: closed once its queue passes --max-send-queue, with a log line naming connection
    and user; the host's memory stays bounded; the bystander is served."""
    with echo_host(flags=["--max-send-queue", "65536"]) as h:
        ws, _ = await bystander(h)
        c = h.raw(rcvbuf=4096)
        uid = json.loads(c.recv_message()[1])["user_id"]
        rss0 = rss_kib(h)
        msg = RawWS.frame(OP_BINARY, b"r" * 60000)

        def flood():
            c.sock.settimeout(0.5)
            sent = 0
            t0 = time.monotonic()
            while time.monotonic() - t0 < 60 and sent < 600:  # 36 MB at most
                try:
                    c.sock.sendall(msg)
                    sent += 1
                except socket.timeout:
                    pass  # the host reads; stuck only if it stopped reading us
                except (BrokenPipeError, ConnectionResetError):
                    return sent, True
                if sent % 20 == 0 and "closing slow reader" in h.log():
                    return sent, True
            return sent, False

        task = asyncio.create_task(asyncio.to_thread(flood))
        while not task.done():
            await served(h, ws, "while a slow reader fills its queue")
            await asyncio.sleep(0.2)
        sent, dropped = await task
        assert dropped, f"a reader that never reads was not dropped after {sent} x 60 KB"
        line = h.wait_log(r"closing slow reader: connection \d+ of user (\S+)")
        assert line.group(1) == uid, f"the log names {line.group(1)}, not {uid}"
        rss1 = rss_kib(h)
        assert rss1 - rss0 < 64 * 1024, f"host RSS grew by {rss1 - rss0} KiB for one slow reader"
        c.close()
        await served(h, ws, "after the slow reader")
        await ws.close()


def rss_kib(h):
    with open(f"/proc/{h.serving_pid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def test_http_unaffected_at_connection_limit():
    """--max-connections bounds WebSocket connections only: at the limit the upgrade gets
    503 (and creates no user) while HTTP and the admin API answer."""
    with Host(flags=["--max-connections", "2"]) as h:
        a, _ = await bystander(h)
        b, _ = await bystander(h)
        users = user_count(h)
        got, _, _ = exchange(h.port, upgrade_request(), timeout=5, read_all=False)
        assert status_of(got) == 503, f"third upgrade at --max-connections 2: {got[:200]!r}"
        assert user_count(h) == users, "a refused upgrade created a user"
        for path in ("/echo?x=1", "/_/healthz"):
            r = await h.ahttp("GET", path)
            assert r.status == 200, f"{path} at the connection limit: {r}"
        r = await h.ahttp("GET", "/_/status", auth=True)
        assert r.status == 200 and r.json["connections"] == 2, r
        for w in (a, b):
            await w.send("x")
            assert await recv(w) == ANSWER
            await w.close()


async def test_abuse_loses_no_other_users_data():
    """'Nothing a client sends can ... lose another user's data': a user with queued
    messages resumes after a barrage of bad clients and gets them, in order, as the same
    user."""
    with Host(flags=["--max-message", "4096"]) as h:
        ws, g = await h.user()
        uid, token = g["user_id"], g["token"]
        await go_offline(h, ws, uid)
        for i in range(3):
            r = await h.apush(uid, f"queued {i}")
            assert r.status == 200 and r.json == {"delivered": 0}, r

        def barrage():
            for act in (
                lambda c: c.send_frame(OP_TEXT, b"\xff\xfe"),
                lambda c: c.send_frame(OP_TEXT, "x" * 5000),
                lambda c: c.send_frame(7, "x"),
                lambda c: c.send_close(5000),
                lambda c: c.send_bytes(bytes([0x81, 0xFF]) + (2**63 - 1).to_bytes(8, "big")
                                       + b"\0\0\0\0abc"),
                lambda c: c.send_frame(OP_CONT, "x"),
            ):
                c = h.raw(path=f"/?user_id={uid}&token=wrong")
                g2 = json.loads(c.recv_message()[1])
                assert g2["user_id"] != uid, "a wrong token resumed someone else's user"
                act(c)
                c.expect_close()
                c.close()
            for data in (os.urandom(2000), b"GET /?user_id=" + uid.encode() + b" HTTP/1.1\r\n"
                         b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"):
                exchange(h.port, data, timeout=12)

        await asyncio.to_thread(barrage)
        ws = await h.ws(f"user_id={uid}&token={token}")
        greeting, msgs = await collect(ws, 3)
        assert greeting and greeting["user_id"] == uid, greeting
        assert msgs == ["queued 0", "queued 1", "queued 2"], msgs
        await ws.close()


if __name__ == "__main__":
    run(globals())
