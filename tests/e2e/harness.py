"""harness.py: end-to-end test support for wshost.

Starts the real binary (WSHOST_BIN) on a free loopback port with a private temp dir
(plugins dir, db file, log file), and offers small clients: HTTP (http.client), WebSocket
(python3-websockets, asyncio) and a raw TCP WebSocket for hand-made frames. Ends with a tiny
test runner: `run(globals())` runs every `test_*` function of the calling file in order,
prints PASS/FAIL/SKIP per test and `N passed, M failed, K skipped`, and exits 1 on any failure,
77 (ctest's SKIP_RETURN_CODE) when every test skipped, 2 when a name filter selects nothing.

Everything waits with a bound: no call here can hang a test forever.
Use Debian's /usr/bin/python3 (it has python3-websockets).
"""

import asyncio
import base64
import hashlib
import http.client
import inspect
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import traceback

import websockets

# tools/wshostctl reads the installed host's settings (/etc/wshost) for its defaults: tests
# never see the machine's.
os.environ["WSHOSTCTL_ETC"] = "/nonexistent/wshostctl-etc"

SOURCE_DIR = os.environ.get(
    "WSHOST_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD_DIR = os.environ.get("WSHOST_BUILD_DIR", os.path.join(SOURCE_DIR, "build"))
BIN = os.environ.get("WSHOST_BIN", os.path.join(BUILD_DIR, "wshost"))
TEST_PLUGINS = os.environ.get("WSHOST_TEST_PLUGINS", os.path.join(BUILD_DIR, "test-plugins"))
EXAMPLE_PLUGINS = os.environ.get("WSHOST_EXAMPLE_PLUGINS", os.path.join(SOURCE_DIR, "plugins"))

ADMIN_TOKEN = "e2e-admin-token-0123456789"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
# WSHOST_VALGRIND=1: every host runs under valgrind (memcheck); a memory error or a definite
# leak fails the test like a sanitizer report. Slower: start and stop get more time.
VALGRIND = ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite", "--error-exitcode=99", "--num-callers=30",
            "--suppressions=" + os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                             "valgrind.supp")] \
    if os.environ.get("WSHOST_VALGRIND") == "1" else []
if VALGRIND:
    START_TIMEOUT = STOP_TIMEOUT = 60.0
MiB = 1024 * 1024
ISOLATION = os.environ.get("WSHOST_E2E_ISOLATION") == "1"

# Close codes (RFC 6455 section 7.4.1).
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_PROTOCOL = 1000, 1001, 1002
CLOSE_ABNORMAL, CLOSE_INVALID_DATA, CLOSE_TOO_BIG, CLOSE_SERVER_ERROR = 1006, 1007, 1009, 1011
# SDK status codes (sdk/include/cloud.h).
CLOUD_EINVAL, CLOUD_ECLOSED, CLOUD_ENOUSER, CLOUD_EFULL, CLOUD_ESTATE = -1, -2, -4, -5, -6

USER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{22,}$")


def sanitized():
    """True when the host binary is built with a sanitizer (slower: timing bounds widen)."""
    try:
        with open(BIN, "rb") as f:
            data = f.read()
        return b"__asan_init" in data or b"__tsan_init" in data or b"__ubsan_handle" in data
    except OSError:
        return False


# The environment of hosts whose memory a test bounds: under ASan a freed block waits in its
# quarantine (256 MiB by default) before it is reused, so the RSS of a process that allocates
# and frees a lot only grows. Those hosts run with the quarantine off; every other ASan check
# stays (a use after free of a block not reused yet is still caught).
MEMORY_BOUND_ENV = {"ASAN_OPTIONS": "quarantine_size_mb=0:thread_local_quarantine_size_kb=0"}


def example(name):
    """Path of an example function built from plugins/<name>.c."""
    return os.path.join(EXAMPLE_PLUGINS, name + ".so")


def tplugin(name):
    """Path of a test-only function built from tests/plugins/<name>.c."""
    return os.path.join(TEST_PLUGINS, name + ".so")





def default_plugins():
    return {"__websocket__": example("__websocket__"), "push": example("push"),
            "echo": example("echo")}


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# WSHOST_E2E_REDIS=1 (make test-redis): every Host joins a cluster on one redis-server that
# this test process starts (emptied before each test), so the whole suite runs with --redis.
E2E_REDIS = None
# A test file whose every test is about the single node's store sets this (test_durability).
SINGLE_NODE_FILE = False


def e2e_redis_url():
    global E2E_REDIS
    if os.environ.get("WSHOST_E2E_REDIS", "0") in ("", "0"):
        return None
    if E2E_REDIS is None:
        import atexit
        port = free_port()
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--loglevel", "warning"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        atexit.register(lambda: (proc.kill(), proc.wait(5)))
        E2E_REDIS = (port, proc)
        wait_until(lambda: e2e_redis_call(b"PING") is not None, timeout=10,
                   what="the e2e redis-server")
    return f"redis://127.0.0.1:{E2E_REDIS[0]}"


def e2e_redis_call(*args):
    """One command to the e2e redis-server; the raw reply, None if it does not answer."""
    req = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a)}\r\n".encode() + a + b"\r\n" for a in args)
    try:
        with socket.create_connection(("127.0.0.1", E2E_REDIS[0]), timeout=2) as c:
            c.sendall(req)
            return c.recv(65536)
    except OSError:
        return None


class Fail(AssertionError):
    pass


def proc_stat(pid):
    """(state, ppid, utime+stime in clock ticks) from /proc/<pid>/stat, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1]), int(fields[11]) + int(fields[12])


def children_of(pid):
    """Live (not zombie) children of pid."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st and st[1] == pid and st[0] != "Z":
                out.append(int(d))
    return out


def wait_until(pred, timeout=5.0, interval=0.02, what="condition"):
    """Polls pred() until it returns a truthy value (returned) or timeout (Fail)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise Fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


async def async_wait_until(pred, timeout=5.0, interval=0.02, what="condition"):
    """Like wait_until; pred may be a plain or an async function."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() >= deadline:
            raise Fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------------------------------
# The host process


class Host:
    """One wshost process with its own temp dir.

    plugins: {name: path of a built .so}; copied to <tmp>/plugins/<name>.so with mode 0644.
    flags: extra command line flags. env: extra environment. The db is <tmp>/wshost.db.
    Use as a context manager, or call start()/stop(). start() may be called again after
    stop()/kill9() to restart on the same db and plugins (on a fresh port).
    """

    all_hosts = []

    def __init__(self, plugins=None, flags=(), env=None, admin_token=ADMIN_TOKEN,
                 plugin_dir_mode=0o755, plugin_file_mode=0o644, single_node=False):
        # single_node: never joins the e2e cluster (WSHOST_E2E_REDIS), for a test whose premise
        # is the single node's SQLite outbox (a cluster keeps it in Redis).
        self.single_node = single_node or SINGLE_NODE_FILE
        self.tmp = tempfile.mkdtemp(prefix="wshost-e2e-")
        self.plugins_dir = os.path.join(self.tmp, "plugins")
        os.mkdir(self.plugins_dir)
        self.db = os.path.join(self.tmp, "wshost.db")
        self.log_path = os.path.join(self.tmp, "host.log")
        self.flags = list(flags)
        self.env = dict(env or {})
        self.admin_token = admin_token
        self.proc = None
        self.port = None
        self.returncode = None
        self.starts = 0
        for name, path in (default_plugins() if plugins is None else plugins).items():
            self.add_plugin(name, path, plugin_file_mode)
        os.chmod(self.plugins_dir, plugin_dir_mode)
        Host.all_hosts.append(self)

    def add_plugin(self, name, path, mode=0o644):
        if not os.path.exists(path):
            raise Fail(f"plugin {path} is not built")
        dst = os.path.join(self.plugins_dir, name + ".so")
        tmp = dst + ".tmp-copy"  # atomic: the host watches this dir
        shutil.copyfile(path, tmp)
        os.chmod(tmp, mode)
        os.rename(tmp, dst)

    # -- lifecycle

    def command(self):
        # Port 0: the kernel picks a free port and the host logs it; no race with other tests.
        cmd = [BIN, "--port", "0", "--plugins", self.plugins_dir, "--db", self.db]
        if self.admin_token is not None:
            cmd += ["--admin-token", self.admin_token]
        redis = None if self.single_node else e2e_redis_url()
        if redis and not any(str(f).startswith("--redis") for f in self.flags):
            cmd += ["--redis", redis]
        # WSHOST_E2E_ISOLATION=1 (make test-isolation): every host runs its functions in worker
        # processes, so the whole suite checks that mode too. A test's own --isolation wins.
        if ISOLATION and not any(f.startswith("--isolation") for f in self.flags):
            cmd += ["--isolation", "process"]
        # Under valgrind a loop turn can take seconds: the supervisor's heartbeat check would
        # take that slowness for a stopped process. A test's own --heartbeat-timeout wins.
        if VALGRIND and not any(str(f).startswith("--heartbeat-timeout") for f in self.flags):
            cmd += ["--heartbeat-timeout", "120"]
        # The suite's hosts drain for 3 s at most (the default is 10 s): a test's own wins.
        if not any(str(f).startswith("--drain-timeout") for f in self.flags):
            cmd += ["--drain-timeout", "3"]
        return cmd + self.flags

    def start(self, wait=True):
        if not os.access(BIN, os.X_OK):
            raise Fail(f"host binary {BIN} does not exist")
        env = {k: v for k, v in os.environ.items() if not k.startswith("WSHOST_")}
        env.update(self.env)
        for attempt in range(1):
            self.port = None
            self.starts += 1
            self.log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
            with open(self.log_path, "ab") as log:
                log.write(f"==== start {self.starts}: {' '.join(self.command())}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(VALGRIND + self.command(), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=env, cwd=self.tmp)
            self.returncode = None
            if not wait:
                return self
            try:
                self.wait_ready()
                return self
            except Fail:
                # Lost a race for the port with a parallel test: try another one.
                if self.proc.poll() is not None and "in use" in self.log_since_start().lower():
                    continue
                raise
        raise Fail("could not find a free port in 3 attempts\n" + self.log())

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Fail(f"host exited with {self.proc.returncode} during start-up; log:\n"
                           + self.log_since_start())
            if self.port is None:
                m = re.search(r"listening on port (\d+)", self.log_since_start())
                if not m:
                    time.sleep(0.01)
                    continue
                self.port = int(m.group(1))
            try:
                if self.http("GET", "/_/healthz", timeout=1).status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.03)
        raise Fail(f"host not answering /_/healthz 200 after {timeout}s; log:\n"
                   + self.log_since_start())

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=STOP_TIMEOUT):
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise Fail(f"host did not exit within {timeout}s; killed. log:\n"
                       + self.log_tail())
        return self.returncode

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM and wait; returns the exit code (negative: killed by that signal)."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill9(self):
        self.proc.kill()
        self.returncode = self.proc.wait(5)
        return self.returncode

    def serving_pid(self, timeout=5.0):
        """The pid of the serving process: the host's PID (self.proc.pid) is its supervisor,
        which forks the process that runs plugins and holds the connections."""
        return wait_until(lambda: children_of(self.proc.pid), timeout,
                          what="the serving process")[0]

    def cleanup(self):
        """Stops the host if still running. Returns a problem description or None."""
        problem = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                code = self.stop()
                if code is not None and code < 0:
                    problem = f"host died with signal {-code} on SIGTERM"
            except Fail as e:
                problem = str(e)
        if self.returncode is not None and self.returncode < 0 \
                and self.returncode != -signal.SIGKILL and problem is None:
            problem = f"host died with signal {-self.returncode}"
        text = self.log()
        for marker in ("AddressSanitizer", "LeakSanitizer", "ThreadSanitizer", "runtime error:"):
            if marker in text:
                problem = (problem + "; " if problem else "") + f"sanitizer report ({marker})"
        if VALGRIND and re.search(r"ERROR SUMMARY: [1-9]", text):
            problem = (problem + "; " if problem else "") + "valgrind report (ERROR SUMMARY)"
        return problem

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc):
        problem = self.cleanup()
        if problem and exc[0] is None:
            raise Fail(problem + "\n" + self.log_tail())
        return False

    # -- logs

    def log(self, raw=False):
        """What the host wrote (all starts). raw=True keeps the harness's own
        "==== start" lines with the command lines."""
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
        if raw:
            return text
        return "".join(l for l in text.splitlines(True) if not l.startswith("==== start "))

    def log_since_start(self):
        with open(self.log_path, "rb") as f:
            f.seek(self.log_offset)
            return f.read().decode("utf-8", "replace")

    def log_tail(self, lines=40):
        return "\n".join(self.log(raw=True).splitlines()[-lines:])

    def wait_log(self, pattern, timeout=5.0):
        """Waits until a log line matches the regex; returns the match."""
        rx = re.compile(pattern)
        return wait_until(lambda: rx.search(self.log()), timeout, what=f"log line /{pattern}/")

    # -- clients

    def http(self, method, path, body=None, headers=None, json_body=None, timeout=10,
             auth=False):
        return http_request(self.port, method, path, body, headers, json_body, timeout,
                            self.admin_token if auth is True else auth or None)

    async def ahttp(self, *a, **kw):
        return await asyncio.to_thread(self.http, *a, **kw)

    def ws_url(self, query="", path="/"):
        return f"ws://127.0.0.1:{self.port}{path}" + (("?" + query) if query else "")

    async def ws(self, query="", path="/", **kw):
        return await ws_connect(self.ws_url(query, path), **kw)

    async def user(self, query="", path="/"):
        """Connects through the example __websocket__ and returns (ws, greeting dict)."""
        ws = await self.ws(query, path)
        greeting = await recv_json(ws)
        return ws, greeting

    def raw(self, path="/", timeout=5.0, **kw):
        return RawWS(self.port, path, timeout, **kw)

    def sql(self, query, params=()):
        return sql_rows(self.db, query, params)

    def sql_cli(self, query, timeout=10):
        """The operator's way (CONTRACT 3): the sqlite3 command line tool."""
        return subprocess.run(["sqlite3", self.db, query], capture_output=True, text=True,
                              timeout=timeout)

    def online_users(self):
        return [r[0] for r in self.sql("SELECT user_id FROM online_users")]

    def push(self, user_id, message, admin=False):
        """/push (or /_/push with admin=True); returns the Response."""
        path = "/_/push" if admin else "/push"
        return self.http("POST", path, json_body={"user_id": user_id, "message": message},
                         auth=admin)

    async def apush(self, user_id, message, admin=False):
        return await asyncio.to_thread(self.push, user_id, message, admin)


def sql_rows(db, query, params=()):
    # mode=rw: never creates the file; a fresh connection each call sees the latest commit.
    con = sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=5)
    try:
        return con.execute(query, params).fetchall()
    finally:
        con.close()


# ---------------------------------------------------------------------------------------
# HTTP


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # dict, lower-case names
        self.body = body  # bytes
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        b = self.text if len(self.body) < 500 else self.text[:500] + "..."
        return f"<Response {self.status} {self.headers} {b!r}>"


def http_request(port, method, path, body=None, headers=None, json_body=None, timeout=10,
                 bearer=None):
    headers = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body)
        headers.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    if bearer:
        headers["Authorization"] = "Bearer " + bearer
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def http_upload(port, path, total, headers=None, method="POST", chunk=64 * 1024, timeout=30,
                content_type="application/octet-stream", chunked=False):
    """Sends a body of `total` bytes ('a's) while watching for an early response (a 413 may
    come before the body is read). Returns the Response; survives the server closing."""
    import select
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {total}\r\n"
        for k, v in (headers or {}).items():
            head += f"{k}: {v}\r\n"
        s.sendall((head + "\r\n").encode())
        s.setblocking(False)
        sent, got, closed = 0, b"", False
        block = b"a" * chunk
        pending = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            want_write = sent < total or pending
            r, w, _ = select.select([s], [s] if want_write else [], [], 0.5)
            if r:
                try:
                    d = s.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    d = b""
                if not d:
                    closed = True
                got += d
                resp = _parse_http_response(got, closed)
                if resp:
                    return resp
                if closed:
                    break
            if w and want_write:
                if not pending:
                    n = min(chunk, total - sent)
                    pending = (f"{n:x}\r\n".encode() + block[:n] + b"\r\n") if chunked \
                        else block[:n]
                    sent += n
                    if chunked and sent == total:
                        pending += b"0\r\n\r\n"
                try:
                    k = s.send(pending)
                    pending = pending[k:]
                except BlockingIOError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    sent, pending = total, b""  # server stopped reading: wait for the answer
        raise Fail(f"no complete HTTP response (sent {sent} of {total}; got {got[:300]!r})")
    finally:
        s.close()


def _parse_http_response(data, closed):
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    body = data[end + 4:]
    if "content-length" in headers:
        n = int(headers["content-length"])
        if len(body) < n:
            return None
        return Response(status, headers, body[:n])
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out, rest = b"", body
        while True:
            nl = rest.find(b"\r\n")
            if nl < 0:
                return None
            n = int(rest[:nl].split(b";")[0], 16)
            if len(rest) < nl + 2 + n + 2:
                return None
            out += rest[nl + 2:nl + 2 + n]
            rest = rest[nl + 2 + n + 2:]
            if n == 0:
                return Response(status, headers, out)
    return Response(status, headers, body) if closed else None


# ---------------------------------------------------------------------------------------
# WebSocket (python3-websockets)


async def ws_connect(url, timeout=10, **kw):
    kw.setdefault("max_size", None)  # the tests decide what is too big, not the client
    kw.setdefault("ping_interval", None)
    kw.setdefault("close_timeout", 5)
    return await websockets.connect(url, open_timeout=timeout, **kw)


async def recv(ws, timeout=5.0):
    """Next message (str or bytes); Fail on timeout. ConnectionClosed propagates."""
    try:
        return await asyncio.wait_for(ws.recv(), timeout)
    except asyncio.TimeoutError:
        raise Fail(f"no message within {timeout}s") from None


async def recv_json(ws, timeout=5.0):
    m = await recv(ws, timeout)
    try:
        return json.loads(m)
    except (ValueError, TypeError):
        raise Fail(f"expected a JSON message, got {m!r}") from None


async def no_message(ws, timeout=0.3):
    """Asserts nothing arrives within timeout (a short, bounded look)."""
    try:
        m = await asyncio.wait_for(ws.recv(), timeout)
    except asyncio.TimeoutError:
        return
    raise Fail(f"unexpected message {m!r}")


async def expect_close(ws, timeout=5.0):
    """Reads (and discards) messages until the server closes; returns (code, reason)."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail(f"connection not closed within {timeout}s")
            await asyncio.wait_for(ws.recv(), left)
    except asyncio.TimeoutError:
        raise Fail(f"connection not closed within {timeout}s") from None
    except websockets.ConnectionClosed as e:
        return e.code, e.reason


async def go_offline(h, ws, uid):
    """Closes the connection and waits until the db no longer lists the user online, so a
    push that follows is queued, not sent to a dying socket."""
    await ws.close()
    await async_wait_until(lambda: asyncio.to_thread(lambda: uid not in h.online_users()),
                           timeout=5, what=f"{uid} to leave online_users")


async def send_until_closed(ws, data):
    """Sends data; the server may close mid-send (it refuses a message as soon as it knows
    enough), which is then not an error here: expect_close() reads the code."""
    try:
        await ws.send(data)
    except websockets.ConnectionClosed:
        pass


def is_greeting(m):
    if not isinstance(m, str) or not m.startswith("{"):
        return False
    try:
        return json.loads(m).get("event") == "connected"
    except (ValueError, AttributeError):
        return False


async def collect(ws, n, timeout=5.0, greeting_expected=True):
    """Reads until the greeting and n other messages arrived; returns (greeting dict or
    None, [other messages in order]). The outbox may be delivered before or after the
    connection handler's greeting, so both orders are accepted."""
    greeting, others = None, []
    deadline = time.monotonic() + timeout
    while len(others) < n or (greeting_expected and greeting is None):
        left = deadline - time.monotonic()
        if left <= 0:
            raise Fail(f"got {len(others)} of {n} messages within {timeout}s: {others!r} "
                       f"(greeting: {greeting})")
        m = await recv(ws, left)
        if greeting is None and is_greeting(m):
            greeting = json.loads(m)
        else:
            others.append(m)
    return greeting, others


# ---------------------------------------------------------------------------------------
# Raw WebSocket over TCP: hand-made frames


OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class RawWS:
    """A WebSocket client that sends exactly the frames it is told to."""

    def __init__(self, port, path="/", timeout=5.0, extra_headers="", rcvbuf=None):
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:  # before connect, so the window stays small: a slow reader
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n{extra_headers}\r\n")
        self.sock.sendall(req.encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            d = self._recv_some()
            if not d:
                raise Fail(f"connection closed during handshake: {self.buf!r}")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.response_head = head.decode("latin-1")
        if not self.response_head.startswith("HTTP/1.1 101"):
            raise Fail(f"upgrade refused: {self.response_head!r}")
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        if accept.lower() not in self.response_head.lower():
            raise Fail(f"bad Sec-WebSocket-Accept in {self.response_head!r}")

    def _recv_some(self):
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            raise Fail(f"raw socket: nothing received within {self.timeout}s") from None
        except ConnectionResetError:
            d = b""
        self.buf += d
        return d

    @staticmethod
    def frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length=None):
        if isinstance(payload, str):
            payload = payload.encode()
        n = len(payload) if length is None else length
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        m = 0x80 if mask else 0
        if n < 126:
            head = struct.pack("!BB", b0, m | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, m | 126, n)
        else:
            head = struct.pack("!BBQ", b0, m | 127, n)
        if mask:
            key = os.urandom(4)
            masked = bytes(c ^ key[i % 4] for i, c in enumerate(payload)) \
                if len(payload) < 4096 else _mask_fast(payload, key)
            return head + key + masked
        return head + payload

    def send_frame(self, opcode, payload=b"", **kw):
        self.send_bytes(self.frame(opcode, payload, **kw))

    def send_bytes(self, data):
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may already have closed; the test reads why

    def send_close(self, code=1000, reason=""):
        self.send_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode())

    def recv_frame(self):
        """(fin, opcode, payload) of the next frame, or None when the TCP stream ended."""
        def need(k):
            while len(self.buf) < k:
                if not self._recv_some():
                    return False
            return True
        if not need(2):
            return None
        b0, b1 = self.buf[0], self.buf[1]
        n, off = b1 & 0x7F, 2
        if n == 126:
            if not need(4):
                return None
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            if not need(10):
                return None
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        if b1 & 0x80:
            raise Fail("server sent a masked frame")
        if not need(off + n):
            return None
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_message(self):
        """(opcode, data) of the next data message (pings answered, fragments joined);
        ('close', (code, reason)) for a close frame; None for the end of the stream."""
        parts, first = [], None
        while True:
            f = self.recv_frame()
            if f is None:
                return None
            fin, op, payload = f
            if op == OP_PING:
                self.send_frame(OP_PONG, payload)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                return "close", (code, payload[2:].decode("utf-8", "replace"))
            if first is None:
                first = op
            parts.append(payload)
            if fin:
                data = b"".join(parts)
                return first, (data.decode() if first == OP_TEXT else data)

    def expect_close(self):
        """Reads until the server's close frame; returns (code, reason), or (None, None) if
        the stream ended without one. Data messages before it are discarded."""
        while True:
            m = self.recv_message()
            if m is None:
                return None, None
            if m[0] == "close":
                return m[1]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def door_close(port, query="", extra_headers=""):
    """Auth at the door as a browser sees it: the upgrade gets its 101, then the first frame
    is the server's close. Returns (code, reason, seconds from the 101 to the close); fails
    on any frame before it or a stream that ends without one."""
    t0 = time.monotonic()
    w = RawWS(port, "/?" + query if query else "/", extra_headers=extra_headers)
    try:
        f = w.recv_frame()
        took = time.monotonic() - t0
        if f is None:
            raise Fail("the stream ended without a close frame")
        fin, op, payload = f
        if op != OP_CLOSE:
            raise Fail(f"a frame before the close: opcode {op} {payload[:80]!r}")
        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        w.send_close(code)
        return code, payload[2:].decode("utf-8", "replace"), took
    finally:
        w.close()


def _mask_fast(payload, key):
    n = len(payload)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")


# ---------------------------------------------------------------------------------------
# The runner


# What ctest counts as "Not Run" rather than passed (SKIP_RETURN_CODE in CMakeLists.txt).
SKIP_EXIT = 77


class Skip(Exception):
    """Raised by skip(): the test cannot run on this machine. It is reported as SKIP with the
    reason, never counted as passed."""


def skip(reason):
    raise Skip(reason)


def skip_file(reason):
    """Every test of the file is skipped (e.g. a server it needs is not installed)."""
    print(f"SKIP all tests: {reason}", flush=True)
    sys.exit(SKIP_EXIT)


def run(namespace, test_timeout=240):
    """Runs every test_* function of the namespace (definition order; argv names filter).
    Async tests run in a fresh event loop each, bounded by test_timeout."""
    tests = [(n, f) for n, f in namespace.items()
             if n.startswith("test_") and inspect.isfunction(f)
             and f.__module__ == namespace.get("__name__")]
    only = set(sys.argv[1:])
    if only:
        unknown = sorted(only - {t[0] for t in tests})
        if unknown:
            # A mistyped filter must not pass by running nothing.
            print(f"no such test: {' '.join(unknown)} (have: {' '.join(t[0] for t in tests)})",
                  flush=True)
            sys.exit(2)
        tests = [t for t in tests if t[0] in only]
    if not tests:
        print("no test to run", flush=True)
        sys.exit(2)
    passed = failed = skipped = 0
    for name, fn in tests:
        Host.all_hosts.clear()
        if e2e_redis_url():
            e2e_redis_call(b"FLUSHALL")  # each test starts with an empty cluster
        t0 = time.monotonic()
        error = skipped_why = None
        try:
            if inspect.iscoroutinefunction(fn):
                asyncio.run(asyncio.wait_for(fn(), test_timeout))
            else:
                fn()
        except Skip as e:
            skipped_why = str(e) or "no reason given"
        except asyncio.TimeoutError:
            error = f"test timed out after {test_timeout}s"
        except Exception as e:  # noqa: BLE001 - report everything
            error = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        for h in Host.all_hosts:
            problem = h.cleanup()
            if problem and not error:
                error = f"after the test: {problem}"
            if error:
                error += f"\n--- host log ({h.log_path}), last lines:\n{h.log_tail()}"
        dt = time.monotonic() - t0
        if error:
            failed += 1
            print(f"FAIL {name} ({dt:.1f}s): {error}", flush=True)
        elif skipped_why is not None:
            skipped += 1
            print(f"SKIP {name}: {skipped_why}", flush=True)
        else:
            passed += 1
            print(f"PASS {name} ({dt:.1f}s)", flush=True)
        for h in Host.all_hosts:
            if not error:
                shutil.rmtree(h.tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    if failed:
        sys.exit(1)
    sys.exit(SKIP_EXIT if skipped and not passed else 0)


# Room test functions (tests/plugins/rooms_ws.c) answer each command with "ok <command> ...".
SKIPPED = {}  # id(ws) -> room traffic cmd() read past while waiting for its answer


async def drain(ws, timeout=0.3):
    """Everything that arrived (also while cmd() waited) until timeout passes quietly."""
    out = SKIPPED.pop(id(ws), [])
    while True:
        try:
            out.append(await asyncio.wait_for(ws.recv(), timeout))
        except asyncio.TimeoutError:
            return out


async def cmd(ws, text, timeout=5.0):
    """Sends a command and returns the rest of its "ok <command> " answer; room traffic that
    arrives meanwhile is kept for drain()."""
    await ws.send(text)
    name = text.split(" ", 1)[0]
    deadline = time.monotonic() + timeout
    while True:
        m = await recv(ws, max(0.05, deadline - time.monotonic()))
        if m.startswith(f"ok {name} "):
            return m[len(f"ok {name} "):]
        SKIPPED.setdefault(id(ws), []).append(m)
