"""Command line and start-up checks (CONTRACT 4, 7; DECISIONS "Command line"): --help, env
variables, unknown flags, refusing writable plugin files and dirs."""

import os
import subprocess
import shutil
import tempfile
import time

from harness import *  # noqa: F401,F403

FLAGS = ["--port", "--plugins", "--db", "--admin-token", "--max-message", "--max-send-queue",
         "--max-body", "--max-header", "--max-connections", "--ping-interval", "--pong-timeout",
         "--outbox-max", "--outbox-ttl", "--admin-loopback-only", "--allowed-origins",
         "--tls-cert", "--tls-key", "--log-level", "--bind", "--admin-bind", "--config",
         "--print-config", "--version", "--admin-token-file", "--jwt-secret-file",
         "--redis-password-file", "--runtime-dir"]


def test_help_lists_flags():
    r = subprocess.run([BIN, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, f"--help exit {r.returncode}: {r.stderr}"
    out = r.stdout + r.stderr
    missing = [f for f in FLAGS if f not in out]
    assert not missing, f"--help does not list {missing}"


def test_readme_documents_every_flag():
    """The command-line table of docs/OPERATIONS.md lists every flag --help knows (and no
    stale one)."""
    import re
    r = subprocess.run([BIN, "--help"], capture_output=True, text=True, timeout=10)
    helped = set(re.findall(r"^  (--[a-z0-9-]+)", r.stdout + r.stderr, re.M))
    doc = open(os.path.join(SOURCE_DIR, "docs", "OPERATIONS.md")).read()
    start = doc.index("\n## Command line\n")
    end = doc.find("\n## ", start + 1)
    table = doc[start:end if end > 0 else len(doc)]
    documented = set(re.findall(r"^\| `(--[a-z0-9-]+)", table, re.M))
    assert helped - documented == set(), f"docs/OPERATIONS.md lacks {sorted(helped - documented)}"
    assert documented - helped == set(), f"docs/OPERATIONS.md has stale {sorted(documented - helped)}"


def test_unknown_flag_fails():
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSHOST_")}
    r = subprocess.run([BIN, "--no-such-flag"], capture_output=True, text=True, timeout=10,
                       env=env)
    assert r.returncode != 0, "unknown flag accepted"
    assert "no-such-flag" in r.stdout + r.stderr, "the error does not name the flag"
    r = subprocess.run([BIN, "--port", "notanumber"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode != 0, "--port notanumber accepted"


def test_bad_values_of_the_bound_and_log_flags_fail():
    """Values that would silently do something else are refused at start: a cross-thread
    bound that refuses every send, a journald mode or a JWT switch that is not one."""
    for flags, says in ((["--xthread-max-bytes", "0"], "--xthread-max-bytes"),
                        (["--log-journal", "sometimes"], "--log-journal"),
                        (["--jwt-require-exp", "maybe"], "--jwt-require-exp")):
        env = {k: v for k, v in os.environ.items() if not k.startswith("WSHOST_")}
        r = subprocess.run([BIN, *flags], capture_output=True, text=True, timeout=10, env=env)
        assert r.returncode == 2, (flags, r.returncode, r.stderr)
        assert says in r.stdout + r.stderr, (flags, r.stderr)


def test_version_prints_and_exits_0():
    r = subprocess.run([BIN, "--version"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, f"--version exit {r.returncode}: {r.stderr}"
    assert re.fullmatch(r"wshost \d+\.\d+\.\d+ \(ABI \d+, libwebsockets \d+\.\d+\.\d+\)\n",
                        r.stdout), repr(r.stdout)


def test_unknown_env_variable_fails_naming_the_nearest():
    """A typo in a WSHOST_* variable was silently ignored and the default used."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSHOST_")}
    env["WSHOST_MAX_CONECTIONS"] = "5"
    r = subprocess.run([BIN, "--db", ":memory:", "--port", "0"], capture_output=True, text=True,
                       timeout=10, env=env)
    assert r.returncode == 2, f"exit {r.returncode}: {r.stderr}"
    assert "WSHOST_MAX_CONECTIONS" in r.stderr and "WSHOST_MAX_CONNECTIONS" in r.stderr, r.stderr


def test_env_variable_sets_flag():
    with Host(plugins={"echo": example("echo")}, env={"WSHOST_MAX_BODY": "1024"}) as h:
        assert h.http("POST", "/echo", body="a" * 1024).status == 200
        r = h.http("POST", "/echo", body="a" * 1025)
        assert r.status == 413, f"WSHOST_MAX_BODY=1024 ignored: {r}"


def test_ready_log_line():
    with Host() as h:
        h.wait_log(rf"\binfo\b.*listening on port {h.port}\b")
        line = next(l for l in h.log().splitlines() if "listening on port" in l)
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z\s+info\s", line), \
            f"log line format: {line!r}"


def start_refusing(h):
    """Starts a host that should refuse its plugins: either it exits non-zero, or it runs
    without serving them. Returns True if it is running."""
    h.start(wait=False)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if h.proc.poll() is not None:
            assert h.proc.returncode != 0, "host exited 0 while refusing its plugins dir"
            return False
        try:
            if h.http("GET", "/_/healthz", timeout=1).status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    raise Fail("host neither started nor exited\n" + h.log())


def test_refuses_world_writable_plugins_dir():
    for mode in (0o777, 0o775):
        h = Host(plugins={"echo": example("echo")}, plugin_dir_mode=mode)
        if start_refusing(h):
            r = h.http("GET", "/echo")
            assert r.status != 200, f"plugins dir mode {oct(mode)}: echo was loaded"
        assert h.plugins_dir in h.log(), f"mode {oct(mode)}: refusal not logged:\n{h.log()}"
        h.cleanup()


def test_refuses_writable_plugin_file():
    for mode in (0o666, 0o664):
        h = Host(plugins={"echo": example("echo"), "push": example("push")})
        os.chmod(os.path.join(h.plugins_dir, "echo.so"), mode)
        with h:
            r = h.http("GET", "/echo")
            assert r.status != 200, f"echo.so mode {oct(mode)} was loaded"
            assert "echo" in h.log(), f"refusal of echo.so not logged:\n{h.log()}"
            r = h.http("POST", "/push", json_body={"user_id": "x"})
            assert r.status == 400, f"the good plugin next to it must still load: {r}"


def test_runtime_copies_of_dead_hosts_are_reaped():
    """Each host loads its plugins from private copies in <runtime dir>/wshost-<uid>-pid<pid>
    (with --port 0). A host killed with -9 cannot remove its folder: the next start does."""
    run_base = tempfile.mkdtemp(prefix="wshost-run-")
    try:
        h = Host(env={"XDG_RUNTIME_DIR": run_base})
        with h:
            mine = os.path.join(run_base, f"wshost-{os.geteuid()}-pid{h.proc.pid}")
            assert os.listdir(mine), f"no private copies in {mine}"
            h.kill9()
        assert os.path.isdir(mine), "a killed host cannot have cleaned up after itself"
        # a folder of a live process that is not a host must stay: use our own pid
        alive = os.path.join(run_base, f"wshost-{os.geteuid()}-pid{os.getpid()}")
        os.mkdir(alive)
        with Host(env={"XDG_RUNTIME_DIR": run_base}) as h2:
            assert not os.path.exists(mine), "the dead host's copies were not reaped"
            assert os.path.isdir(alive), "the folder of a live process was removed"
            assert h2.http("GET", "/echo").status == 200
    finally:
        shutil.rmtree(run_base, ignore_errors=True)


def test_memory_db_without_token_generates_one():
    """--db :memory: and no --admin-token: the token file still gets a home (data/, 0700)."""
    h = Host(admin_token=None, flags=["--db", ":memory:"])
    with h:
        path = os.path.join(h.tmp, "data", "admin-token")
        assert os.path.isfile(path), f"no {path}:\n{h.log()}"
        assert os.stat(path).st_mode & 0o777 == 0o600, oct(os.stat(path).st_mode)
        token = open(path).read().strip()
        r = h.http("GET", "/_/status", headers={"Authorization": "Bearer " + token})
        assert r.status == 200, r


if __name__ == "__main__":
    run(globals())
