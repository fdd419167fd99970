"""The rest of Laf's cloud object through tests/plugins/laf.c: cloud_jwt_sign / cloud_jwt_verify
with the host's key, cloud_invoke (a ctx with the given method and body, the response body
back, bounded nesting, "__" names refused, a callee's crash contained), cloud_sockets_each and
cloud_db (--app-db: WAL, a handle per thread, a slow query run off the loop).
In every mode (WSHOST_E2E_ISOLATION=1 runs them through the worker's proxy)."""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import tempfile
import time
import urllib.parse

from harness import *  # noqa: F401,F403

SECRET = "an-hs256-secret-of-more-than-32-bytes!!"
ENOFUNC, EFAILED, ESTATE = -10, -11, -6


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def hs256(claims, secret=SECRET, alg="HS256"):
    head = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def laf_host(flags=(), **kw):
    plugins = default_plugins()
    plugins["laf"] = tplugin("laf")
    plugins["other"] = tplugin("laf")
    plugins["whoami"] = tplugin("whoami")
    return Host(plugins=plugins, flags=list(flags), **kw)


def q(**params):
    return "/laf?" + urllib.parse.urlencode(params)


def test_jwt_sign_verify_with_the_secret():
    with laf_host(["--jwt-secret", SECRET]) as h:
        before = int(time.time())
        r = h.http("POST", q(do="sign", ttl="60"), json_body={"sub": "alice", "role": "admin"})
        assert r.status == 200, r
        token = r.json["token"]
        head, body, sig = token.split(".")
        # Signed HS256 with the host's secret: the signature checks out here.
        want = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
        assert unb64(sig) == want, "not signed with --jwt-secret"
        assert json.loads(unb64(head))["alg"] == "HS256"
        claims = json.loads(unb64(body))
        assert claims["sub"] == "alice" and claims["role"] == "admin", claims
        assert before - 1 <= claims["iat"] <= time.time() + 1
        assert claims["exp"] == claims["iat"] + 60, claims
        # The door accepts it (ctx->user), and cloud_jwt_verify gives the claims back.
        w = h.http("GET", "/whoami", headers={"Authorization": "Bearer " + token})
        assert w.status == 200 and w.json["user"]["sub"] == "alice", w
        v = h.http("GET", q(do="verify", token=token))
        assert v.json["claims"] == claims, v
        # No ttl: no exp.
        r = h.http("POST", q(do="sign"), json_body={"sub": "bob"})
        assert "exp" not in json.loads(unb64(r.json["token"].split(".")[1]))
        # Forged, expired, unsigned and other-secret tokens are refused.
        forged = f"{head}.{b64(json.dumps(dict(claims, role='root')).encode())}.{sig}"
        expired = hs256({"sub": "alice", "exp": int(time.time()) - 3600})
        other = hs256({"sub": "alice"}, secret="x" * 40)
        none = b64(b'{"alg":"none"}') + f".{body}."
        for bad in (forged, expired, other, none, "garbage", ""):
            v = h.http("GET", q(do="verify", token=bad))
            assert v.status == 200 and v.json["claims"] is None, (bad, v)
        # Claims that are not an object, a negative ttl: no token.
        r = h.http("POST", q(do="sign"), json_body=[1, 2])
        assert r.json["token"] is None, r
        r = h.http("POST", q(do="sign", ttl="-5"), json_body={"sub": "x"})
        assert r.json["token"] is None, r


def test_jwt_sign_needs_a_secret():
    with tempfile.TemporaryDirectory() as d:
        key, pub = os.path.join(d, "k.pem"), os.path.join(d, "pub.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", key], check=True, capture_output=True)
        subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub], check=True,
                       capture_output=True)
        with laf_host(["--jwt-public-key", pub]) as h:
            r = h.http("POST", q(do="sign"), json_body={"sub": "alice"})
            assert r.status == 200 and r.json["token"] is None, r
            # Verify works with the public key.
            head = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
            exp = int(time.time()) + 600  # the door (and verify) want exp by default
            body = b64(json.dumps({"sub": "carol", "exp": exp}).encode())
            sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key],
                                 input=f"{head}.{body}".encode(), capture_output=True,
                                 check=True).stdout
            v = h.http("GET", q(do="verify", token=f"{head}.{body}.{b64(sig)}"))
            assert v.json["claims"] == {"sub": "carol", "exp": exp}, v
    with laf_host() as h:
        r = h.http("POST", q(do="sign"), json_body={"sub": "alice"})
        assert r.json["token"] is None, r
        v = h.http("GET", q(do="verify", token=hs256({"sub": "a"})))
        assert v.json["claims"] is None, v


def test_invoke_passes_method_and_body_and_returns_the_response_body():
    with laf_host(["--jwt-secret", SECRET]) as h:
        exp = int(time.time()) + 600
        token = hs256({"sub": "dave", "exp": exp})
        r = h.http("POST", q(do="invoke", fn="other", method="ECHO"), json_body={"n": 7},
                   headers={"Authorization": "Bearer " + token, "X-Request-Id": "req-invoke-1"})
        assert r.status == 200, r
        assert r.json["rc"] == 0 and r.json["after"] == "caller went on", r.json
        got = r.json["result"]
        assert got["method"] == "ECHO" and got["body"] == {"n": 7}, got
        assert json.loads(got["raw"]) == {"n": 7}, got
        assert got["url"] == "/other" and got["function"] == "other", got
        assert got["user"] == {"sub": "dave", "exp": exp}, "the caller's user is the callee's"
        assert got["request_id"] == "req-invoke-1", got
        assert got["header"] is False, "the callee has no request headers"
        # No method: POST (the callee answers 400 {"error": ...} for it: still its body).
        r = h.http("GET", q(do="invoke", fn="other"))
        assert r.json == {"rc": 0, "result": {"error": "unknown method"},
                          "after": "caller went on"}, r.json
        # A text body comes back as a string; nothing (204) as null.
        r = h.http("GET", q(do="invoke", fn="other", method="TEXT"))
        assert r.json["rc"] == 0 and r.json["result"] == "plain words", r.json
        r = h.http("GET", q(do="invoke", fn="other", method="NONE"))
        assert r.json["rc"] == 0 and r.json["result"] is None, r.json
        # Failed, unknown, special.
        r = h.http("GET", q(do="invoke", fn="other", method="FAIL"))
        assert r.json["rc"] == EFAILED and r.json["result"] is None, r.json
        for fn in ("nosuch", "__websocket__", "__init__", "../laf", ""):
            r = h.http("GET", q(do="invoke", fn=fn, method="ECHO"))
            assert r.json["rc"] == ENOFUNC, (fn, r.json)


def test_invoke_nesting_is_bounded():
    with laf_host() as h:
        r = h.http("GET", q(do="invoke", fn="laf", method="RECURSE"), timeout=20)
        assert r.status == 200, r
        assert r.json["rc"] == 0, r.json
        assert r.json["result"] == {"bottom": ESTATE, "levels": 8}, r.json
        # The host still answers.
        assert h.http("GET", q(do="invoke", fn="other", method="TEXT")).json["result"] == \
            "plain words"


def test_invoke_callee_crash_in_isolation_fails_the_caller_only():
    with laf_host(["--isolation", "process", "--workers", "2"]) as h:
        pid = h.serving_pid()
        r = h.http("GET", q(do="invoke", fn="other", method="CRASH"))
        assert r.status == 502, r
        h.wait_log(r"died of signal 11", timeout=5)
        assert h.serving_pid() == pid, "the serving process went down"
        r = h.http("GET", q(do="invoke", fn="other", method="TEXT"))
        assert r.status == 200 and r.json["result"] == "plain words", r


async def test_sockets_each_walks_this_nodes_sockets_with_their_users():
    with laf_host() as h:
        socks = []
        for _ in range(3):
            ws, hello = await h.user()
            socks.append((ws, hello))
        users = sorted(g["user_id"] for _, g in socks)
        r = await h.ahttp("GET", q(do="sockets"))
        assert r.status == 200, r
        assert r.json["calls"] == 3, r.json
        assert sorted(s["user"] for s in r.json["sockets"]) == users, (r.json, users)
        assert len({s["socket"] for s in r.json["sockets"]}) == 3
        # fn returning non-zero stops the walk.
        r = await h.ahttp("GET", q(do="sockets", stop="2"))
        assert r.json["calls"] == 2 and len(r.json["sockets"]) == 2, r.json
        # A closed socket is not walked.
        await socks[0][0].close()
        await async_wait_until(
            lambda: h.http("GET", q(do="sockets")).json["calls"] == 2, what="close seen")
        for ws, _ in socks[1:]:
            await ws.close()


def db_host(flags=(), **kw):
    plugins = default_plugins()
    plugins["appdb"] = tplugin("appdb")
    return Host(plugins=plugins, flags=list(flags), **kw)


async def test_app_db_wal_per_thread_and_slow_queries_off_the_loop():
    h = db_host()
    app = os.path.join(h.tmp, "app.db")
    h.flags += ["--app-db", app]
    with h:
        r = await h.ahttp("GET", "/appdb?do=put&k=greeting&v=hello")
        assert r.status == 200 and r.json == {"ok": True}, r
        r = await h.ahttp("GET", "/appdb?do=get&k=greeting")
        assert r.json == {"v": "hello", "journal": "wal"}, r.json
        assert os.stat(app).st_mode & 0o777 == 0o600, oct(os.stat(app).st_mode)
        # The slow query runs on the function's thread, with its own handle: while it sleeps,
        # another request is answered.
        slow = asyncio.ensure_future(h.ahttp("GET", "/appdb?do=slow&k=greeting&ms=1500"))
        await asyncio.sleep(0.2)
        r = await h.ahttp("GET", "/appdb?do=get&k=greeting")
        assert r.status == 200 and not slow.done(), "a slow query held the loop"
        r = await slow
        assert r.status == 200 and r.json == {"v": "hello", "own_handle": True,
                                               "same_again": True}, r.json
        # Kept across a restart.
        h.stop()
        h.start()
        r = await h.ahttp("GET", "/appdb?do=get&k=greeting")
        assert r.json["v"] == "hello", r.json
    # Without --app-db: none.
    with db_host() as h2:
        r = await h2.ahttp("GET", "/appdb?do=has")
        assert r.json == {"db": False}, r.json


if __name__ == "__main__":
    run(globals())
