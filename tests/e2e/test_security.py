"""TLS and admin exposure (DECISIONS flags): --tls-cert/--tls-key serve https://
and wss:// on one port; --admin-loopback-only keeps /_/status, /_/users, /_/push to local
peers (127.0.0.0/8, ::1) while /_/healthz stays public. The bearer token itself is covered
by test_admin.py and its constant-time compare by tests/unit/test_admin.c."""

import asyncio
import http.client
import json
import os
import socket
import ssl
import subprocess
import tempfile

from harness import *  # noqa: F401,F403


def make_cert(dirname):
    cert, key = os.path.join(dirname, "cert.pem"), os.path.join(dirname, "key.pem")
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                        "/CN=localhost", "-days", "1", "-keyout", key, "-out", cert],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"openssl req failed: {p.stderr}"
    return cert, key


def client_context(cafile):
    """Verifies the chain against our self-signed cert; the cert names CN=localhost only (no
    subjectAltName), which Python will not match to a host name, so that check is off."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class TLSHost(Host):
    """A Host with --tls-cert/--tls-key whose own probes speak https."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.cert, self.key = make_cert(self.tmp)
        self.flags += ["--tls-cert", self.cert, "--tls-key", self.key]
        self.ctx = client_context(self.cert)

    def http(self, method, path, body=None, headers=None, json_body=None, timeout=10,
             auth=False):
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body)
            headers.setdefault("Content-Type", "application/json")
        if auth:
            headers["Authorization"] = "Bearer " + (self.admin_token if auth is True else auth)
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                           context=self.ctx)
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def ws_url(self, query="", path="/"):
        return f"wss://127.0.0.1:{self.port}{path}" + (("?" + query) if query else "")

    async def ws(self, query="", path="/", **kw):
        return await ws_connect(self.ws_url(query, path), ssl=self.ctx, **kw)


async def test_tls_https_and_wss_on_one_port():
    with TLSHost() as h:  # start() waits for https /_/healthz 200
        assert "(TLS)" in h.log(), "the listening line does not say TLS"
        r = await h.ahttp("GET", "/_/healthz")
        assert r.status == 200 and r.json == {"ok": True}, r
        r = await h.ahttp("GET", "/echo?x=1")
        assert r.status == 200 and r.json["query"] == {"x": "1"}, r
        r = await h.ahttp("GET", "/_/status", auth=True)
        assert r.status == 200, r
        assert (await h.ahttp("GET", "/_/status")).status == 401
        ws, g = await h.user()
        assert g["event"] == "connected" and g["token"], g
        await ws.send("over tls")
        assert await recv(ws) == "I have received your message"
        await ws.close()
        # resume over wss works like over ws
        ws = await h.ws(f"user_id={g['user_id']}&token={g['token']}")
        assert (await recv_json(ws))["user_id"] == g["user_id"]
        await ws.close()


def test_tls_port_speaks_no_plaintext():
    with TLSHost() as h:
        try:
            r = http_request(h.port, "GET", "/_/healthz", timeout=5)
            raise Fail(f"plain HTTP on the TLS port was answered: {r}")
        except (OSError, http.client.HTTPException):
            pass
        # a client that does not trust the cert is refused by its own check, not served
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", h.port, timeout=5,
                                               context=ssl.create_default_context())
            conn.request("GET", "/_/healthz")
            conn.getresponse()
            raise Fail("a self-signed cert was accepted by a default client context")
        except ssl.SSLError:
            pass
        assert h.http("GET", "/_/healthz").status == 200


def test_tls_bad_files_refuse_to_start():
    """A missing or wrong key never falls back to plaintext: the host does not start."""
    base = Host()
    cert, key = make_cert(base.tmp)
    other_cert, _ = make_cert(tempfile.mkdtemp(dir=base.tmp))
    # libwebsockets 4.1 leaks 72 bytes of its own when lws_create_context fails on the TLS
    # files (the host gets NULL and has nothing to free): a sanitizer build ignores leaks
    # inside libwebsockets here, and still reports any of the host's own.
    supp = os.path.join(base.tmp, "lsan.supp")
    with open(supp, "w") as f:
        f.write("leak:libwebsockets.so\n")
    env = {"LSAN_OPTIONS": f"suppressions={supp}:print_suppressions=0"}
    for flags in (["--tls-cert", cert + ".missing", "--tls-key", key],
                  ["--tls-cert", cert, "--tls-key", cert],   # a cert is not a key
                  ["--tls-cert", other_cert, "--tls-key", key]):  # key of another cert
        h = Host(flags=flags, env=env)
        h.start(wait=False)
        try:
            code = h.proc.wait(15)
        except subprocess.TimeoutExpired:
            h.proc.kill()
            h.proc.wait(5)
            raise Fail(f"host with {flags[1:]} kept running; log:\n{h.log()}")
        assert code != 0, f"host with {flags} exited 0"
    for flags in (["--tls-cert", cert], ["--tls-key", key]):
        h = Host(flags=flags)
        h.start(wait=False)
        assert h.proc.wait(15) != 0, f"{flags}: one half of the pair was accepted"


def local_non_loopback_ipv4():
    """An address of this machine that is not loopback, or None (loopback-only box)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
        addr = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if addr.startswith("127.") else addr


def http_from(addr, port, path, token=None, family=socket.AF_INET):
    """GET path on addr:port (the peer address the host sees is addr's)."""
    host = f"[{addr}]" if family == socket.AF_INET6 else addr
    conn = http.client.HTTPConnection(host.strip("[]"), port, timeout=10)
    headers = {"Authorization": "Bearer " + token} if token else {}
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def test_admin_loopback_only():
    with Host(flags=["--admin-loopback-only"]) as h:
        # 127.0.0.1 (seen by the dual-stack socket as ::ffff:127.0.0.1)
        assert h.http("GET", "/_/status", auth=True).status == 200
        r = h.http("GET", "/_/status")
        assert r.status == 401, f"loopback without token: {r}"
        # ::1
        try:
            r = http_from("::1", h.port, "/_/status", ADMIN_TOKEN, socket.AF_INET6)
            assert r.status == 200, f"::1 with token: {r}"
            assert http_from("::1", h.port, "/_/status", None, socket.AF_INET6).status == 401
        except OSError as e:
            print(f"NOTE: ::1 not reachable here ({e}); is_loopback() accepts '::1' by name")
        other = local_non_loopback_ipv4()
        if other is None:
            print("NOTE: no non-loopback address on this machine; 403 path not exercised")
            return
        r = http_from(other, h.port, "/_/status", ADMIN_TOKEN)
        assert r.status == 403 and r.json == {"error": "Forbidden"}, \
            f"--admin-loopback-only, from {other} with the token: {r}"
        for path in ("/_/users", "/_/users/AAAAAAAAAAAAAAAAAAAAAA"):
            assert http_from(other, h.port, path, ADMIN_TOKEN).status == 403
        r = http_from(other, h.port, "/_/healthz")
        assert r.status == 200, f"healthz stays public: {r}"
        r = http_from(other, h.port, "/echo")
        assert r.status == 200, f"functions are not admin: {r}"
    with Host() as h:  # without the flag the token alone decides
        other = local_non_loopback_ipv4()
        if other:
            assert http_from(other, h.port, "/_/status", ADMIN_TOKEN).status == 200
            assert http_from(other, h.port, "/_/status").status == 401


async def test_admin_user_lookup_by_long_id():
    """/_/users/<id> with a 128-byte id names that user, not the one whose id is its first
    122 bytes (the route name is cut at 128 bytes, "users/" included)."""
    with Host(plugins={"__websocket__": tplugin("ws_bind")}) as h:
        long_id, short_id = "u" * 128, "u" * 122
        for uid in (short_id, long_id):
            ws = await h.ws(f"name={uid}&secret=letmein")
            g = await recv_json(ws)
            assert g["user_id"] == uid and g["bind_rc"] == 0, g
            await ws.close()
        for uid in (long_id, short_id):
            r = await h.ahttp("GET", "/_/users/" + uid, auth=True)
            assert r.status == 200 and r.json["id"] == uid, \
                f"/_/users/<{len(uid)} bytes> answered {r.json and r.json.get('id')!r}"
        r = await h.ahttp("GET", "/_/users/" + "u" * 125, auth=True)
        assert r.status == 404, r


if __name__ == "__main__":
    run(globals())
