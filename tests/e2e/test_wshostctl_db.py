"""test_wshostctl_db.py: tools/wshostctl against a database built from the host's own schema.

The DDL is read from host/store/store.c (between the SCHEMA_V1 markers), so a schema change the
tool does not follow fails here. push/status run against a stub admin API on a free port
that checks the bearer token and records what the tool sent. Needs no wshost binary.
Run: /usr/bin/python3 tests/e2e/test_wshostctl_db.py (WSHOST_SOURCE_DIR optional).
"""

import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback

SOURCE_DIR = os.environ.get(
    "WSHOST_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
TOOL = os.path.join(SOURCE_DIR, "tools", "wshostctl")
STORE_C = os.path.join(SOURCE_DIR, "host", "store", "store.c")
TOKEN = "ctl-test-admin-token"
NOW = int(time.time() * 1000)
HOUR = 3600 * 1000

ONLINE = {"alice": 2, "bob@example.com": 1}  # user -> open connections
OFFLINE = ["carol", "dave"]


def schema_sql():
    src = open(STORE_C).read()
    m = re.search(r"/\* SCHEMA_V1 BEGIN \*/(.*?)/\* SCHEMA_V1 END \*/", src, re.S)
    assert m, "SCHEMA_V1 markers not found in host/store/store.c"
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1))
    sql = "".join(p.encode().decode("unicode_escape") for p in parts)
    assert "CREATE VIEW online_users" in sql, sql
    return sql


def build_db(path):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(schema_sql())
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO boots VALUES ('old0', 1, ?, NULL)", (NOW - 5 * HOUR,))
    db.execute("INSERT INTO boots VALUES ('b00tb00t', 2, ?, NULL)", (NOW - HOUR,))
    users = list(ONLINE) + OFFLINE
    for i, u in enumerate(users):
        token_hash = hashlib.sha256(b"t").digest() if u != "bob@example.com" else None
        db.execute("INSERT INTO users VALUES (?, ?, ?, ?)",
                   (u, token_hash, NOW - 10 * HOUR, NOW - i * 60000))
    for u, n in ONLINE.items():
        # A closed one from an earlier run: history, not online.
        db.execute("INSERT INTO connections (user_id, boot_id, remote_addr, connected_at, "
                   "disconnected_at) VALUES (?, 'old0', '10.9.9.9', ?, ?)",
                   (u, NOW - 4 * HOUR, NOW - 3 * HOUR))
        for k in range(n):
            db.execute("INSERT INTO connections (user_id, boot_id, remote_addr, connected_at) "
                       "VALUES (?, 'b00tb00t', ?, ?)", (u, f"10.0.0.{k + 1}", NOW - 60000))
    db.execute("INSERT INTO connections (user_id, boot_id, remote_addr, connected_at, "
               "disconnected_at) VALUES ('carol', 'old0', '10.8.8.8', ?, ?)",
               (NOW - 4 * HOUR, NOW - 3 * HOUR))
    q = "INSERT INTO outbox (user_id, payload, is_binary, created_at, expires_at) VALUES (?,?,?,?,?)"
    db.execute(q, ("carol", "first message", 0, NOW - 1000, NOW + HOUR))
    db.execute(q, ("carol", b"\x00\x01", 1, NOW - 900, NOW + HOUR))
    db.execute(q, ("carol", "expired one", 0, NOW - 2 * HOUR, NOW - HOUR))  # not counted
    db.close()


def ctl(*args, env=None, check=None):
    e = dict(os.environ)
    e.pop("WSHOST_ADMIN_TOKEN", None)
    e.pop("WSHOST_DB", None)
    e.update(env or {})
    p = subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True,
                       timeout=30, env=e)
    if check is not None and p.returncode != check:
        raise AssertionError(f"wshostctl {args}: exit {p.returncode}, want {check}\n"
                             f"stdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def rows(stdout):
    """Table rows (header and summary line excluded) as lists of cells."""
    lines = [l for l in stdout.splitlines() if l.strip()]
    assert lines and lines[0].startswith("USER_ID"), stdout
    return [re.split(r"\s{2,}", l.strip()) for l in lines[1:] if "user(s)" not in l]


# --- tests --------------------------------------------------------------------------------


def test_users_online(t):
    p = ctl("--db", t.db, "users", "--online", check=0)
    got = {r[0]: r for r in rows(p.stdout)}
    assert set(got) == set(ONLINE), p.stdout
    for u, n in ONLINE.items():
        assert got[u][1] == "yes" and got[u][2] == str(n), got[u]
    assert "2 user(s) online" in p.stdout, p.stdout


def test_users_all_with_queue(t):
    p = ctl("users", "--db", t.db, check=0)  # options after the subcommand work too
    got = {r[0]: r for r in rows(p.stdout)}
    assert set(got) == set(ONLINE) | set(OFFLINE), p.stdout
    assert got["carol"][1] == "no" and got["carol"][2] == "0", got["carol"]
    assert got["carol"][4] == "2", got["carol"]  # the expired message is not counted
    assert got["dave"][4] == "0", got["dave"]
    # Most recently seen first.
    assert [r[0] for r in rows(p.stdout)][:2] == ["alice", "bob@example.com"], p.stdout


def test_users_json(t):
    p = ctl("--db", t.db, "--json", "users", "--online", check=0)
    users = json.loads(p.stdout)
    assert {u["id"]: u["connections"] for u in users} == ONLINE, users
    assert all(u["online"] is True for u in users)
    p = ctl("--db", t.db, "users", "--limit", "1", "--json", check=0)
    assert [u["id"] for u in json.loads(p.stdout)] == ["alice"], p.stdout


def test_users_online_empty(t):
    path = os.path.join(t.dir, "empty", "wshost.db")
    os.makedirs(os.path.dirname(path))
    db = sqlite3.connect(path)
    db.executescript(schema_sql())
    db.execute("PRAGMA user_version = 1")
    db.close()
    p = ctl("--db", path, "users", "--online", check=0)
    assert p.stdout.strip() == "no users online", p.stdout


def test_user_detail(t):
    p = ctl("--db", t.db, "user", "carol", check=0)
    assert re.search(r"^online\s+no", p.stdout, re.M), p.stdout
    assert re.search(r"^queued\s+2 message", p.stdout, re.M), p.stdout
    assert "first message" in p.stdout and "(binary)" in p.stdout, p.stdout
    assert "expired one" not in p.stdout, p.stdout
    assert "10.8.8.8" in p.stdout, p.stdout
    u = json.loads(ctl("--json", "--db", t.db, "user", "alice", check=0).stdout)
    assert u["online"] is True and u["open_connections"] == 2, u
    assert len(u["connections"]) == 3, u
    assert [c["open"] for c in u["connections"]] == [True, True, False], u
    assert u["queued"] == 0 and u["has_token"] is True, u
    b = json.loads(ctl("--json", "--db", t.db, "user", "bob@example.com", check=0).stdout)
    assert b["has_token"] is False, b


def test_user_unknown(t):
    p = ctl("--db", t.db, "user", "nobody", check=1)
    assert "no such user: nobody" in p.stderr, p.stderr
    assert p.stdout == "", p.stdout


def test_bad_database(t):
    p = ctl("--db", os.path.join(t.dir, "missing.db"), "users", check=1)
    assert "no database at" in p.stderr, p.stderr
    other = os.path.join(t.dir, "other.db")
    sqlite3.connect(other).execute("CREATE TABLE x (y)").connection.close()
    p = ctl("--db", other, "users", check=1)
    assert "not a wshost database" in p.stderr, p.stderr
    newer = os.path.join(t.dir, "newer.db")
    db = sqlite3.connect(newer)
    db.executescript(schema_sql())
    db.execute("PRAGMA user_version = 7")
    db.close()
    p = ctl("--db", newer, "users", check=1)
    assert "schema version 7" in p.stderr, p.stderr
    p = ctl("--db", t.db, "frobnicate", check=2)
    assert "invalid choice" in p.stderr, p.stderr


def test_reads_while_host_writes(t):
    """The host keeps a write transaction open between batch commits; reads must still work,
    see only committed rows, and leave the file unchanged."""
    with open(t.db, "rb") as f:
        before = hashlib.sha256(f.read()).hexdigest()
    w = sqlite3.connect(t.db, isolation_level=None)
    try:
        w.execute("BEGIN IMMEDIATE")
        w.execute("INSERT INTO connections (user_id, boot_id, connected_at) "
                  "VALUES ('dave', 'b00tb00t', ?)", (NOW,))
        p = ctl("--db", t.db, "users", "--online", check=0)
        assert "locked" not in p.stderr, p.stderr
        assert {r[0] for r in rows(p.stdout)} == set(ONLINE), p.stdout
    finally:
        w.execute("ROLLBACK")
        w.close()
    with open(t.db, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == before, "wshostctl modified the database"


class Stub(http.server.BaseHTTPRequestHandler):
    """Admin API stand-in: answers per the user id, records requests."""

    def log_message(self, *a):
        pass

    def reply(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def authorized(self):
        if self.headers.get("Authorization") != "Bearer " + TOKEN:
            self.reply(401, {"error": "Unauthorized"})
            return False
        return True

    def do_GET(self):
        self.server.seen.append(("GET", self.path, None))
        if not self.authorized():
            return
        if self.path == "/_/status":
            self.reply(200, {"uptime_ms": 1234, "boot_id": "b00tb00t",
                             "store": {"users": 4, "online_users": 2, "queued_messages": 2},
                             "plugins": [{"name": "__websocket__", "version": 3,
                                          "last_error": None}]})
        else:
            self.reply(404, {"error": "Not Found"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(n))
        self.server.seen.append(("POST", self.path, body))
        if not self.authorized():
            return
        user = body.get("user_id")
        if self.path != "/_/push":
            self.reply(404, {"error": "Not Found"})
        elif user == "alice":
            self.reply(200, {"delivered": 2})
        elif user == "carol":
            self.reply(200, {"delivered": 0})
        elif user == "full":
            self.reply(507, {"error": "outbox full"})
        else:
            self.reply(404, {"error": "no such user"})


def with_stub(fn):
    def run(t):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
        srv.seen = []
        th = threading.Thread(target=srv.serve_forever, daemon=True)
        th.start()
        try:
            fn(t, f"http://127.0.0.1:{srv.server_address[1]}", srv.seen)
        finally:
            srv.shutdown()
            srv.server_close()
    run.__name__ = fn.__name__
    return run


@with_stub
def test_push(t, url, seen):
    # Token from the file next to the database.
    with open(os.path.join(t.dir, "admin-token"), "w") as f:
        f.write(TOKEN + "\n")
    p = ctl("--db", t.db, "--url", url, "push", "alice", "hello there", check=0)
    assert "delivered to 2 live connection(s) of alice" in p.stdout, p.stdout
    assert seen[-1] == ("POST", "/_/push", {"user_id": "alice", "message": "hello there"}), seen
    p = ctl("--db", t.db, "--url", url, "push", "carol", "later", check=0)
    assert "queued" in p.stdout, p.stdout
    p = ctl("--db", t.db, "--url", url, "--json", "push", "carol", "later", check=0)
    assert json.loads(p.stdout) == {"delivered": 0}, p.stdout
    p = ctl("--db", t.db, "--url", url, "push", "ghost", "x", check=1)
    assert "no such user: ghost" in p.stderr, p.stderr
    p = ctl("--db", t.db, "--url", url, "push", "full", "x", check=1)
    assert "outbox of full is full" in p.stderr, p.stderr


@with_stub
def test_token_sources(t, url, seen):
    assert not os.path.exists(os.path.join(t.dir, "admin-token"))
    p = ctl("--db", t.db, "--url", url, "status", check=1)
    assert "no admin token" in p.stderr, p.stderr
    assert seen == [], seen  # nothing sent without a token
    p = ctl("--db", t.db, "--url", url, "--token", "wrong", "status", check=1)
    assert "401 Unauthorized" in p.stderr, p.stderr
    p = ctl("--db", t.db, "--url", url, "status", env={"WSHOST_ADMIN_TOKEN": TOKEN}, check=0)
    p = ctl("--db", t.db, "--url", url, "--token", TOKEN, "status", check=0)
    assert seen[-1][:2] == ("GET", "/_/status"), seen


@with_stub
def test_status(t, url, seen):
    p = ctl("--db", t.db, "--url", url, "--token", TOKEN, "--json", "status", check=0)
    assert json.loads(p.stdout)["store"]["online_users"] == 2, p.stdout
    p = ctl("--db", t.db, "--url", url, "--token", TOKEN, "status", check=0)
    assert re.search(r"^boot_id: b00tb00t$", p.stdout, re.M), p.stdout
    assert re.search(r"^  online_users: 2$", p.stdout, re.M), p.stdout
    assert "__websocket__" in p.stdout, p.stdout


def test_host_unreachable(t):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    p = ctl("--db", t.db, "--url", f"http://127.0.0.1:{port}", "--token", "x", "status", check=1)
    assert "cannot reach wshost" in p.stderr, p.stderr


# --- runner -------------------------------------------------------------------------------


class Ctx:
    pass


def main():
    tests = [(n, f) for n, f in globals().items() if n.startswith("test_") and callable(f)]
    passed = failed = 0
    top = tempfile.mkdtemp(prefix="wshostctl-test-")
    try:
        for name, fn in tests:
            t = Ctx()
            t.dir = os.path.join(top, name)
            os.makedirs(t.dir)
            t.db = os.path.join(t.dir, "wshost.db")
            build_db(t.db)
            try:
                fn(t)
                passed += 1
                print(f"PASS {name}")
            except Exception:
                failed += 1
                print(f"FAIL {name}")
                traceback.print_exc()
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
