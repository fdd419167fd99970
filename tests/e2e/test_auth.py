"""test_auth.py: auth at the door and Laf's special functions (CONTRACT 11): JWTs on
HTTP requests and upgrades, __interceptor__ (allowing, denying, failing closed), __init__ at
start and after its reload, cloud_env from --env-file (re-read on SIGHUP, refused when others
may read it). Tokens are made here: HS256 with hmac, RS256 with the openssl command."""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import tempfile
import time

import websockets

from harness import (Fail, Host, default_plugins, door_close, example, recv_json, run, tplugin,
                     wait_until)

SECRET = "an-hs256-secret-of-more-than-32-bytes!!"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims, secret=SECRET, alg="HS256", key_file=None, header=None):
    head = b64(json.dumps(header or {"alg": alg, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signing = f"{head}.{body}".encode()
    if alg == "HS256":
        sig = hmac.new(secret.encode() if isinstance(secret, str) else secret, signing,
                       hashlib.sha256).digest()
    elif alg == "RS256":
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key_file], input=signing,
                             capture_output=True, check=True).stdout
    else:
        sig = b""
    return f"{head}.{body}.{b64(sig)}"


def bearer(token):
    return {"Authorization": "Bearer " + token}


def plugins_with(**extra):
    p = default_plugins()
    p["whoami"] = tplugin("whoami")
    for name, path in extra.items():
        p[name] = path
    return p


def ran(h, method="GET"):
    return h.log().count(f"whoami ran: {method}")


def test_http_jwt_fills_user_and_bad_tokens_get_401():
    now = int(time.time())
    with Host(plugins=plugins_with(), flags=["--jwt-secret", SECRET]) as h:
        good = jwt({"sub": "alice", "role": "admin", "exp": now + 60})
        r = h.http("GET", "/whoami", headers=bearer(good))
        assert r.status == 200, r
        assert r.json["user"] == {"sub": "alice", "role": "admin", "exp": now + 60}, r.json
        # No token: the function runs with ctx->user NULL (it decides about anonymous callers).
        r = h.http("GET", "/whoami")
        assert r.status == 200 and r.json["user"] is None, r
        calls = ran(h)
        bad = {
            "wrong signature": jwt({"sub": "alice"}, secret="another-secret-of-32-bytes-or-more!!"),
            "alg none": jwt({"sub": "alice"}, alg="none"),
            "expired": jwt({"sub": "alice", "exp": now - 3600}),
            "nbf in the future": jwt({"sub": "alice", "nbf": now + 3600}),
            "garbage": "not.a.jwt",
        }
        for what, token in bad.items():
            r = h.http("GET", "/whoami", headers=bearer(token))
            assert r.status == 401, (what, r)
            assert r.json["error"] == "Unauthorized" and r.json["requestId"], (what, r.json)
        assert ran(h) == calls, "the function ran for a refused token"
        # Tokens never reach the log, refused or not.
        log = h.log()
        for token in list(bad.values()) + [good]:
            assert token.split(".")[2] not in log or not token.split(".")[2], "a token was logged"
        assert "JWT refused: expired" in log


def test_jwt_without_exp_refused_unless_turned_off():
    """A token without exp is good forever: refused (401) by default; --jwt-require-exp off
    accepts it, and still refuses an expired one."""
    forever = jwt({"sub": "dave"})
    with Host(plugins=plugins_with(), flags=["--jwt-secret", SECRET]) as h:
        r = h.http("GET", "/whoami", headers=bearer(forever))
        assert r.status == 401, r
        assert "JWT refused: no exp claim" in h.log(), h.log_tail()
        assert ran(h) == 0
    with Host(plugins=plugins_with(),
              flags=["--jwt-secret", SECRET, "--jwt-require-exp", "off"]) as h:
        r = h.http("GET", "/whoami", headers=bearer(forever))
        assert r.status == 200 and r.json["user"] == {"sub": "dave"}, r
        r = h.http("GET", "/whoami", headers=bearer(jwt({"sub": "dave", "exp": 1})))
        assert r.status == 401, r


async def upgrade_status(h, query, headers=None):
    """The HTTP status an upgrade with this query gets: 101 if accepted."""
    try:
        ws = await h.ws(query, **({"extra_headers": headers} if headers else {}))
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code
    await ws.close()
    return 101


async def test_ambiguous_credentials_on_upgrade_get_401():
    """A repeated or ambiguous credential is refused, never read as no credential: a repeated
    access_token upgraded as an anonymous user, and so did an empty one. Refused as a bad
    token is on an upgrade: the 101, then close 4401 (a browser can read it)."""
    now = int(time.time())
    good = jwt({"sub": "erin", "exp": now + 60})
    with Host(plugins=plugins_with(__websocket__=tplugin("whoami")),
              flags=["--jwt-secret", SECRET]) as h:
        users_before = h.sql("SELECT count(*) FROM users")[0][0]
        cases = {
            "a bad token twice": "access_token=BAD&access_token=BAD",
            "a good token twice": f"access_token={good}&access_token={good}",
            "a good and a bad one": f"access_token={good}&access_token=BAD",
            "an empty token": "access_token=",
            "user_id twice": "user_id=a&user_id=b&token=x",
            "token twice": "user_id=a&token=x&token=y",
        }
        for what, query in cases.items():
            code, _, _ = await asyncio.to_thread(door_close, h.port, query)
            assert code == 4401, (what, code)
        code, _, _ = await asyncio.to_thread(
            door_close, h.port, "access_token=" + good,
            "Authorization: Bearer " + jwt({"sub": "frank", "exp": now + 60}) + "\r\n")
        assert code == 4401, code
        assert h.log().count("given more than once") >= 5, h.log_tail()
        assert "empty access_token" in h.log() and "disagree" in h.log(), h.log_tail()
        assert h.sql("SELECT count(*) FROM users")[0][0] == users_before
        # The unambiguous forms still work: one token, or the same one in both places.
        assert await upgrade_status(h, "access_token=" + good) == 101
        assert await upgrade_status(h, "access_token=" + good, {"Authorization": "Bearer " + good}) == 101
        assert await upgrade_status(h, "") == 101
        # HTTP: two Authorization headers, one good, are one bad credential (lws joins them).
        for pair in ((good, "BAD"), ("BAD", good), (good, good)):
            head = "".join(f"Authorization: Bearer {t}\r\n" for t in pair)
            status = await asyncio.to_thread(raw_status, h.port, "GET /whoami HTTP/1.1\r\n"
                                             f"Host: x\r\n{head}Connection: close\r\n\r\n")
            assert status == 401, (pair, status)
    # Repeated resume credentials are refused without a JWT key too (the host reads them).
    with Host(plugins=plugins_with(__websocket__=tplugin("whoami"))) as h:
        code, _, _ = await asyncio.to_thread(door_close, h.port, "user_id=a&user_id=b&token=x")
        assert code == 4401, code


def raw_status(port, request):
    """The status of the answer to a request written byte for byte."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request.encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_rs256_key_and_algorithm_confusion():
    d = tempfile.mkdtemp(prefix="wshost-jwt-")
    priv, pub = os.path.join(d, "priv.pem"), os.path.join(d, "pub.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", priv], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", priv, "-pubout", "-out", pub], check=True,
                   capture_output=True)
    with Host(plugins=plugins_with(), flags=["--jwt-public-key", pub]) as h:
        r = h.http("GET", "/whoami", headers=bearer(jwt({"sub": "bob", "exp": int(time.time()) + 60},
                                                      alg="RS256", key_file=priv)))
        assert r.status == 200 and r.json["user"]["sub"] == "bob", r
        # HS256 signed with the public key's PEM as the secret: the classic confusion.
        with open(pub, "rb") as f:
            confused = jwt({"sub": "admin"}, secret=f.read(), alg="HS256")
        r = h.http("GET", "/whoami", headers=bearer(confused))
        assert r.status == 401, r
        assert "algorithm not accepted" in h.log()


async def test_upgrade_access_token_makes_sub_the_user():
    with Host(plugins=plugins_with(__websocket__=tplugin("whoami")),
              flags=["--jwt-secret", SECRET]) as h:
        token = jwt({"sub": "carol@example", "exp": int(time.time()) + 60})
        ws = await h.ws("access_token=" + token)
        hello = await recv_json(ws)
        assert hello["user_id"] == "carol@example", hello
        assert hello["user"]["sub"] == "carol@example", hello
        assert wait_until(lambda: h.online_users() == ["carol@example"], 5)
        await ws.close()
        users_before = h.sql("SELECT count(*) FROM users")[0][0]
        conns_before = h.sql("SELECT count(*) FROM connections")[0][0]
        ran_before = h.log().count("whoami ran: WebSocket:")
        # Bad tokens, as a browser can read them (it sees an HTTP 401 before the 101 only as
        # 1006): the upgrade completes, its first frame is close 4401 saying why; no event
        # runs, no connection or user row is made.
        for token, why in ((jwt({"sub": "carol@example"}, secret="x" * 40), "bad signature"),
                           (jwt({"sub": "a b", "exp": int(time.time()) + 60}),
                            "JWT sub is not a user id"),
                           (jwt({"sub": "x", "exp": 1}), "expired"),
                           ("not.a.jwt", "malformed token")):
            code, reason, _ = await asyncio.to_thread(door_close, h.port, "access_token=" + token)
            assert (code, reason) == (4401, why), (code, reason, why)
        # The same from an Authorization header (a non-browser client).
        code, _, _ = await asyncio.to_thread(
            door_close, h.port, "", f"Authorization: Bearer {jwt({'sub': 'x', 'exp': 1})}\r\n")
        assert code == 4401, code
        assert h.sql("SELECT count(*) FROM users")[0][0] == users_before
        assert h.sql("SELECT count(*) FROM connections")[0][0] == conns_before
        assert h.log().count("whoami ran: WebSocket:") == ran_before, "an event ran"
        assert wait_until(lambda: h.online_users() == [], 5)
        # A good token still gets in after them.
        ws = await h.ws("access_token=" + jwt({"sub": "carol@example",
                                               "exp": int(time.time()) + 60}))
        assert (await recv_json(ws))["user_id"] == "carol@example"
        await ws.close()


def env_file(text, mode=0o600):
    fd, path = tempfile.mkstemp(prefix="wshost-env-")
    os.write(fd, text.encode())
    os.close(fd)
    os.chmod(path, mode)
    return path


async def test_interceptor_allows_denies_and_answers_upgrades():
    env = env_file("API_KEY=s3cret\n")
    plugins = plugins_with(__interceptor__=tplugin("gate"), admin_only=tplugin("whoami"))
    with Host(plugins=plugins, flags=["--env-file", env]) as h:
        assert h.http("GET", "/whoami").status == 200
        calls = ran(h)
        # /admin_only: the interceptor's own 403 answer unless x-api-key matches.
        r = h.http("GET", "/admin_only")
        assert r.status == 403 and r.json == {"error": "bad api key"}, r
        r = h.http("GET", "/admin_only", headers={"x-api-key": "wrong"})
        assert r.status == 403, r
        assert ran(h) == calls, "the target ran after the interceptor answered"
        r = h.http("GET", "/admin_only", headers={"x-api-key": "s3cret"})
        assert r.status == 200 and r.json["function"] == "admin_only", r
        # A non-zero return without a response: 403, target not called.
        calls = ran(h)
        r = h.http("GET", "/whoami", headers={"x-gate": "fail"})
        assert r.status == 403 and r.json["error"] == "Forbidden" and r.json["requestId"], r
        assert ran(h) == calls
        # Upgrades go through it too: its answer is the upgrade's.
        users = h.sql("SELECT count(*) FROM users")[0][0]
        for _ in range(20):
            try:
                await h.ws("deny=1")
                raise Fail("an upgrade the interceptor answered was accepted")
            except websockets.exceptions.InvalidStatusCode as e:
                assert e.status_code == 429, e
        assert h.sql("SELECT count(*) FROM users")[0][0] == users, "refused upgrades made users"
        # A 403 of the interceptor's (its answer, or a non-zero return) reaches a browser as
        # close 4403; a 429 above kept its HTTP answer (Retry-After and body mean something).
        conns = h.sql("SELECT count(*) FROM connections")[0][0]
        ran_ws = h.log().count("whoami ran: WebSocket:")
        code, reason, _ = await asyncio.to_thread(door_close, h.port, "deny=403")
        assert (code, reason) == (4403, "Forbidden"), (code, reason)
        code, _, _ = await asyncio.to_thread(door_close, h.port, "", "x-gate: fail\r\n")
        assert code == 4403, code
        assert h.sql("SELECT count(*) FROM users")[0][0] == users, "refused upgrades made users"
        assert h.sql("SELECT count(*) FROM connections")[0][0] == conns
        assert h.log().count("whoami ran: WebSocket:") == ran_ws, "an event ran"
        ws, hello = await h.user()
        assert hello["event"] == "connected"
        await ws.close()
        assert "gate: GET __websocket__" in h.log()


def test_interceptor_fails_closed():
    plugins = plugins_with(__interceptor__=tplugin("gate"))
    # One crash quarantines: in-process (--isolation process tolerates K crashes: its
    # quarantine is tested in test_isolation.py).
    with Host(plugins=plugins, flags=["--isolation", "none"]) as h:
        assert h.http("GET", "/whoami").status == 200
        # A crash in the interceptor: the request is not served; the service comes back with
        # the crashing build quarantined, and the door stays shut (503), never open.
        try:
            r = h.http("GET", "/whoami", headers={"x-gate": "crash"}, timeout=5)
            assert r.status >= 500, r
        except OSError:
            pass
        wait_until(lambda: _status(h, "/whoami") == 503, 10, what="503 while quarantined")
        r = h.http("GET", "/whoami")
        assert r.json["error"] == "Interceptor Unavailable" and r.json["requestId"], r
        calls = ran(h)
        for _ in range(3):
            assert h.http("GET", "/whoami").status == 503
        assert ran(h) == calls, "a function ran while the interceptor was unavailable"
        # A file that does not load at all (not an ELF) fails closed the same way.
        junk = os.path.join(h.plugins_dir, "__interceptor__.so")
        with open(junk + ".tmp", "w") as f:
            f.write("not a shared object")
        os.chmod(junk + ".tmp", 0o644)
        os.rename(junk + ".tmp", junk)
        h.wait_log(r"__interceptor__\.so.*refused|refused.*__interceptor__")
        assert h.http("GET", "/whoami").status == 503
        # Removing the file opens the door again: no interceptor, no gate.
        os.remove(junk)
        wait_until(lambda: _status(h, "/whoami") == 200, 10, what="200 without an interceptor")


def _status(h, path):
    try:
        return h.http("GET", path, timeout=2).status
    except OSError:
        return None


async def test_jwt_sent_to_a_host_without_a_key_is_warned_about_once_a_minute():
    """A host started without --jwt-secret/--jwt-public-key (a key that never reached it)
    ignores tokens: the callers are anonymous. That is said in the log, once a minute at most
    (not once a request), for HTTP and upgrades alike; a request without a token says nothing."""
    warn = "carries a JWT but this host has no --jwt-secret or --jwt-public-key"
    with Host(plugins=plugins_with(__websocket__=tplugin("whoami"))) as h:
        for _ in range(3):
            r = h.http("GET", "/whoami")
            assert r.status == 200 and r.json.get("user") is None, r
        assert warn not in h.log()
        r = h.http("GET", "/whoami", headers=bearer(jwt({"sub": "dave"})))
        assert r.status == 200 and r.json.get("user") is None, r  # ignored, anonymous
        h.wait_log(warn)
        for _ in range(5):
            assert h.http("GET", "/whoami", headers=bearer(jwt({"sub": "dave"}))).status == 200
            ws = await h.ws("access_token=" + jwt({"sub": "dave"}))
            hello = await recv_json(ws)
            assert hello["user_id"] != "dave" and hello.get("user") is None, hello
            await ws.close()
        assert h.log().count(warn) == 1, h.log_tail()


def test_init_runs_at_start_and_after_its_reload():
    env = env_file("GREETING=hello from env\n")
    plugins = plugins_with(__init__=tplugin("init_fn"), shared=tplugin("shared"))
    with Host(plugins=plugins, flags=["--env-file", env]) as h:
        assert h.http("GET", "/shared?key=init_runs").json == 1
        assert h.http("GET", "/shared?key=greeting").json == "hello from env"
        # Its own reload runs it again; another function's reload does not.
        h.add_plugin("echo", example("echo"))
        h.wait_log(r"echo .*loaded: version 2")
        assert h.http("GET", "/shared?key=init_runs").json == 1
        h.add_plugin("__init__", tplugin("init_fn"))
        wait_until(lambda: h.http("GET", "/shared?key=init_runs").json == 2, 5,
                   what="__init__ after its reload")


def test_init_failure_is_logged_and_the_host_serves():
    env = env_file("INIT_FAIL=1\n")
    plugins = plugins_with(__init__=tplugin("init_fn"))
    with Host(plugins=plugins, flags=["--env-file", env]) as h:
        h.wait_log(r"error .*__init__ .*at start failed: returned 3; serving anyway")
        assert h.http("GET", "/whoami").status == 200


def test_env_file_sighup_and_permissions():
    env = env_file("COLOR=red\n")
    with Host(plugins=plugins_with(), flags=["--env-file", env]) as h:
        assert h.http("GET", "/whoami?env=COLOR").json["env"] == "red"
        # The process environment is behind the file.
        assert h.http("GET", "/whoami?env=PATH").json["env"]
        with open(env, "w") as f:
            f.write("COLOR=blue\n")
        h.signal(signal.SIGHUP)
        wait_until(lambda: h.http("GET", "/whoami?env=COLOR").json["env"] == "blue", 5,
                   what="the value after SIGHUP")
        # A bad edit keeps the old values (and says so); the host lives on.
        with open(env, "w") as f:
            f.write("this is not KEY=VALUE\n")
        h.signal(signal.SIGHUP)
        h.wait_log(r"keeping the 1 values loaded before")
        assert h.http("GET", "/whoami?env=COLOR").json["env"] == "blue"
    # Readable by others: refused loudly at start.
    loose = env_file("SECRET=1\n", 0o644)
    h = Host(plugins=plugins_with(), flags=["--env-file", loose])
    h.start(wait=False)
    assert h.wait_exit() == 2
    assert "chmod o-rwx" in h.log(), h.log_tail()


def test_group_writable_env_file_refused():
    """Its group may read the env file (0640 root:wshost, as a package installs it), not
    write it: refused at start with a message saying what to do, and on SIGHUP the values
    loaded before stay."""
    loose = env_file("SECRET=1\n", 0o660)
    h = Host(plugins=plugins_with(), flags=["--env-file", loose])
    h.start(wait=False)
    assert h.wait_exit() == 2
    assert "writable by its group" in h.log() and "g-w" in h.log(), h.log_tail()
    env = env_file("COLOR=red\n", 0o640)
    with Host(plugins=plugins_with(), flags=["--env-file", env]) as h:
        assert h.http("GET", "/whoami?env=COLOR").json["env"] == "red"
        with open(env, "w") as f:
            f.write("COLOR=green\n")
        os.chmod(env, 0o620)
        h.signal(signal.SIGHUP)
        h.wait_log(r"writable by its group .*keeping the 1 values loaded before")
        assert h.http("GET", "/whoami?env=COLOR").json["env"] == "red"


if __name__ == "__main__":
    run(globals())
