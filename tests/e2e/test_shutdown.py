"""SIGTERM drain (CONTRACT 6): close 1001 to every client, state flushed, exit 0,
online_users empty; queued messages survive a clean restart."""

import asyncio
import signal
import time

from harness import *  # noqa: F401,F403


async def test_sigterm_closes_1001_and_exits_0():
    h = Host()
    with h:
        conns = [await h.user() for _ in range(3)]
        ids = {g["user_id"] for _, g in conns}
        await async_wait_until(lambda: asyncio.to_thread(lambda: ids <= set(h.online_users())),
                               what="3 users online")
        h.signal(signal.SIGTERM)
        closes = await asyncio.gather(*(expect_close(ws, timeout=10) for ws, _ in conns))
        for code, reason in closes:
            assert code == CLOSE_GOING_AWAY, f"close on SIGTERM: {code} {reason!r}"
        rc = await asyncio.to_thread(h.wait_exit)
        assert rc == 0, f"exit status after SIGTERM: {rc}"
        r = h.sql_cli("SELECT user_id FROM online_users")
        assert r.returncode == 0 and r.stdout.strip() == "", f"online after SIGTERM: {r}"
        assert sorted(r[0] for r in h.sql("SELECT id FROM users")) == sorted(ids)


def test_drain_readyz_503_listener_open_reconnect_hint():
    """SIGTERM: /_/readyz answers 503 at once (GET and HEAD) while a client that does not answer
    the close keeps the drain going; the listener still accepts and answers; the close says
    1001 "shutdown; reconnect"; the host exits by --drain-timeout."""
    h = Host(flags=["--drain-timeout", "4"])
    with h:
        assert h.http("GET", "/_/readyz").status == 200
        assert h.http("HEAD", "/_/readyz").status == 200
        stuck = h.raw("/", timeout=10)  # reads its greeting later, never answers the close
        wait_until(lambda: h.http("GET", "/_/status", auth=True).json["connections"] == 1,
                   what="the connection to be counted")
        t0 = time.monotonic()
        h.signal(signal.SIGTERM)
        wait_until(lambda: h.http("GET", "/_/readyz", timeout=2).status == 503, timeout=2,
                   what="readyz 503 after SIGTERM")
        r = h.http("HEAD", "/_/readyz")
        assert r.status == 503 and r.body == b"", r
        # Still listening: a new connection is accepted and answered (healthz: alive).
        r = h.http("GET", "/_/healthz", timeout=2)
        assert r.status == 200 and r.json == {"ok": False}, r
        assert h.running(), "the host exited while a connection was draining"
        seen = []
        while True:
            m = stuck.recv_message()
            if m is None or m[0] == "close":
                seen.append(m)
                break
        assert seen[0] == ("close", (CLOSE_GOING_AWAY, "shutdown; reconnect")), seen
        rc = h.wait_exit(timeout=15)
        took = time.monotonic() - t0
        assert rc == 0, f"exit {rc}"
        assert took < 4 + 5, f"drain took {took:.1f}s with --drain-timeout 4"
        stuck.close()


def test_sigterm_idle_exits_0():
    with Host() as h:
        assert h.stop() == 0


async def test_sigterm_restart_keeps_outbox_and_resume():
    h = Host()
    with h:
        ws, g = await h.user()
        uid, token = g["user_id"], g["token"]
        await go_offline(h, ws, uid)
        for i in range(3):
            r = await h.apush(uid, f"kept {i}")
            assert r.json == {"delivered": 0}, r
        assert await asyncio.to_thread(h.stop) == 0
        await asyncio.to_thread(h.start)
        ws = await h.ws(f"user_id={uid}&token={token}")
        greeting, msgs = await collect(ws, 3)
        assert greeting and greeting["user_id"] == uid, greeting
        assert msgs == ["kept 0", "kept 1", "kept 2"], msgs
        await ws.close()


async def test_sigterm_with_busy_clients():
    h = Host()
    with h:
        conns = [await h.user() for _ in range(20)]

        async def chatter(ws):
            # A busy client still reads: one that never reads cannot see a close frame.
            async def drain():
                async for _ in ws:
                    pass
            reader = asyncio.create_task(drain())
            try:
                while True:
                    await ws.send("x" * 1000)
                    await asyncio.sleep(0.005)
            except websockets.ConnectionClosed:
                await asyncio.gather(reader, return_exceptions=True)
                return ws.close_code
        tasks = [asyncio.create_task(chatter(ws)) for ws, _ in conns]
        await asyncio.sleep(0.3)
        h.signal(signal.SIGTERM)
        codes = await asyncio.wait_for(asyncio.gather(*tasks), 15)
        rc = await asyncio.to_thread(h.wait_exit)
        assert rc == 0, f"exit status after SIGTERM under load: {rc}"
        assert all(c == CLOSE_GOING_AWAY for c in codes), f"close codes: {codes}"


if __name__ == "__main__":
    run(globals())
