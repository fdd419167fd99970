"""Users, persistence and push (CONTRACT 3): resume, tabs, wrong tokens, token hashing,
kill -9 and restart, outbox order/bound/expiry, online_users under load, cloud_bind_user."""

import asyncio
import base64
import glob
import os
import threading
import time

from harness import *  # noqa: F401,F403


async def resume(h, uid, token):
    return await h.user(f"user_id={uid}&token={token}")


async def test_resume_gives_same_id():
    with Host() as h:
        ws, g = await h.user()
        uid, token = g["user_id"], g["token"]
        await ws.close()
        for _ in range(2):  # resuming works more than once with the same token
            ws, g2 = await resume(h, uid, token)
            assert g2["user_id"] == uid, f"resumed as {g2}, expected {uid}"
            assert g2.get("token") is None, f"a resumed user gets token null: {g2}"
            await ws.send("hi")
            assert await recv(ws) == "I have received your message"
            await ws.close()


async def test_online_users_view():
    with Host() as h:
        ws, g = await h.user()
        uid = g["user_id"]
        await async_wait_until(lambda: asyncio.to_thread(lambda: uid in h.online_users()),
                               what="the connected user in online_users")
        r = h.sql_cli("SELECT user_id FROM online_users")
        assert r.returncode == 0 and uid in r.stdout.split(), r
        await go_offline(h, ws, uid)
        assert h.sql("SELECT count(*) FROM users WHERE id = ?", (uid,))[0][0] == 1


async def test_two_tabs_both_receive_push():
    with Host() as h:
        tab1, g = await h.user()
        uid = g["user_id"]
        tab2, g2 = await resume(h, uid, g["token"])
        assert g2["user_id"] == uid
        r = await h.apush(uid, "to both tabs")
        assert r.status == 200 and r.json == {"delivered": 2}, r
        assert await recv(tab1) == "to both tabs"
        assert await recv(tab2) == "to both tabs"
        await tab1.close()
        r = await h.apush(uid, "to the one left")
        assert r.status == 200 and r.json == {"delivered": 1}, r
        assert await recv(tab2) == "to the one left"
        await tab2.close()


async def test_wrong_token_never_yields_the_id():
    with Host() as h:
        victim, g = await h.user()
        uid, token = g["user_id"], g["token"]
        other, go = await h.user()
        await go_offline(h, victim, uid)
        attempts = {
            "wrong token": f"user_id={uid}&token=wrong",
            "token one char off": f"user_id={uid}&token={token[:-1]}{'A' if token[-1] != 'A' else 'B'}",
            "empty token": f"user_id={uid}&token=",
            "no token": f"user_id={uid}",
            "another user's token": f"user_id={uid}&token={go['token']}",
            "token as id": f"user_id={token}&token={token}",
            "unknown id": f"user_id=AAAAAAAAAAAAAAAAAAAAAA&token={token}",
        }
        impostors = []
        for name, query in attempts.items():
            ws, gi = await h.user(query)
            assert gi["user_id"] != uid, f"{name}: got the victim's id"
            assert gi["user_id"] != "AAAAAAAAAAAAAAAAAAAAAA", f"{name}: got the asked unknown id"
            assert USER_ID_RE.match(gi["user_id"]), gi
            assert isinstance(gi.get("token"), str) and gi["token"], \
                f"{name}: a fresh user must get a token: {gi}"
            impostors.append(ws)
        r = await h.apush(uid, "for the victim only")
        assert r.status == 200 and r.json == {"delivered": 0}, \
            f"the victim is offline; impostor connections must not count: {r}"
        for ws in impostors:
            await no_message(ws, 0.2)
            await ws.close()
        h.wait_log(r"\bwarn")  # DECISIONS: a wrong token is logged at warn
        # the real owner still gets in, and gets the message
        ws = await h.ws(f"user_id={uid}&token={token}")
        greeting, msgs = await collect(ws, 1)
        assert greeting and greeting["user_id"] == uid and msgs == ["for the victim only"], \
            (greeting, msgs)
        await ws.close()
        await other.close()


async def test_token_not_stored_in_plain():
    with Host() as h:
        tokens = []
        for _ in range(5):
            ws, g = await h.user()
            tokens.append(g["token"])
            await ws.close()

        def check(when):
            files = [f for f in glob.glob(h.db + "*") if os.path.isfile(f)]
            assert files, "no db files"
            for path in files:
                with open(path, "rb") as f:
                    data = f.read()
                for t in tokens:
                    decoded = base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))
                    assert t.encode() not in data, f"{when}: plain token in {path}"
                    assert decoded not in data, f"{when}: token bytes in {path}"
                    assert decoded.hex().encode() not in data, f"{when}: token hex in {path}"
        check("while running")
        assert h.stop() == 0
        check("after stop")


async def test_outbox_delivered_after_reconnect_in_order_once():
    with Host() as h:
        ws, g = await h.user()
        uid, token = g["user_id"], g["token"]
        await go_offline(h, ws, uid)
        for i in range(5):
            r = await h.apush(uid, f"queued {i}")
            assert r.status == 200 and r.json == {"delivered": 0}, r
        ws = await h.ws(f"user_id={uid}&token={token}")
        greeting, msgs = await collect(ws, 5)
        assert greeting and greeting["user_id"] == uid, greeting
        assert msgs == [f"queued {i}" for i in range(5)], msgs
        r = await h.apush(uid, "live marker")
        assert r.json == {"delivered": 1}, r
        assert await recv(ws) == "live marker", "a queued message came twice or late"
        await go_offline(h, ws, uid)
        ws = await h.ws(f"user_id={uid}&token={token}")
        greeting = await recv_json(ws)
        r = await h.apush(uid, "second marker")
        assert r.json == {"delivered": 1}, r
        assert await recv(ws) == "second marker", "queued messages delivered twice"
        await ws.close()


async def test_kill9_restart_keeps_users_and_outbox():
    with Host() as h:
        users, sockets = [], []
        for _ in range(20):
            ws, g = await h.user()
            users.append((g["user_id"], g["token"]))
            sockets.append(ws)
        ids = {u for u, _ in users}
        await async_wait_until(lambda: asyncio.to_thread(lambda: ids <= set(h.online_users())),
                               what="20 users in online_users")
        # the first five go offline and get messages queued before the crash
        for (uid, _), ws in list(zip(users, sockets))[:5]:
            await go_offline(h, ws, uid)
            for i in range(3):
                r = await h.apush(uid, f"before crash {i}")
                assert r.json == {"delivered": 0}, r
        h.kill9()
        for ws in sockets:
            ws.transport.abort()
        h.start()  # same db
        online = h.online_users()
        assert online == [], f"online_users after kill -9 and restart: {online}"
        r = h.sql_cli("SELECT user_id FROM online_users")
        assert r.returncode == 0 and r.stdout.strip() == "", r
        for uid, _ in users:
            for i in range(2):
                r = await h.apush(uid, f"after restart {i}")
                assert r.status == 200 and r.json == {"delivered": 0}, f"{uid}: {r}"
        for n, (uid, token) in enumerate(users):
            expected = ([f"before crash {i}" for i in range(3)] if n < 5 else []) + \
                [f"after restart {i}" for i in range(2)]
            ws = await h.ws(f"user_id={uid}&token={token}")
            greeting, msgs = await collect(ws, len(expected))
            assert greeting and greeting["user_id"] == uid, f"resume after restart: {greeting}"
            assert msgs == expected, f"user {n}: {msgs} != {expected}"
            r = await h.apush(uid, "marker")
            assert r.json == {"delivered": 1}, r
            assert await recv(ws) == "marker", f"user {n}: a queued message came twice"
            await ws.close()


async def test_outbox_bound():
    # Single node: a cluster's outbox is in Redis (docs/SCALING.md).
    with Host(flags=["--outbox-max", "3"], single_node=True) as h:
        ws, g = await h.user()
        uid, token = g["user_id"], g["token"]
        await go_offline(h, ws, uid)
        for i in range(3):
            r = await h.apush(uid, f"m{i}")
            assert r.status == 200 and r.json == {"delivered": 0}, r
        r = await h.apush(uid, "m3")
        assert r.status == 507 and r.json == {"error": "outbox full"}, r
        ws = await h.ws(f"user_id={uid}&token={token}")
        greeting, msgs = await collect(ws, 3)
        assert msgs == ["m0", "m1", "m2"], f"outbox full must keep the first ones: {msgs}"
        r = await h.apush(uid, "live")
        assert r.json == {"delivered": 1}, r
        assert await recv(ws) == "live"
        await go_offline(h, ws, uid)
        r = await h.apush(uid, "room again")  # the drained outbox has room again
        assert r.status == 200 and r.json == {"delivered": 0}, r


async def test_outbox_expiry():
    with Host(flags=["--outbox-ttl", "1"]) as h:
        ws, g = await h.user()
        uid, token = g["user_id"], g["token"]
        await go_offline(h, ws, uid)
        r = await h.apush(uid, "old")
        assert r.json == {"delivered": 0}, r
        await asyncio.sleep(2.2)  # past the 1 s TTL
        r = await h.apush(uid, "new")
        assert r.json == {"delivered": 0}, r
        ws = await h.ws(f"user_id={uid}&token={token}")
        greeting, msgs = await collect(ws, 1)
        assert msgs == ["new"], f"expired message delivered: {msgs}"
        r = await h.apush(uid, "marker")
        assert r.json == {"delivered": 1}, r
        assert await recv(ws) == "marker", "expired message delivered late"
        await ws.close()


async def test_sqlite_readers_never_locked():
    with Host() as h:
        stop = threading.Event()
        runs, failures = [0], []

        def reader():
            while not stop.is_set():
                r = h.sql_cli("SELECT user_id FROM online_users")
                runs[0] += 1
                if r.returncode != 0 or "locked" in r.stderr or "busy" in r.stderr.lower():
                    failures.append((r.returncode, r.stderr.strip()))

        t = threading.Thread(target=reader)
        t.start()
        try:
            waves, t0 = 0, time.monotonic()
            # at least 10 waves and 200 reads, at most 60 s
            while (waves < 10 or runs[0] < 200) and time.monotonic() - t0 < 60:
                waves += 1
                conns = await asyncio.gather(*(h.user() for _ in range(50)))
                await asyncio.gather(*(ws.close() for ws, _ in conns))
                # and some abrupt drops
                conns = await asyncio.gather(*(h.user() for _ in range(10)))
                for ws, _ in conns:
                    ws.transport.abort()
        finally:
            stop.set()
            t.join(30)
        assert not failures, f"{len(failures)} of {runs[0]} sqlite3 reads failed: {failures[:3]}"
        assert runs[0] >= 200, f"only {runs[0]} reads ran during {waves} waves of churn"
        await async_wait_until(lambda: asyncio.to_thread(lambda: h.online_users() == []),
                               what="online_users empty after everyone left")


def bind_host(**kw):
    return Host(plugins={"__websocket__": tplugin("ws_bind"), "push": example("push")}, **kw)


async def test_bind_user():
    with bind_host() as h:
        a = await h.ws("name=alice@example.com&secret=letmein")
        ga = await recv_json(a)
        assert ga["bind_rc"] == 0, ga
        await a.send("whoami")
        assert await recv(a) == "alice@example.com"
        b = await h.ws("name=alice@example.com&secret=letmein")
        assert (await recv_json(b))["bind_rc"] == 0
        r = await h.apush("alice@example.com", "hi alice")
        assert r.status == 200 and r.json == {"delivered": 2}, r
        assert await recv(a) == "hi alice" and await recv(b) == "hi alice"
        await b.send("bind")
        assert await recv(b) == str(CLOUD_ESTATE), "bind outside the connection event"
        bad = await h.ws("name=bad%20name!&secret=letmein")
        gbad = await recv_json(bad)
        assert gbad["bind_rc"] == CLOUD_EINVAL, gbad
        anon = await h.ws("name=alice@example.com&secret=wrong")  # the app refuses: host id
        ganon = await recv_json(anon)
        assert ganon["bind_rc"] == 1 and ganon["user_id"] != "alice@example.com", ganon
        for ws in (a, b, bad, anon):
            await ws.close()
        await async_wait_until(
            lambda: asyncio.to_thread(lambda: "alice@example.com" not in h.online_users()),
            what="alice offline")
        r = await h.apush("alice@example.com", "queued for alice")
        assert r.json == {"delivered": 0}, r
        a = await h.ws("name=alice@example.com&secret=letmein")
        greeting, msgs = await collect(a, 1)
        assert msgs == ["queued for alice"], msgs
        await a.close()


if __name__ == "__main__":
    run(globals())
