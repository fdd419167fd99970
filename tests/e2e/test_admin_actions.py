"""The operator's actions in the admin API: disconnect a user's sockets (with a close code and
whether to come back), revoke a user's resume token, create a user before it connects, broadcast
to every socket, and list the rooms. Each behind the admin token; bad bodies are 400."""

import asyncio
import json
import os
import subprocess
import sys
import tempfile

from harness import *  # noqa: F401,F403

import websockets


async def closed_with(ws, timeout=5.0):
    """The close code and reason the host sent."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed as e:
        rcvd = e.rcvd
        return (rcvd.code, rcvd.reason) if rcvd else (None, None)
    except asyncio.TimeoutError:
        raise Fail(f"not closed within {timeout}s") from None


ACTIONS = [("POST", "/_/users/AAAAAAAAAAAAAAAAAAAAAA/disconnect", {}),
           ("POST", "/_/users/AAAAAAAAAAAAAAAAAAAAAA/revoke", None),
           ("POST", "/_/users", {"user_id": "x"}), ("POST", "/_/broadcast", {"message": "x"}),
           ("GET", "/_/rooms", None)]


def test_actions_require_the_token():
    with Host() as h:
        for method, path, body in ACTIONS:
            r = h.http(method, path, json_body=body)
            assert r.status == 401, f"{method} {path} without a token: {r}"
            r = h.http(method, path, json_body=body, auth="wrong")
            assert r.status == 401, f"{method} {path} with a wrong token: {r}"


async def test_disconnect_closes_every_socket_of_the_user_and_no_other():
    with Host() as h:
        a1, g = await h.user()
        uid, token = g["user_id"], g["token"]
        a2, g2 = await h.user(f"user_id={uid}&token={token}")
        assert g2["user_id"] == uid, g2
        b, gb = await h.user()
        r = await h.ahttp("POST", f"/_/users/{uid}/disconnect", json_body={}, auth=True)
        assert r.status == 200 and r.json == {"user_id": uid, "code": 4000, "disconnected": 2}, r
        for ws in (a1, a2):
            code, reason = await closed_with(ws)
            assert code == 4000 and reason == "disconnected by the operator", (code, reason)
        r = await h.apush(gb["user_id"], "still here", admin=True)
        assert r.status == 200 and r.json == {"delivered": 1}, r
        assert await recv(b) == "still here"
        # No reconnect: 4001; an explicit code and reason are passed through.
        a3, _ = await h.user(f"user_id={uid}&token={token}")
        r = await h.ahttp("POST", f"/_/users/{uid}/disconnect",
                          json_body={"reconnect": False}, auth=True)
        assert r.status == 200 and r.json["code"] == 4001, r
        assert (await closed_with(a3))[0] == 4001
        a4, _ = await h.user(f"user_id={uid}&token={token}")
        r = await h.ahttp("POST", f"/_/users/{uid}/disconnect",
                          json_body={"code": 4321, "reason": "maintenance"}, auth=True)
        assert r.status == 200 and r.json["disconnected"] == 1, r
        assert await closed_with(a4) == (4321, "maintenance")
        # The resume token still works after a disconnect (it is not a revoke).
        a5, g5 = await h.user(f"user_id={uid}&token={token}")
        assert g5["user_id"] == uid, g5
        await a5.close()
        await b.close()


async def test_disconnect_bad_input():
    with Host() as h:
        ws, g = await h.user()
        uid = g["user_id"]
        for body, what in [({"code": 1005}, "reserved code"), ({"code": 999}, "code below 1000"),
                           ({"code": 5000}, "code above 4999"), ({"code": "4000"}, "string code"),
                           ({"reconnect": "yes"}, "non-boolean reconnect"),
                           ({"reason": "x" * 124}, "reason over 123 bytes"),
                           ({"reason": 7}, "non-string reason")]:
            r = await h.ahttp("POST", f"/_/users/{uid}/disconnect", json_body=body, auth=True)
            assert r.status == 400, f"{what}: {r}"
        r = await h.ahttp("POST", f"/_/users/{uid}/disconnect", body="[1]", auth=True,
                          headers={"Content-Type": "application/json"})
        assert r.status == 400, r
        r = await h.ahttp("POST", "/_/users/AAAAAAAAAAAAAAAAAAAAAA/disconnect", json_body={},
                          auth=True)
        assert r.status == 404, r
        for path in (f"/_/users/{uid}/kick", f"/_/users/{uid}/disconnect/x", "/_/users//revoke",
                     "/_/users/a%2fb/revoke", "/_/users/" + "a" * 129 + "/revoke"):
            r = await h.ahttp("POST", path, json_body={}, auth=True)
            assert r.status == 404, f"{path}: {r}"
        # None of that closed the socket.
        r = await h.apush(uid, "alive", admin=True)
        assert r.json == {"delivered": 1}, r
        assert await recv(ws) == "alive"
        await ws.close()


async def test_revoke_ends_resume_even_after_a_restart():
    with Host() as h:
        ws, g = await h.user()
        uid, token = g["user_id"], g["token"]
        r = await h.ahttp("POST", f"/_/users/{uid}/revoke", auth=True)
        assert r.status == 200 and r.json == {"user_id": uid, "revoked": True,
                                              "disconnected": 1}, r
        assert (await closed_with(ws))[0] == 4001
        ws, g2 = await h.user(f"user_id={uid}&token={token}")
        assert g2["user_id"] != uid, f"a revoked token resumed {uid}"
        await ws.close()
        r = await h.ahttp("POST", f"/_/users/{uid}/revoke", auth=True)
        assert r.status == 409, f"a second revoke: {r}"
        r = await h.ahttp("POST", "/_/users/AAAAAAAAAAAAAAAAAAAAAA/revoke", auth=True)
        assert r.status == 404, r
        # The revoke is in the database: a restarted host does not take the token either.
        h.stop()
        h.start()
        ws, g3 = await h.user(f"user_id={uid}&token={token}")
        assert g3["user_id"] != uid, f"a revoked token resumed {uid} after a restart"
        await ws.close()
        # The user's queue is kept: revoking is not deleting.
        assert h.sql("SELECT count(*) FROM users WHERE id = ?", (uid,)) == [(1,)]


async def test_created_user_gets_queued_messages_and_revoke_refuses_it():
    with Host() as h:
        r = await h.ahttp("POST", "/_/users", json_body={"user_id": "teammate-7"}, auth=True)
        assert r.status == 201 and r.json == {"user_id": "teammate-7", "created": True}, r
        r = await h.ahttp("POST", "/_/users", json_body={"user_id": "teammate-7"}, auth=True)
        assert r.status == 200 and r.json == {"user_id": "teammate-7", "created": False}, r
        r = await h.apush("teammate-7", "welcome", admin=True)
        assert r.status == 200 and r.json == {"delivered": 0}, f"not queued: {r}"
        if not e2e_redis_url():  # a cluster queues in Redis
            assert h.sql("SELECT count(*) FROM outbox WHERE user_id = 'teammate-7'") == [(1,)]
        # An app-bound user has no host token to revoke.
        r = await h.ahttp("POST", "/_/users/teammate-7/revoke", auth=True)
        assert r.status == 409, r
        for body in ({"user_id": "bad id"}, {"user_id": ""}, {"user_id": "x" * 129}, {"id": "a"},
                     {"user_id": 5}):
            r = await h.ahttp("POST", "/_/users", json_body=body, auth=True)
            assert r.status == 400, f"{body}: {r}"


async def test_broadcast_reaches_every_socket():
    with Host() as h:
        socks = [(await h.user())[0] for _ in range(3)]
        r = await h.ahttp("POST", "/_/broadcast", json_body={"message": "all hands"}, auth=True)
        assert r.status == 200 and r.json == {"delivered": 3,
                                              "cluster": bool(e2e_redis_url())}, r
        for ws in socks:
            assert await recv(ws) == "all hands"
        for body in ({}, {"message": 3}, {"msg": "x"}):
            r = await h.ahttp("POST", "/_/broadcast", json_body=body, auth=True)
            assert r.status == 400, f"{body}: {r}"
        for ws in socks:
            await ws.close()


async def test_rooms_list():
    with Host(plugins={"__websocket__": tplugin("rooms_ws")}) as h:
        r = await h.ahttp("GET", "/_/rooms", auth=True)
        assert r.status == 200 and r.json == {"rooms": [], "count": 0, "truncated": False}, r
        a = await h.ws()
        b = await h.ws()
        await cmd(a, "join zeta")
        await cmd(a, "join alpha")
        await cmd(b, "join alpha")
        r = await h.ahttp("GET", "/_/rooms", auth=True)
        assert r.status == 200, r
        assert r.json == {"rooms": [{"room": "alpha", "users": 2, "sockets": 2},
                                    {"room": "zeta", "users": 1, "sockets": 1}],
                          "count": 2, "truncated": False}, r
        r = await h.ahttp("GET", "/_/rooms?limit=1", auth=True)
        assert len(r.json["rooms"]) == 1 and r.json["truncated"] is True, r
        await a.close()
        await async_wait_until(
            lambda: h.http("GET", "/_/rooms", auth=True).json["rooms"] ==
            [{"room": "alpha", "users": 1, "sockets": 1}], what="a's rooms to go")
        await b.close()


def ctl(*args, etc=None, env_file=None):
    """tools/wshostctl with nothing but the given settings (no --url, --token or --db)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("WSHOST")}
    e["WSHOSTCTL_ETC"] = etc or "/nonexistent"
    if env_file:
        e["WSHOSTCTL_ENV_FILE"] = env_file
    return subprocess.run([sys.executable, os.path.join(SOURCE_DIR, "tools", "wshostctl"),
                           *args], capture_output=True, text=True, timeout=20, env=e)


async def test_wshostctl_actions_read_the_hosts_settings():
    with Host(plugins={"__websocket__": tplugin("rooms_ws")}) as h, \
            tempfile.TemporaryDirectory() as etc:
        env_file = os.path.join(etc, "wshost.env")
        with open(env_file, "w") as f:
            f.write(f"# the host's settings\nWSHOST_PORT={h.port}\nWSHOST_DB={h.db}\n"
                    f"WSHOST_ADMIN_TOKEN={ADMIN_TOKEN}\n")
        a, b = await h.ws(), await h.ws()
        await cmd(a, "join lobby")
        p = await asyncio.to_thread(ctl, "rooms", env_file=env_file)
        assert p.returncode == 0 and "lobby" in p.stdout, (p.stdout, p.stderr)
        p = await asyncio.to_thread(ctl, "--json", "broadcast", "hi all", env_file=env_file)
        assert p.returncode == 0 and json.loads(p.stdout)["delivered"] == 2, (p.stdout, p.stderr)
        # The JSON config alone: the port and a token file, from the default folder.
        token_file = os.path.join(etc, "admin-token")
        with open(token_file, "w") as f:
            f.write(ADMIN_TOKEN + "\n")
        with open(os.path.join(etc, "wshost.json"), "w") as f:
            json.dump({"port": h.port, "bind": "0.0.0.0", "admin-token-file": token_file,
                       "db": h.db}, f)
        os.unlink(env_file)
        p = await asyncio.to_thread(ctl, "add-user", "mate-1", etc=etc)
        assert p.returncode == 0 and "created" in p.stdout, (p.stdout, p.stderr)
        r = await h.ahttp("POST", "/_/users", json_body={"user_id": "mate-1"}, auth=True)
        assert r.json["created"] is False, f"wshostctl add-user did not create it: {r}"
        # kick / revoke of an example user (the plain greeting plugin is not loaded here, so
        # the users come from the store: a resume token comes with a fresh user).
        uid = h.sql("SELECT user_id FROM online_users LIMIT 1")[0][0]
        p = await asyncio.to_thread(ctl, "kick", uid, "--no-reconnect", etc=etc)
        assert p.returncode == 0 and "4001" in p.stdout, (p.stdout, p.stderr)
        await async_wait_until(
            lambda: asyncio.to_thread(lambda: uid not in h.online_users()),
            what=f"the kicked user {uid} to go offline")
        p = await asyncio.to_thread(ctl, "revoke", "mate-1", etc=etc)
        assert p.returncode == 1 and "no resume token" in p.stderr, (p.stdout, p.stderr)
        p = await asyncio.to_thread(ctl, "disconnect", "AAAAAAAAAAAAAAAAAAAAAA", etc=etc)
        assert p.returncode == 1 and "no such user" in p.stderr, (p.stdout, p.stderr)
        # A wrong token in the settings is a clear error, not a silent default.
        with open(token_file, "w") as f:
            f.write("wrong\n")
        p = await asyncio.to_thread(ctl, "rooms", etc=etc)
        assert p.returncode == 1 and "401" in p.stderr, (p.stdout, p.stderr)
        await a.close()
        await b.close()


if __name__ == "__main__":
    run(globals())
