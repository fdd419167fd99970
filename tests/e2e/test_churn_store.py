"""What a connection writes, batched. A fresh user and its connection row are one
write; a close waits in memory for the loop pass's commit (or the batch timer). These tests
check that the database still tells the truth: after clean closes, and after kill -9 right
after closes (store_open repairs what a dead process left open, last_seen included)."""

import sqlite3
import threading
import time

import harness
from harness import *  # noqa: F401,F403

# The SQLite rows of one node (with --redis a new user is announced to the cluster first).
harness.SINGLE_NODE_FILE = True


def rows(h):
    """{user_id: (connected_at, disconnected_at, last_seen)} of every connection row."""
    return {r[0]: (r[1], r[2], r[3]) for r in h.sql(
        "SELECT c.user_id, c.connected_at, c.disconnected_at, u.last_seen "
        "FROM connections c JOIN users u ON u.id = c.user_id")}


async def greeted_users(h, n):
    users = [await h.user() for _ in range(n)]
    ids = {g["user_id"] for _, g in users}
    await async_wait_until(lambda: asyncio.to_thread(lambda: set(h.online_users()) == ids),
                           timeout=10, what=f"{n} users online")
    return users


async def test_clean_closes_close_rows_and_online_users():
    with Host() as h:
        users = await greeted_users(h, 8)
        await asyncio.sleep(0.05)  # a close's time differs from its connect's
        gone, stay = users[:4], users[4:]
        for ws, _ in gone:
            await ws.close()
        stay_ids = {g["user_id"] for _, g in stay}
        # The admin view applies closes still waiting for their commit before it reads.
        await async_wait_until(
            lambda: asyncio.to_thread(lambda: {u["id"] for u in h.http(
                "GET", "/_/users?online=1", auth=True).json} == stay_ids),
            timeout=10, what="/_/users?online=1 to list only the open connections")
        await async_wait_until(lambda: asyncio.to_thread(
            lambda: set(h.online_users()) == stay_ids), timeout=10,
            what="online_users (the file) to list only the open connections")
        r = rows(h)
        for _, g in gone:
            connected, disconnected, seen = r[g["user_id"]]
            assert disconnected is not None and disconnected >= connected, r[g["user_id"]]
            assert seen == disconnected, f"last_seen {seen} is not the close {disconnected}"
        for _, g in stay:
            assert r[g["user_id"]][1] is None, r[g["user_id"]]
        st = h.http("GET", "/_/status", auth=True).json
        assert st["store"]["online_users"] == 4, st["store"]
        for ws, _ in stay:
            await ws.close()
        await async_wait_until(lambda: asyncio.to_thread(lambda: h.online_users() == []),
                               timeout=10, what="nobody online")


def hold_lock(db, held, release):
    con = sqlite3.connect(db, isolation_level=None, timeout=10)
    con.execute("BEGIN EXCLUSIVE")
    held.set()
    release.wait(30)
    con.execute("ROLLBACK")
    con.close()


async def kill9_right_after_closes(h, locked):
    users = await greeted_users(h, 6)
    await asyncio.sleep(0.05)
    held, release = threading.Event(), threading.Event()
    t = threading.Thread(target=hold_lock, args=(h.db, held, release))
    if locked:  # the closes then surely wait in memory when the process dies
        t.start()
        await asyncio.to_thread(held.wait, 10)
    try:
        for ws, _ in users[:3]:
            await ws.close()
        if locked:
            await async_wait_until(
                lambda: asyncio.to_thread(
                    lambda: h.http("GET", "/_/status", auth=True).json["connections"] == 3),
                timeout=10, what="the host to see the 3 closes")
        h.kill9()
    finally:
        release.set()
        if locked:
            t.join()
    if locked:
        open_rows = [u for u, v in rows(h).items() if v[1] is None]
        assert len(open_rows) == 6, f"the closes were committed before the kill: {open_rows}"
    h.start()  # same database
    assert h.online_users() == [], h.online_users()
    for uid, (connected, disconnected, seen) in rows(h).items():
        assert disconnected is not None, f"{uid}'s row is still open after the restart"
        assert seen is not None and seen > connected, \
            f"{uid}: last_seen {seen} not after its connection {connected}"
    for _, g in users:
        ws, g2 = await h.user(f"user_id={g['user_id']}&token={g['token']}")
        assert g2["user_id"] == g["user_id"] and g2.get("token") is None, g2
        await ws.close()


async def test_kill9_right_after_closes():
    with Host() as h:
        await kill9_right_after_closes(h, locked=False)


async def test_kill9_with_closes_still_in_memory():
    with Host() as h:
        await kill9_right_after_closes(h, locked=True)


if __name__ == "__main__":
    run(globals())
