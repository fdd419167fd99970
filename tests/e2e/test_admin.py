"""Admin endpoints (CONTRACT 6, DECISIONS "Admin"): /_/healthz public; /_/status, /_/users,
/_/users/<id>, /_/push behind Authorization: Bearer <admin token>, 401 otherwise."""

import asyncio
import json
import os
import stat

from harness import *  # noqa: F401,F403

PROTECTED = [("GET", "/_/status"), ("GET", "/_/users"), ("GET", "/_/users?online=1"),
             ("GET", "/_/users/AAAAAAAAAAAAAAAAAAAAAA"), ("POST", "/_/push")]


def assert_401(r, what):
    assert r.status == 401 and r.json == {"error": "Unauthorized"}, f"{what}: {r}"
    assert r.headers.get("request-id"), f"{what}: no request-id header"


def test_healthz_is_public():
    with Host() as h:
        r = h.http("GET", "/_/healthz")
        assert r.status == 200 and r.json == {"ok": True}, r


def test_admin_requires_token():
    with Host() as h:
        for method, path in PROTECTED:
            body = {"user_id": "x", "message": "y"} if method == "POST" else None
            assert_401(h.http(method, path, json_body=body), f"{method} {path} without token")
            assert_401(h.http(method, path, json_body=body, auth="wrong-token"),
                       f"{method} {path} wrong token")
            assert_401(h.http(method, path, json_body=body, auth=ADMIN_TOKEN[:-1]),
                       f"{method} {path} token prefix")
            assert_401(h.http(method, path, json_body=body,
                              headers={"Authorization": "Basic " + ADMIN_TOKEN}),
                       f"{method} {path} Basic scheme")
            assert_401(h.http(method, path, json_body=body, headers={"Authorization": "Bearer"}),
                       f"{method} {path} empty bearer")
            r = h.http(method, path, json_body=body, auth=True)
            assert r.status != 401, f"{method} {path} with the right token: {r}"


async def test_status():
    with Host() as h:
        ws, g = await h.user()
        r = await h.ahttp("GET", "/_/status", auth=True)
        assert r.status == 200 and isinstance(r.json, dict), r
        text = json.dumps(r.json)
        for name in ("__websocket__", "push", "echo"):
            assert name in text, f"/_/status does not mention plugin {name}: {text[:1000]}"
        await ws.close()


async def test_users_list_and_detail():
    with Host() as h:
        on, g_on = await h.user()
        off, g_off = await h.user()
        await off.close()
        uid_on, uid_off = g_on["user_id"], g_off["user_id"]
        await async_wait_until(
            lambda: asyncio.to_thread(lambda: h.online_users() == [uid_on]),
            what="exactly one user online")
        r = await h.ahttp("GET", "/_/users", auth=True)
        assert r.status == 200, r
        text = r.text
        assert uid_on in text and uid_off in text, f"/_/users misses a user: {text[:1000]}"
        r = await h.ahttp("GET", "/_/users?online=1", auth=True)
        assert r.status == 200, r
        assert uid_on in r.text and uid_off not in r.text, \
            f"/_/users?online=1 should list only {uid_on}: {r.text[:1000]}"
        r = await h.ahttp("GET", "/_/users/" + uid_on, auth=True)
        assert r.status == 200 and uid_on in r.text, r
        assert g_on["token"] not in r.text, "the admin API shows a resume token"
        r = await h.ahttp("GET", "/_/users/AAAAAAAAAAAAAAAAAAAAAA", auth=True)
        assert r.status == 404, r
        await on.close()


async def test_admin_push():
    with Host() as h:
        ws, g = await h.user()
        uid = g["user_id"]
        r = await h.ahttp("POST", "/_/push", json_body={"user_id": uid, "message": "sneaky"})
        assert_401(r, "push without token")
        r = await h.apush(uid, "from admin", admin=True)
        assert r.status == 200 and r.json == {"delivered": 1}, r
        assert await recv(ws) == "from admin", "the unauthorized push was delivered"
        r = await h.apush("AAAAAAAAAAAAAAAAAAAAAA", "x", admin=True)
        assert r.status == 404 and r.json == {"error": "no such user"}, r
        r = await h.ahttp("POST", "/_/push", json_body={"user_id": uid}, auth=True)
        assert r.status == 400, r
        r = await h.ahttp("POST", "/_/push", body="{bad", auth=True,
                          headers={"Content-Type": "application/json"})
        assert r.status == 400, r
        await ws.close()


async def test_admin_push_queues_for_offline_user():
    with Host() as h:
        ws, g = await h.user()
        uid, token = g["user_id"], g["token"]
        await go_offline(h, ws, uid)
        r = await h.apush(uid, "queued by admin", admin=True)
        assert r.status == 200 and r.json == {"delivered": 0}, r
        ws = await h.ws(f"user_id={uid}&token={token}")
        greeting, msgs = await collect(ws, 1)
        assert msgs == ["queued by admin"], msgs
        await ws.close()


def test_generated_admin_token():
    h = Host(admin_token=None)
    with h:
        path = os.path.join(os.path.dirname(h.db), "admin-token")
        assert os.path.isfile(path), "no generated admin-token file next to the db"
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == 0o600, f"admin-token mode {oct(mode)}"
        with open(path) as f:
            token = f.read().strip()
        assert len(token) >= 22, f"generated admin token too short: {len(token)}"
        assert_401(h.http("GET", "/_/status"), "no token")
        r = h.http("GET", "/_/status", auth=token)
        assert r.status == 200, f"the generated token does not work: {r}"


if __name__ == "__main__":
    run(globals())
