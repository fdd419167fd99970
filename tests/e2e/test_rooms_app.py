"""Rooms for applications through tests/plugins/rooms_app.c: rooms a user holds reach every
socket of the user (later ones too, after a restart too), presence events for a user's first
socket in and last out, cloud_room_members and cloud_socket_rooms agreeing inside the close
event, cloud_rooms and cloud_user_sockets, kept room history (bounded, surviving a restart),
and users created before they connect."""

import asyncio
import json

from harness import *  # noqa: F401,F403

EINVAL, ENOUSER = -1, -4


def app_host(**kw):
    return Host(plugins={"__websocket__": tplugin("rooms_app")}, **kw)


async def connect(h, user=None):
    ws = await h.ws(f"as={user}" if user else "")
    hello = await recv(ws)
    assert hello.startswith("hello "), hello
    return ws, hello[len("hello "):]


async def heard(ws, want, timeout=5.0):
    """Waits for message want on ws (others are kept for later calls); Fail if it never comes."""
    kept = SKIPPED.setdefault(id(ws), [])
    if want in kept:
        kept.remove(want)
        return
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise Fail(f"never heard {want!r}; got {kept}")
        m = await recv(ws, left)
        if m == want:
            return
        kept.append(m)


def presence(msgs):
    return [" ".join(m.split()[:4]) for m in msgs if m.startswith("presence ")]


async def test_user_rooms_reach_every_socket_and_later_ones():
    with app_host() as h:
        obs, _ = await connect(h, "observer")
        a1, _ = await connect(h, "alice")
        a2, _ = await connect(h, "alice")
        ctl, _ = await connect(h)
        assert await cmd(ctl, "ujoin alice lobby") == "2"
        assert await cmd(ctl, "say lobby hi all") == "2"
        await heard(a1, "hi all")
        await heard(a2, "hi all")
        a3, _ = await connect(h, "alice")
        assert await cmd(a3, "myrooms") == '["lobby"]', "a later socket is not in the user's room"
        assert await cmd(ctl, "say lobby second") == "3"
        for ws in (a1, a2, a3):
            await heard(ws, "second")
        got = presence(await drain(obs, 1.0))
        assert got == ["presence join alice lobby"], f"one join for the user's first socket: {got}"
        assert await cmd(ctl, "uleave alice lobby") == "3"
        assert await cmd(a1, "myrooms") == "[]"
        got = presence(await drain(obs, 1.0))
        assert got == ["presence leave alice lobby"], got
        # Leaving a room the user does not hold, bad names, unknown users.
        assert await cmd(ctl, "uleave alice lobby") == str(EINVAL)
        assert await cmd(ctl, "ujoin alice bad/room") == str(EINVAL)
        assert await cmd(ctl, "ujoin nobody-here lobby") == str(ENOUSER)
        for ws in (obs, a1, a2, a3, ctl):
            await ws.close()


async def test_user_rooms_survive_a_restart():
    with app_host() as h:
        b1, _ = await connect(h, "bob")
        assert await cmd(b1, "ujoin bob team") == "1"
        await b1.close()
        h.stop()
        h.start()
        b2, _ = await connect(h, "bob")
        assert await cmd(b2, "myrooms") == '["team"]', "the user's room was lost in a restart"
        ctl, _ = await connect(h)
        assert await cmd(ctl, "say team after restart") == "1"
        await heard(b2, "after restart")
        await b2.close()
        await ctl.close()


async def test_presence_first_in_last_out_and_close_agrees():
    with app_host() as h:
        obs, _ = await connect(h, "observer")
        c1, _ = await connect(h, "carol")
        c2, _ = await connect(h, "carol")
        assert await cmd(c1, "join r1") == "0"
        assert await cmd(c2, "join r1") == "0"
        assert await cmd(c2, "join r2") == "0"
        got = presence(await drain(obs, 1.0))
        assert sorted(got) == ["presence join carol r1", "presence join carol r2"], got
        await c2.close()
        await heard(obs, "close carol agree")
        got = presence(await drain(obs, 1.0))
        assert got == ["presence leave carol r2"], f"carol still has a socket in r1: {got}"
        members = await cmd(obs, "members r1")
        assert '"carol"' in members and '"sockets":1' in members, members
        await c1.close()
        await heard(obs, "close carol agree")
        got = presence(await drain(obs, 1.0))
        assert got == ["presence leave carol r1"], got
        assert await cmd(obs, "rooms") == "[]"
        await obs.close()


async def test_rooms_and_user_sockets():
    with app_host() as h:
        d1, _ = await connect(h, "dan")
        d2, _ = await connect(h, "dan")
        e1, _ = await connect(h, "eve")
        await cmd(d1, "join alpha")
        await cmd(d2, "join alpha")
        await cmd(e1, "join alpha")
        await cmd(e1, "join beta")
        assert await cmd(e1, "rooms") == ('[{"room":"alpha","users":2,"sockets":3},'
                                          '{"room":"beta","users":1,"sockets":1}]')
        socks = json.loads(await cmd(e1, "usockets dan"))
        assert len(socks) == 2 and all(set(s) == {"socket", "session", "node"} for s in socks), socks
        assert len({s["socket"] for s in socks}) == 2
        assert await cmd(e1, "usockets nobody") == "[]"
        assert await cmd(e1, "usockets bad/id") == "null"
        for ws in (d1, d2, e1):
            await ws.close()


async def test_history_is_kept_bounded_and_survives_a_restart():
    with app_host() as h:
        s1, _ = await connect(h)
        assert await cmd(s1, "keep news 3") == "0"
        for i in range(5):
            assert await cmd(s1, f"say news item {i}") == "0"
        s2, _ = await connect(h)
        assert await cmd(s2, "history news 10") == "3"
        assert await drain(s2, 0.5) == ["item 2", "item 3", "item 4"]
        assert await cmd(s2, "history news 1") == "1"
        assert await drain(s2, 0.5) == ["item 4"]
        assert await cmd(s2, "history nothing-kept 5") == "0"
        assert await cmd(s2, "keep news 1001") == str(EINVAL)
        assert await cmd(s2, "keep bad/name 3") == str(EINVAL)
        await s1.close()
        await s2.close()
        # Only last_n rows are in the database.
        wait_until(lambda: h.sql("SELECT count(*) FROM room_history WHERE room = 'news'") == [(3,)],
                   5, what="three kept rows")
        h.stop()
        h.start()
        s3, _ = await connect(h)
        assert await cmd(s3, "history news 10") == "3"
        assert await drain(s3, 0.5) == ["item 2", "item 3", "item 4"]
        assert await cmd(s3, "say news item 5") == "0"
        assert await cmd(s3, "history news 2") == "2"
        assert await drain(s3, 0.5) == ["item 4", "item 5"]
        # Keeping none drops what was kept.
        assert await cmd(s3, "keep news 0") == "0"
        assert await cmd(s3, "history news 10") == "0"
        wait_until(lambda: h.sql("SELECT count(*) FROM room_history") == [(0,)], 5,
                   what="the kept frames to be dropped (committed with the pass)")
        await s3.close()


async def test_history_is_bounded_in_bytes():
    with app_host() as h:
        s1, _ = await connect(h)
        assert await cmd(s1, "keep big 1000") == "0"
        chunk = "x" * (200 * 1024)
        for i in range(60):  # 12 MB sent; 8 MiB kept at most
            assert await cmd(s1, f"say big {i} {chunk}", timeout=10) == "0"
        n, size = h.sql("SELECT count(*), sum(length(payload)) FROM room_history")[0]
        assert size <= 8 * 1024 * 1024 and n < 60, (n, size)
        await s1.close()


async def test_created_user_gets_what_was_sent_before_it_connected():
    with app_host() as h:
        ctl, _ = await connect(h)
        assert await cmd(ctl, "create frank") == "1"
        assert await cmd(ctl, "create frank") == "0"
        assert await cmd(ctl, "create bad/id") == str(EINVAL)
        r = await h.apush("frank", "welcome aboard", admin=True)
        assert r.status == 200 and r.json == {"delivered": 0}, r
        f1 = await h.ws("as=frank")
        assert await recv(f1) == "hello frank"
        assert await recv(f1) == "welcome aboard"
        await f1.close()
        await ctl.close()


if __name__ == "__main__":
    run(globals())
