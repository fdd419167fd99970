"""Running it in production (DESIGN 15, docs/OPERATIONS.md): listen addresses and the admin
listener, one host per database, the version, the --config file and its errors, secrets from
files, readiness while draining, and a backup taken while the host runs."""

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time

import harness
from harness import *  # noqa: F401,F403


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSHOST_")}
    env.update(extra)
    return env


def run_bin(*args, env=None, cwd=None, timeout=20):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout,
                          env=clean_env(**(env or {})), cwd=cwd)


def unix_http(path, method, target, headers=None, timeout=5):
    """One HTTP/1.1 request over a unix socket: (status, head, body)."""
    hdr = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{hdr}\r\n"
                  .encode())
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode("latin-1"), body


def connects(family, addr, port):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect((addr, port))
            return True
        except OSError:
            return False


def start_wait(h, pattern, timeout=10):
    """Starts h without the harness's port wait (a unix-only host has no port)."""
    h.start(wait=False)
    return h.wait_log(pattern, timeout=timeout)


# -- listening


def test_bind_loopback_only_and_unix_socket():
    sock = os.path.join(tempfile.mkdtemp(prefix="wshost-e2e-sock-"), "pub.sock")
    with Host(flags=["--bind", "127.0.0.1", "--bind", f"unix:{sock}"]) as h:
        assert h.http("GET", "/_/healthz").status == 200
        # Not on IPv6 (the default binds all, dual stack): the address named alone.
        assert not connects(socket.AF_INET6, "::1", h.port), "listening on ::1 too"
        st, _, body = unix_http(sock, "GET", "/_/healthz")
        assert st == 200 and json.loads(body) == {"ok": True}, (st, body)
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660, oct(os.stat(sock).st_mode)
        h.wait_log(rf"listening on port {h.port} \(127\.0\.0\.1:{h.port}, unix:{re.escape(sock)}\)")
    assert not os.path.exists(sock), "the socket file outlived the host"


def test_bind_refuses_a_name_it_cannot_read():
    r = run_bin("--bind", "localhost:80x", "--db", ":memory:", "--port", "0")
    assert r.returncode != 0, r
    assert "cannot read listen address 'localhost:80x'" in r.stderr, r.stderr


def test_admin_bind_serves_only_admin_and_public_only_health():
    sock = os.path.join(tempfile.mkdtemp(prefix="wshost-e2e-sock-"), "admin.sock")
    with Host(flags=["--bind", "127.0.0.1", "--admin-bind", f"127.0.0.1:0,unix:{sock}",
                     "--admin-loopback-only"]) as h:
        m = h.wait_log(r"admin API on 127\.0\.0\.1:(\d+), unix:")
        admin = int(m.group(1))
        assert admin != h.port
        # Public: health, readiness and the client script; the rest of /_/ is not there.
        assert h.http("GET", "/_/healthz").status == 200
        assert h.http("GET", "/_/readyz").status == 200
        assert h.http("GET", "/_/client.js").status == 200
        r = h.http("GET", "/_/status", auth=True)
        assert r.status == 404, f"admin API on the public listener: {r}"
        assert h.http("POST", "/_/push", json_body={"user_id": "u", "message": "m"},
                      auth=True).status == 404
        assert h.http("GET", "/_/metrics", auth=True).status == 404
        assert http_request(admin, "GET", "/_/metrics", bearer=ADMIN_TOKEN).status == 200
        assert h.http("POST", "/echo", body="hi").status == 200, "functions stay public"
        # Admin: the API (still behind the token), nothing else.
        r = http_request(admin, "GET", "/_/status", bearer=ADMIN_TOKEN)
        assert r.status == 200 and "version" in r.json, r
        assert http_request(admin, "GET", "/_/status").status == 401
        assert http_request(admin, "POST", "/echo", body="hi").status == 404
        # A unix socket peer is local (--admin-loopback-only lets it in).
        st, _, body = unix_http(sock, "GET", "/_/users", {"Authorization": "Bearer " + ADMIN_TOKEN})
        assert st == 200, (st, body)
        # No WebSocket on the admin listener.
        try:
            RawWS(admin, "/", timeout=3)
            raise Fail("WebSocket upgrade accepted on the admin listener")
        except Fail as e:
            assert "404" in str(e), e


def test_admin_bind_keeps_public_metrics_public():
    with Host(flags=["--admin-bind", "127.0.0.1:0", "--metrics-public"]) as h:
        assert h.http("GET", "/_/metrics").status == 200
        assert h.http("GET", "/_/users", auth=True).status == 404


def test_admin_bind_needs_a_port():
    r = run_bin("--admin-bind", "127.0.0.1", "--db", ":memory:", "--port", "0")
    assert r.returncode != 0 and "names no port" in r.stderr, r


# -- one host per database


def test_second_host_on_same_db_exits_2_naming_pid():
    with Host() as h:
        h2 = Host()
        h2.db = h.db
        h2.start(wait=False)
        rc = h2.wait_exit(timeout=10)
        assert rc == 2, f"second host on {h.db}: exit {rc}\n{h2.log()}"
        assert re.search(rf"database {re.escape(h.db)} is in use by pid {h.proc.pid}\b",
                         h2.log()), h2.log()
        assert "open" not in h2.log_since_start().split("in use")[0].split("starting")[-1]
        # The first one was not disturbed: nothing was marked closed under it.
        assert h.http("GET", "/_/healthz").status == 200
        h2.cleanup()
    # Once it stopped, the database is free again.
    h.start()
    assert h.http("GET", "/_/healthz").status == 200
    h.stop()


def test_memory_hosts_keep_their_crash_records_apart():
    run_dir = tempfile.mkdtemp(prefix="wshost-e2e-run-")
    flags = ["--db", ":memory:", "--isolation", "none", "--runtime-dir", run_dir]
    a = Host(plugins={"crash": tplugin("crash")}, flags=flags)
    with a:
        try:
            a.http("GET", "/crash?do=segv", timeout=5)
        except (OSError, http.client.HTTPException):
            pass
        def quarantined(h):
            try:
                return h.http("GET", "/_/quarantine", auth=True, timeout=2).json.get("quarantined")
            except (OSError, http.client.HTTPException):
                return None
        wait_until(lambda: quarantined(a), timeout=15, what="the crash to be quarantined")
        # A second :memory: host, same folder, same runtime folder: its own (empty) records.
        b = Host(plugins={"crash": tplugin("crash")}, flags=flags)
        own, b.tmp = b.tmp, a.tmp  # started in the same working directory
        b.start()
        b.tmp = own
        with b:
            q = b.http("GET", "/_/quarantine", auth=True).json
            assert not q.get("quarantined"), f"inherited the other host's quarantine: {q}"
            assert b.http("GET", "/crash").status == 200
        files = os.listdir(run_dir)
        assert files == [f"wshost-{os.geteuid()}-memory-{a.proc.pid}-crashes.jsonl"], files
        assert not os.path.exists(os.path.join(a.tmp, "data", "wshost-memory-crashes.jsonl"))
    assert os.listdir(run_dir) == [], "crash records left after the hosts stopped"


# -- version


def cmake_version():
    text = open(os.path.join(SOURCE_DIR, "CMakeLists.txt")).read()
    return re.search(r"project\(wshost VERSION (\d+\.\d+\.\d+)", text).group(1)


def test_version_flag_status_and_log():
    r = run_bin("--version")
    assert r.returncode == 0, r
    m = re.fullmatch(r"wshost (\d+\.\d+\.\d+) \(ABI (\d+), libwebsockets (\d+\.\d+\.\d+)\)\n",
                     r.stdout)
    assert m, repr(r.stdout)
    assert m.group(1) == cmake_version()
    with Host() as h:
        st = h.http("GET", "/_/status", auth=True).json
        assert st["version"] == m.group(1) and st["abi"] == int(m.group(2)), st
        assert st["lws"].startswith(m.group(3)) and st["binary_deleted"] is False, st
        h.wait_log(rf"info\s+main - - wshost {re.escape(m.group(1))} \(ABI \d+, libwebsockets ")


def test_replaced_binary_is_reported():
    tmp = tempfile.mkdtemp(prefix="wshost-e2e-bin-")
    copy = os.path.join(tmp, "wshost")
    shutil.copy2(BIN, copy)
    saved = harness.BIN
    harness.BIN = copy
    try:
        with Host() as h:
            os.unlink(copy)  # what dpkg does on upgrade: the running file is gone
            h.wait_log(r"warn .*the binary this host runs was replaced or removed \(.*\(deleted\)\)",
                       timeout=10)
            assert h.http("GET", "/_/status", auth=True).json["binary_deleted"] is True
    finally:
        harness.BIN = saved


# -- configuration


def write(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def test_config_file_and_precedence():
    tmp = tempfile.mkdtemp(prefix="wshost-e2e-cfg-")
    cfg = write(os.path.join(tmp, "wshost.json"), json.dumps({"max-body": 1000, "outbox-max": 7}))
    with Host(plugins={"echo": example("echo")}, flags=["--config", cfg]) as h:
        assert h.http("POST", "/echo", body="a" * 1000).status == 200
        assert h.http("POST", "/echo", body="a" * 1001).status == 413, "file ignored"
    # The environment wins over the file, a flag over both.
    r = run_bin("--config", cfg, "--print-config", "--outbox-max", "9",
                env={"WSHOST_MAX_BODY": "2000", "WSHOST_OUTBOX_MAX": "8"})
    assert r.returncode == 0, r
    eff = json.loads(r.stdout)
    assert eff["max-body"] == 2000 and eff["outbox-max"] == 9, eff
    assert eff["max-connections"] == 10000 and eff["drain-timeout"] == 10, eff


def test_print_config_masks_secrets():
    r = run_bin("--print-config", "--admin-token", "sekrit-admin-token", "--jwt-secret", "j" * 40,
                "--redis", "redis://:sekrit-url@127.0.0.1:6379/2",
                env={"WSHOST_REDIS_PASSWORD": "sekrit-redis"})
    assert r.returncode == 0, r
    assert "sekrit" not in r.stdout and "jjjj" not in r.stdout, r.stdout
    eff = json.loads(r.stdout)
    assert eff["admin-token"] == eff["jwt-secret"] == eff["redis-password"] == "********", eff
    assert eff["redis"] == "redis://********@127.0.0.1:6379/2", eff


def test_unknown_names_and_bad_values_are_errors():
    tmp = tempfile.mkdtemp(prefix="wshost-e2e-cfg-")
    r = run_bin("--db", ":memory:", env={"WSHOST_MAX_CONECTIONS": "5"})
    assert r.returncode == 2, r
    assert "WSHOST_MAX_CONECTIONS" in r.stderr and "did you mean WSHOST_MAX_CONNECTIONS" in r.stderr
    cfg = write(os.path.join(tmp, "a.json"), '{"max-conections": 5}')
    r = run_bin("--config", cfg, "--db", ":memory:")
    assert r.returncode == 2 and 'did you mean "max-connections"' in r.stderr, r
    cfg = write(os.path.join(tmp, "b.json"), '{"max-connections": "many"}')
    r = run_bin("--config", cfg, "--db", ":memory:")
    assert r.returncode == 2 and "bad value 'many'" in r.stderr, r
    cfg = write(os.path.join(tmp, "c.json"), '{"port": 0,')
    r = run_bin("--config", cfg, "--db", ":memory:")
    assert r.returncode == 2 and "--config" in r.stderr, r
    r = run_bin("--max-conections", "5")
    assert r.returncode == 2 and "did you mean --max-connections" in r.stderr, r


def test_host_setting_in_env_file_is_refused():
    tmp = tempfile.mkdtemp(prefix="wshost-e2e-cfg-")
    env_file = write(os.path.join(tmp, "fn.env"), "API_KEY=x\nWSHOST_JWT_SECRET=" + "s" * 40 + "\n")
    h = Host(flags=["--env-file", env_file])
    h.start(wait=False)
    rc = h.wait_exit(timeout=10)
    assert rc != 0, f"exit {rc}: a host setting in --env-file was accepted\n{h.log()}"
    assert "WSHOST_JWT_SECRET is a setting of the host" in h.log(), h.log()
    h.cleanup()


# -- secrets


def test_admin_token_from_file_and_credentials_directory():
    tmp = tempfile.mkdtemp(prefix="wshost-e2e-sec-")
    tok = write(os.path.join(tmp, "token"), "file-token-0123456789\n")
    with Host(admin_token=None, flags=["--admin-token-file", tok]) as h:
        assert h.http("GET", "/_/status", auth="file-token-0123456789").status == 200
        assert h.http("GET", "/_/status", auth="file-token-0123456789\n".strip() + "x").status == 401
        cmdline = open(f"/proc/{h.proc.pid}/cmdline", "rb").read()
        assert b"file-token" not in cmdline
    # A token given as a flag is blanked in ps (a copy is kept).
    with Host(admin_token="flag-token-0123456789") as h:
        assert h.http("GET", "/_/status", auth="flag-token-0123456789").status == 200
        for pid in (h.proc.pid, h.serving_pid()):
            assert b"flag-token" not in open(f"/proc/{pid}/cmdline", "rb").read(), pid
    creds = tempfile.mkdtemp(prefix="wshost-e2e-creds-")
    write(os.path.join(creds, "admin-token"), "cred-token-0123456789")
    with Host(admin_token=None, env={"CREDENTIALS_DIRECTORY": creds}) as h:
        assert h.http("GET", "/_/status", auth="cred-token-0123456789").status == 200
    # Readable by others: refused, before anything starts.
    write(tok, "file-token-0123456789\n", mode=0o644)
    r = run_bin("--admin-token-file", tok, "--db", ":memory:", "--port", "0")
    assert r.returncode == 2 and "readable or writable by others" in r.stderr, r


def test_redis_url_password_blanked_in_cmdline():
    port = free_port()  # nobody listens: the host keeps trying in the background
    with Host(flags=["--redis", f"redis://:sekrit-url-pw@127.0.0.1:{port}/0"]) as h:
        for pid in (h.proc.pid, h.serving_pid()):
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            assert b"sekrit" not in cmd and f"@127.0.0.1:{port}/0".encode() in cmd, cmd


def test_secret_variables_do_not_reach_functions():
    """cloud_env() falls back to the environment: the admin token must not be there."""
    with Host(admin_token=None, env={"WSHOST_ADMIN_TOKEN": "env-token-0123456789"}) as h:
        assert h.http("GET", "/_/status", auth="env-token-0123456789").status == 200
        pid = h.serving_pid()
        environ = open(f"/proc/{pid}/environ", "rb").read()
        assert b"env-token" not in environ, "the serving process keeps the admin token in its environment"


def test_processes_are_not_dumpable():
    """PR_SET_DUMPABLE 0: /proc/PID files belong to root, not to the host's user, so another
    process of that user cannot read its memory (run as nobody to see the difference)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        raise Fail("needs root and setpriv to run the host as another user")
    tmp = tempfile.mkdtemp(prefix="wshost-e2e-dump-")
    os.chmod(tmp, 0o755)
    run_dir = os.path.join(tmp, "run")
    os.mkdir(run_dir)
    os.chown(run_dir, 65534, 65534)
    log = os.path.join(tmp, "host.log")
    with open(log, "wb") as out:
        p = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", BIN,
                              "--port", "0", "--bind", "127.0.0.1", "--db", ":memory:",
                              "--admin-token", ADMIN_TOKEN, "--plugins", tmp, "--runtime-dir",
                              run_dir], stdout=out, stderr=subprocess.STDOUT, cwd=run_dir,
                             env=clean_env(), stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: "listening on port" in open(log).read() or p.poll() is not None,
                   timeout=10, what="the host as nobody")
        assert p.poll() is None, open(log).read()
        pids = [p.pid] + children_of(p.pid)
        assert len(pids) >= 2, pids
        for pid in pids:
            assert os.stat(f"/proc/{pid}/mem").st_uid == 0, f"pid {pid} is dumpable"
            assert os.stat(f"/proc/{pid}/environ").st_uid == 0, f"pid {pid} is dumpable"
    finally:
        p.terminate()
        p.wait(15)


# -- health and drain


def test_head_on_health_endpoints():
    with Host() as h:
        for path in ("/_/healthz", "/_/readyz"):
            g = h.http("GET", path)
            r = h.http("HEAD", path)
            assert r.status == g.status == 200, (path, r, g)
            assert r.body == b"" and r.headers.get("content-length") == str(len(g.body)), (path, r)


NODE_DRIVER = r"""
import { connect } from "./client.mjs";
const delays = [];
globalThis.setTimeout = (fn, ms) => { delays.push(ms); return delays.length; };
globalThis.clearTimeout = () => {};
const sockets = [];
globalThis.WebSocket = class { constructor() { sockets.push(this); } static OPEN = 1; };
const out = {};
for (const reason of ["shutdown; reconnect", "shutdown; no-reconnect", "gone"]) {
  delays.length = 0;
  const closes = [];
  const c = connect("ws://127.0.0.1:1/", { minDelayMs: 100, maxDelayMs: 800, storage: null,
                                           shutdownSpreadMs: 5000 });
  c.on("close", (e) => closes.push(e.willReconnect));
  const runs = [];
  for (let i = 0; i < 200; i++) {
    sockets.at(-1).onclose({ code: 1001, reason });
    if (!delays.length) break;
    runs.push(delays.pop());
    sockets.at(-1).onopen?.call(null); // reconnected: its first message confirms it and
    sockets.at(-1).onmessage?.({ data: "hi" }); // the backoff starts over
  }
  out[reason] = { delays: runs, willReconnect: closes };
}
console.log(JSON.stringify(out));
"""


def test_js_client_honours_the_reconnect_hint():
    """The client the host serves: "; no-reconnect" stops it, "; reconnect" spreads its return
    over shutdownSpreadMs (random, so a fleet does not come back at once), other closes use
    the ordinary backoff."""
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        raise Fail("node is not installed (Debian package nodejs)")
    with Host() as h:
        js = h.http("GET", "/_/client.js").body
    tmp = tempfile.mkdtemp(prefix="wshost-e2e-js-")
    open(os.path.join(tmp, "client.mjs"), "wb").write(js)
    open(os.path.join(tmp, "drive.mjs"), "w").write(NODE_DRIVER)
    r = subprocess.run([node, os.path.join(tmp, "drive.mjs")], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r
    out = json.loads(r.stdout)
    assert out["shutdown; no-reconnect"] == {"delays": [], "willReconnect": [False]}, out
    spread = out["shutdown; reconnect"]["delays"]
    assert len(spread) == 200 and all(0 <= d <= 5000 for d in spread), spread[:10]
    assert max(spread) > 800, "reconnects after a drain are not spread past the usual backoff"
    assert len(set(spread)) > 150, "the delays are not random"
    plain = out["gone"]["delays"]
    assert len(plain) == 200 and all(0 <= d <= 100 for d in plain), plain[:10]


# -- backup


def test_sqlite_backup_while_running_under_load():
    with Host(single_node=True) as h:
        stop = threading.Event()
        made = []

        def churn():
            while not stop.is_set():
                try:
                    ws = RawWS(h.port, "/", timeout=5)
                    m = ws.recv_message()
                    if m and m[0] != "close":
                        made.append(json.loads(m[1])["user_id"])
                    ws.close()
                except (OSError, Fail):
                    pass
                h.http("POST", "/push", json_body={"user_id": made[-1] if made else "x",
                                                   "message": "m"})

        threads = [threading.Thread(target=churn) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: len(made) >= 20, timeout=20, what="users created under load")
            out = os.path.join(h.tmp, "backup.db")
            before = len(made)
            r = subprocess.run(["sqlite3", h.db, f".backup {out}"], capture_output=True, text=True,
                               timeout=60)
            assert r.returncode == 0, r
        finally:
            stop.set()
            for t in threads:
                t.join(20)
        assert h.http("GET", "/_/healthz").status == 200
        r = subprocess.run(["sqlite3", out, "PRAGMA integrity_check"], capture_output=True,
                           text=True, timeout=30)
        assert r.stdout.strip() == "ok", r
        users = {row[0] for row in sql_rows(out, "SELECT id FROM users")}
        # Every user made before the backup started was committed (a greeting leaves only after
        # its user is), so the copy has them all.
        missing = [u for u in made[:before] if u not in users]
        assert not missing, f"{len(missing)} users missing from the backup"


if __name__ == "__main__":
    run(globals())
