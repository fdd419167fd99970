"""Nothing lost, nothing unbounded: the outbox drain is paced and at-least-once,
sends from a close event are queued, the WAL is checkpointed, rows are pruned and capped, and
storage faults (a deleted file, a lock held by another process) are seen and survived."""

import json
import os
import socket
import sqlite3
import struct
import subprocess
import threading

import harness
from harness import *  # noqa: F401,F403

# The SQLite outbox, WAL, pruning and faults of one node: a cluster keeps its outbox in Redis
# (tests/e2e/test_cluster.py), so make test-redis runs this file on a single node.
harness.SINGLE_NODE_FILE = True

WSBENCH = os.path.join(BUILD_DIR, "wsbench")
N, SIZE = 300, 10_000


def body(i):
    return f"{i:05d}:" + "x" * SIZE


def index(m):
    assert isinstance(m, str) and m[5] == ":", f"not an outbox message: {m[:40]!r}"
    return int(m[:5])


def echo_host(**kw):
    return Host(plugins={"__websocket__": tplugin("ws_echo"), "shared": tplugin("shared")}, **kw)


async def offline_user_with_backlog(h, n=N):
    """A user who went away while n messages of SIZE bytes were pushed to them."""
    ws, g = await h.user()
    uid, token = g["user_id"], g["token"]
    await go_offline(h, ws, uid)
    for i in range(n):
        r = await h.apush(uid, body(i), admin=True)
        assert r.status == 200 and r.json == {"delivered": 0}, r
    assert h.sql("SELECT count(*) FROM outbox WHERE user_id = ?", (uid,))[0][0] == n
    return uid, token


def outbox_count(h, uid):
    return h.sql("SELECT count(*) FROM outbox WHERE user_id = ?", (uid,))[0][0]


async def test_backlog_larger_than_send_queue_arrives_whole_and_in_order():
    # 3 MB queued, 64 KB send queue: the old drain pushed it all at once and closed the
    # client as a slow reader after deleting the rows.
    with echo_host(flags=["--max-send-queue", "65536"]) as h:
        uid, token = await offline_user_with_backlog(h)
        ws, g = await h.user(f"user_id={uid}&token={token}")
        assert g["user_id"] == uid, g
        _, got = await collect(ws, N, timeout=60, greeting_expected=False)
        assert [index(m) for m in got] == list(range(N)), "out of order or missing"
        await async_wait_until(lambda: asyncio.to_thread(lambda: outbox_count(h, uid) == 0),
                               timeout=10, what="delivered rows deleted")
        await ws.close()


async def test_live_push_waits_behind_the_backlog():
    with echo_host(flags=["--max-send-queue", "65536"]) as h:
        uid, token = await offline_user_with_backlog(h)
        ws, g = await h.user(f"user_id={uid}&token={token}")
        # The client is not reading yet, so the drain is stalled: this must queue behind it.
        r = await h.apush(uid, "live", admin=True)
        assert r.status == 200 and r.json["delivered"] >= 1, r
        _, got = await collect(ws, N + 1, timeout=60, greeting_expected=False)
        assert got[-1] == "live", f"live send overtook queued rows at {got.index('live')}"
        assert [index(m) for m in got[:-1]] == list(range(N))
        await ws.close()


def frames_in(data):
    """Complete text frames in data (server frames: unmasked)."""
    out, off = [], 0
    while off + 2 <= len(data):
        n, hl = data[off + 1] & 0x7F, 2
        if n == 126:
            if off + 4 > len(data):
                break
            n, hl = struct.unpack("!H", data[off + 2:off + 4])[0], 4
        elif n == 127:
            if off + 10 > len(data):
                break
            n, hl = struct.unpack("!Q", data[off + 2:off + 10])[0], 10
        if off + hl + n > len(data):
            break
        if data[off] & 0x0F == OP_TEXT:
            out.append(data[off + hl:off + hl + n].decode())
        off += hl + n
    return out


async def test_client_dropping_mid_drain_gets_the_rest_next_time():
    with echo_host(flags=["--max-send-queue", "65536"]) as h:
        uid, token = await offline_user_with_backlog(h)
        raw = h.raw(f"/?user_id={uid}&token={token}", timeout=20, rcvbuf=16384)
        got = []
        while len(got) < 40:
            m = raw.recv_message()
            assert m and m[0] == OP_TEXT, m
            if not is_greeting(m[1]):
                got.append(m[1])
        # Stop reading; once the host stalls, count what reached this side's kernel (peek:
        # the window stays shut), then drop the connection with a reset.
        await asyncio.sleep(1.5)
        try:
            pending = raw.sock.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            pending = b""
        got += [m for m in frames_in(raw.buf + pending) if not is_greeting(m)]
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
        seen = [index(m) for m in got]
        assert seen == list(range(len(seen))), seen
        assert len(seen) < N, "the whole backlog fit the socket: nothing was dropped mid-drain"
        await async_wait_until(lambda: asyncio.to_thread(lambda: uid not in h.online_users()),
                               what="the dropped connection closed")
        left = outbox_count(h, uid)
        assert 0 < left <= N - 40, left
        ws, _ = await h.user(f"user_id={uid}&token={token}")
        _, rest = await collect(ws, left, timeout=60, greeting_expected=False)
        rest = [index(m) for m in rest]
        # At least once, in order: the second connection starts no later than where the
        # first stopped and runs to the end without a gap.
        assert rest[0] <= len(seen), f"missing {len(seen)}..{rest[0] - 1}"
        assert rest == list(range(rest[0], N)), rest
        await ws.close()


async def test_send_to_own_user_from_close_event_is_queued():
    with Host(plugins={"__websocket__": tplugin("ws_bye"), "shared": tplugin("shared")}) as h:
        ws, g = await h.user()
        uid, token = g["user_id"], g["token"]
        await go_offline(h, ws, uid)
        r = await h.ahttp("GET", "/shared?key=bye_rc")
        assert r.json == [0], f"cloud_send_to_user from the close event returned {r.json}, " \
                              "want 0 (queued): the closing connection still counted as live"
        assert outbox_count(h, uid) == 1
        ws, g = await h.user(f"user_id={uid}&token={token}")
        _, got = await collect(ws, 1, greeting_expected=False)
        assert got == ["bye"], got
        await ws.close()


def wsbench(*args, timeout=120):
    r = subprocess.run([WSBENCH, "-t", "30", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"wsbench {args} exit {r.returncode}: {r.stdout}{r.stderr}"
    line = [l for l in r.stdout.splitlines() if l.startswith("mode=")][-1]
    return dict(kv.split("=", 1) for kv in line.split())


async def test_push_queued_as_the_peer_closes_is_not_lost():
    """A message and the client's close frame arrive in one read: the handler's push goes into
    the send queue ("delivered": 1), then lws answers the close and hangs up without asking
    us to write again. The push must go to the outbox, not vanish with the queue (the soak
    lost 7 of 32 528 pushes this way)."""
    plugins = default_plugins()
    plugins["__websocket__"] = tplugin("ws_touser")
    with Host(plugins=plugins) as h:
        raw = h.raw()
        g = json.loads(raw.recv_message()[1])
        raw.send_bytes(raw.frame(OP_TEXT, "push 0") + raw.frame(OP_CLOSE, struct.pack("!H", 1000)))
        first = []
        while True:
            m = raw.recv_message()
            if m is None or m[0] == "close":
                break
            first.append(m[1])
        raw.sock.close()
        assert wait_until(lambda: not h.online_users(), 5)
        ws = await h.ws(f"user_id={g['user_id']}&token={g['token']}")
        await recv(ws)  # the greeting
        later = [await recv(ws, 5)] if not first else []
        await ws.close()
        assert [m if isinstance(m, str) else m.decode() for m in first] + later == ["push 0"], \
            (first, later)


def test_wal_stays_bounded_under_churn():
    bound = 24 << 20
    with Host() as h:
        wal, peak, stop = h.db + "-wal", [0], threading.Event()

        def sample():
            while not stop.is_set():
                if os.path.exists(wal):
                    peak[0] = max(peak[0], os.path.getsize(wal))
                time.sleep(0.05)

        t = threading.Thread(target=sample)
        t.start()
        try:
            r = wsbench("-p", h.port, "-m", "churn", "-c", 30, "-d", 8, "-g", 1, "-C", 1)
        finally:
            stop.set()
            t.join()
        users = h.sql("SELECT count(*) FROM users")[0][0]
        print(f"churned {r['churned']}, {users} users, WAL peak {peak[0] >> 10} KB")
        assert int(r["churned"]) > 500, f"too little churn to tell: {r}"
        assert peak[0] < bound, f"WAL reached {peak[0] >> 20} MB ({users} users): " \
                                "checkpoints are not keeping up"


def test_wrong_token_resumes_do_not_grow_users_past_max_users():
    with Host(flags=["--max-users", "200"]) as h:
        total, t0 = 0, time.monotonic()
        while total < 3000 and time.monotonic() - t0 < 90:
            r = wsbench("-p", h.port, "-m", "churn", "-c", 10, "-d", 3, "-g", 1, "-C", 0,
                        "-u", "/?user_id=nobody&token=wrong")
            total += int(r["churned"])
        assert total >= 3000, f"only {total} resumes in 90 s"
        users = h.sql("SELECT count(*) FROM users")[0][0]
        assert users <= 200, f"{total} failed resumes left {users} users (bound 200)"


async def test_idle_empty_users_and_old_connections_are_pruned():
    with echo_host(flags=["--user-ttl", "1", "--conn-history", "1"]) as h:
        gone, g1 = await h.user()
        keeps_mail, g2 = await h.user()
        online, g3 = await h.user()
        await go_offline(h, gone, g1["user_id"])
        await go_offline(h, keeps_mail, g2["user_id"])
        r = await h.apush(g2["user_id"], "for later", admin=True)
        assert r.status == 200, r

        def ids():
            return {u for (u,) in h.sql("SELECT id FROM users")}

        await async_wait_until(lambda: asyncio.to_thread(lambda: g1["user_id"] not in ids()),
                               timeout=10, what="the idle empty user pruned")
        await async_wait_until(
            lambda: asyncio.to_thread(lambda: h.sql(
                "SELECT count(*) FROM connections WHERE disconnected_at IS NOT NULL")[0][0] == 0),
            timeout=10, what="closed connection rows pruned")
        assert g2["user_id"] in ids(), "a user with queued messages was pruned"
        assert g3["user_id"] in ids(), "an online user was pruned"
        await online.send("still here")
        assert await recv(online) == "still here"


async def test_deleted_database_is_reported_and_work_refused():
    with echo_host() as h:
        ws, g = await h.user()
        uid = g["user_id"]
        await go_offline(h, ws, uid)
        os.unlink(h.db)
        await async_wait_until(
            lambda: asyncio.to_thread(lambda: h.http("GET", "/_/healthz").status == 503),
            timeout=10, what="/_/healthz 503")
        r = await h.ahttp("GET", "/_/healthz")
        assert "deleted" in r.json["store"], r.json
        r = await h.ahttp("GET", "/_/status", auth=True)
        assert r.status == 200 and "deleted" in r.json["store"]["fault"], r.json
        r = await h.apush(uid, "would be lost", admin=True)
        assert r.status == 503, f"push claimed {r.status} {r.json} on a deleted database"
        with pytest_raises(Fail):
            h.raw("/").close()
        assert len([l for l in h.log_since_start().splitlines()
                    if " error " in l and "deleted" in l]) == 1, h.log_tail()


def pytest_raises(exc):
    class Ctx:
        def __enter__(self):
            return self

        def __exit__(self, t, v, tb):
            if t is None:
                raise Fail(f"expected {exc.__name__}")
            self.value = v
            return issubclass(t, exc)
    return Ctx()


async def test_exclusive_lock_neither_stalls_echoes_nor_duplicates():
    with echo_host() as h:
        uid, token = await offline_user_with_backlog(h, 20)
        echoers = [(await h.user())[0] for _ in range(3)]
        held = threading.Event()
        release = threading.Event()

        def locker():
            con = sqlite3.connect(h.db, isolation_level=None, timeout=10)
            con.execute("BEGIN EXCLUSIVE")
            held.set()
            release.wait(20)
            con.execute("COMMIT")
            con.close()

        t = threading.Thread(target=locker)
        t.start()
        try:
            await asyncio.to_thread(held.wait, 10)
            # During the lock: the backlog is delivered (reads still work in WAL mode), the
            # user leaves again (its deletes and connection rows must wait, not block).
            ws, _ = await h.user(f"user_id={uid}&token={token}")
            _, got = await collect(ws, 20, timeout=20, greeting_expected=False)
            assert [index(m) for m in got] == list(range(20))
            await ws.close()
            # A new user meanwhile is told to retry (503), not upgraded and then dropped.
            with pytest_raises(Fail) as refused:
                h.raw("/").close()
            assert "503" in str(refused.value), refused.value
            worst, t0, n = 0.0, time.monotonic(), 0
            while time.monotonic() - t0 < 3:
                for e in echoers:
                    s = time.monotonic()
                    await e.send(f"ping {n}")
                    assert await recv(e, 5) == f"ping {n}"
                    worst = max(worst, time.monotonic() - s)
                    n += 1
            assert worst < 0.9, f"an echo took {worst:.2f}s while the database was locked"
        finally:
            release.set()
            t.join()
        # Once the held-back writes are in (retried with a backoff of at most 0.5 s), new
        # users are welcome again.
        deadline = time.monotonic() + 10
        while True:
            try:
                nws, ng = await h.user()
                break
            except websockets.InvalidStatusCode as e:
                assert e.status_code == 503 and time.monotonic() < deadline, e
                await asyncio.sleep(0.1)
        assert h.sql("SELECT count(*) FROM users WHERE id = ?", (ng["user_id"],))[0][0] == 1
        await async_wait_until(lambda: asyncio.to_thread(lambda: outbox_count(h, uid) == 0),
                               timeout=10, what="the delivered rows deleted after the lock")
        ws, _ = await h.user(f"user_id={uid}&token={token}")
        await no_message(ws, 1.0)  # nothing delivered twice
        for w in echoers + [ws, nws]:
            await w.close()


def hold_lock(db, held, release):
    con = sqlite3.connect(db, isolation_level=None, timeout=10)
    con.execute("BEGIN EXCLUSIVE")
    held.set()
    release.wait(20)
    con.execute("COMMIT")
    con.close()


async def test_new_user_during_lock_is_greeted_after_commit_and_healthz_answers():
    with echo_host() as h:
        echoer, _ = await h.user()
        held, release = threading.Event(), threading.Event()
        t = threading.Thread(target=hold_lock, args=(h.db, held, release))
        t.start()
        try:
            await asyncio.to_thread(held.wait, 10)
            # The first user after the lock began cannot be committed: its greeting (which
            # carries the id and token) waits; the connection is not dropped.
            newcomer = asyncio.ensure_future(h.user())
            await asyncio.sleep(1.0)
            assert not newcomer.done(), "a greeting left before its user was committed"
            r = await h.ahttp("GET", "/_/healthz")
            assert r.status == 200, f"/_/healthz held or failed during the lock: {r}"
            await echoer.send("still echoing")
            assert await recv(echoer, 5) == "still echoing"
        finally:
            release.set()
            t.join()
        ws, g = await asyncio.wait_for(newcomer, 20)
        assert h.sql("SELECT count(*) FROM users WHERE id = ?", (g["user_id"],))[0][0] == 1
        await ws.close()
        await echoer.close()


if __name__ == "__main__":
    run(globals())
