"""Hot reload end to end (CONTRACT 4): functions swapped under live WebSocket clients
by `mv` and `cp`, bad files refused while the old version keeps serving, cloud_shared kept
across versions, CLOUD_INIT / CLOUD_FINI, world-writable files, functions added and removed
without restart, __websocket__.so deleted and restored, and a function built with the CMake
helper add_cloud_function.

Versions of tests/plugins/reload_ws.c are compiled here with CONTRACT 2's one-line command
(-DVERSION=N); every answer names the version that gave it ("vN:<message>")."""

import asyncio
import atexit
import os
import shutil
import subprocess
import tempfile

from harness import *  # noqa: F401,F403

RELOAD_SRC = os.path.join(SOURCE_DIR, "tests", "plugins", "reload_ws.c")
SDK_INCLUDE = os.path.join(SOURCE_DIR, "sdk", "include")
SWITCH_BOUND = 1.0  # seconds from a good deploy until every client is answered by it

_builds = tempfile.mkdtemp(prefix="wshost-reload-builds-")
atexit.register(shutil.rmtree, _builds, True)
_built = {}


def build(tag, source=RELOAD_SRC, defines=()):
    """cc -shared -fPIC -I sdk/include <source> -o <tag>.so -ljansson (CONTRACT 2); cached."""
    if tag not in _built:
        out = os.path.join(_builds, tag + ".so")
        cmd = ["cc", "-shared", "-fPIC", "-I", SDK_INCLUDE, *("-D" + d for d in defines),
               source, "-o", out, "-ljansson"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stderr}"
        _built[tag] = out
    return _built[tag]


def version(n):
    return build(f"v{n}", defines=[f"VERSION={n}"])


def init_fail(n):
    return build(f"v{n}-init-fail", defines=[f"VERSION={n}", "INIT_FAIL"])


def no_entry_point():
    src = os.path.join(_builds, "no_entry.c")
    with open(src, "w") as f:
        f.write("int not_a_cloud_function(void) { return 42; }\n")
    return build("no-entry", source=src)


def live(h, name):
    return os.path.join(h.plugins_dir, name + ".so")


def deploy_mv(h, src, name="__websocket__", mode=0o644):
    """Copies src next to the plugins dir (same file system), then `mv`s it in: an atomic
    rename, the way a deploy should be done. Returns the monotonic time of the rename."""
    stage = os.path.join(h.tmp, "stage")
    os.makedirs(stage, exist_ok=True)
    staged = os.path.join(stage, name + ".so")
    shutil.copyfile(src, staged)
    os.chmod(staged, mode)
    t = time.monotonic()
    r = subprocess.run(["mv", "-f", staged, live(h, name)], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr
    return t


def deploy_cp(h, src, name="__websocket__"):
    """`cp` over the live file: the same inode rewritten in place."""
    t = time.monotonic()
    r = subprocess.run(["cp", src, live(h, name)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return t


def status(h, name):
    r = h.http("GET", "/_/status", auth=True)
    assert r.status == 200, r
    return (r.json.get("plugins") or {}).get(name)


def shared_value(h, key):
    r = h.http("GET", "/shared?key=" + key)
    assert r.status == 200, r
    return r.json


def reload_host(v=1, **kw):
    return Host(plugins={"__websocket__": version(v), "shared": tplugin("shared")}, **kw)


def refused_re(h, name, reason, keeps):
    path = re.escape(live(h, name))
    return rf"plugin {path} refused: {reason}[^\n]*; version {keeps} keeps serving"


def count_matches(h, pattern):
    return len(re.findall(pattern, h.log()))


async def wait_log_count(h, pattern, n, timeout=3.0):
    await async_wait_until(lambda: count_matches(h, pattern) >= n, timeout,
                           what=f"{n} log lines /{pattern}/")


async def ask(ws, text, timeout=5.0):
    await ws.send(text)
    return await recv(ws, timeout)


async def connect_v(h, expect_version):
    ws = await h.ws()
    g = await recv_json(ws)
    assert g.get("event") == "connected" and g.get("version") == expect_version, g
    return ws


# ---------------------------------------------------------------------------------------
# 20 clients in a request/answer loop through good and bad deploys


class LoopClient:
    """Sends "c<i>-<seq>" and waits for its answer "v<N>:c<i>-<seq>", over and over."""

    def __init__(self, i, ws):
        self.i, self.ws = i, ws
        self.sent = self.answered = 0
        self.version = None  # version of the last answer
        self.last_at = 0.0  # monotonic time of the last answer
        self.runs = []  # versions in the order they answered, repeats collapsed
        self.error = None

    async def loop(self, stop):
        seq = 0
        try:
            while not stop.is_set():
                seq += 1
                msg = f"c{self.i}-{seq}"
                await self.ws.send(msg)
                self.sent += 1
                answer = await recv(self.ws, 5.0)
                v, _, echoed = answer.partition(":")
                if echoed != msg or not v.startswith("v"):
                    raise Fail(f"client {self.i}: sent {msg!r}, answered {answer!r}")
                self.answered += 1
                self.version = int(v[1:])
                self.last_at = time.monotonic()
                if not self.runs or self.runs[-1] != self.version:
                    self.runs.append(self.version)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = f"client {self.i} after {self.answered} answers: {type(e).__name__}: {e}"
            stop.set()


async def test_twenty_clients_through_good_and_bad_deploys():
    v1, v2, bad_elf = version(1), version(2), no_entry_point()
    with reload_host(1) as h:
        clients = [LoopClient(i, await connect_v(h, 1)) for i in range(20)]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(c.loop(stop)) for c in clients]
        switch_times = []

        def check_alive(what):
            assert h.running(), f"host died after {what}"
            errors = [c.error for c in clients if c.error]
            assert not errors, f"after {what}: " + "; ".join(errors[:5])

        async def expect_switch(t0, v, what, load_number):
            def switched():
                check_alive(what)
                return all(c.version == v and c.last_at > t0 for c in clients)
            deadline = t0 + SWITCH_BOUND
            while not switched():
                assert time.monotonic() < deadline, (
                    f"{what}: not every client answered by v{v} within {SWITCH_BOUND}s: "
                    f"{[c.version for c in clients]}")
                await asyncio.sleep(0.005)
            switch_times.append(time.monotonic() - t0)
            st = status(h, "__websocket__")
            assert st["version"] == load_number and st["last_error"] is None, st

        async def expect_refused(t0, reason, keeps_v, keeps_number, nth):
            pattern = refused_re(h, "__websocket__", reason, keeps_number)
            await wait_log_count(h, pattern, nth)
            st = status(h, "__websocket__")
            assert st["version"] == keeps_number, st
            assert st["last_error"] and re.match(reason, st["last_error"]), st
            await asyncio.sleep(0.5)  # the clients keep going on the old version
            check_alive(f"refused {reason}")
            assert all(c.version == keeps_v and c.last_at > t0 + 0.4 for c in clients), \
                [(c.version, round(c.last_at - t0, 3)) for c in clients]

        await asyncio.sleep(0.3)
        check_alive("start")
        assert all(c.answered > 0 and c.version == 1 for c in clients)

        # v1 -> v2: a file built elsewhere on the same file system, renamed in.
        await expect_switch(deploy_mv(h, v2), 2, "mv v2", 2)
        await asyncio.sleep(0.3)
        # v2 -> v1: cp over the live file (same inode rewritten in place).
        await expect_switch(deploy_cp(h, v1), 1, "cp v1", 3)
        await asyncio.sleep(0.3)
        # A shared object without an entry point: refused, v1 keeps serving.
        await expect_refused(deploy_mv(h, bad_elf), "no entry point", 1, 3, 1)
        # A text file named __websocket__.so, written in place: refused, v1 keeps serving.
        t0 = time.monotonic()
        with open(live(h, "__websocket__"), "w") as f:
            f.write("this is not a shared object\n")
        await expect_refused(t0, "not an ELF shared object", 1, 3, 1)
        # And a good one again.
        await expect_switch(deploy_mv(h, v2), 2, "mv v2 after the bad files", 4)
        await asyncio.sleep(0.3)

        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        check_alive("the last deploy")
        for c in clients:
            assert c.sent == c.answered, f"client {c.i}: {c.sent} sent, {c.answered} answered"
            assert c.runs == [1, 2, 1, 2], f"client {c.i} saw versions {c.runs}"
            assert c.ws.open, f"client {c.i} was disconnected"
        for c in clients:
            await c.ws.close()
        total = sum(c.answered for c in clients)
        print(f"  {total} messages answered; switch times (s): "
              + ", ".join(f"{t:.3f}" for t in switch_times), flush=True)


# ---------------------------------------------------------------------------------------


async def test_shared_counter_survives_reload():
    with reload_host(1) as h:
        ws = await connect_v(h, 1)
        for n in (1, 2, 3):
            assert await ask(ws, "count") == f"v1:count:{n}"
        t0 = deploy_mv(h, version(2))
        while (a := await ask(ws, "ping")) != "v2:ping":
            assert a == "v1:ping", a
            assert time.monotonic() < t0 + SWITCH_BOUND, "v2 not serving within 1 s"
            await asyncio.sleep(0.01)
        assert await ask(ws, "count") == "v2:count:4"
        assert await ask(ws, "count") == "v2:count:5"
        assert shared_value(h, "counter") == 5
        # And back to v1 by cp: it continues from v2's value.
        t0 = deploy_cp(h, version(1))
        while (a := await ask(ws, "ping")) != "v1:ping":
            assert time.monotonic() < t0 + SWITCH_BOUND, "v1 not serving within 1 s"
            await asyncio.sleep(0.01)
        assert await ask(ws, "count") == "v1:count:6"
        await ws.close()


async def test_init_failure_refused_and_fini_runs_on_swap():
    with reload_host(1) as h:
        assert shared_value(h, "lifecycle") == ["init 1"]
        ws = await connect_v(h, 1)
        assert await ask(ws, "a") == "v1:a"

        deploy_mv(h, init_fail(3))
        h.wait_log(refused_re(h, "__websocket__", "init returned 7", 1))
        st = status(h, "__websocket__")
        assert st["version"] == 1 and st["last_error"] == "init returned 7", st
        # Its init ran and failed; no fini for it, and v1 was not finished either.
        assert shared_value(h, "lifecycle") == ["init 1", "init 3 failed"]
        assert await ask(ws, "b") == "v1:b"

        t0 = deploy_mv(h, version(2))
        while (a := await ask(ws, "c")) != "v2:c":
            assert a == "v1:c", a
            assert time.monotonic() < t0 + SWITCH_BOUND, "v2 not serving within 1 s"
            await asyncio.sleep(0.01)
        # The new version's init before the old version's fini, each exactly once (the fini
        # runs on a thread of its own once v2 is swapped in: it may land a moment later).
        wait_until(lambda: len(shared_value(h, "lifecycle")) >= 4, timeout=5,
                   what="v1's fini")
        assert shared_value(h, "lifecycle") == ["init 1", "init 3 failed", "init 2", "fini 1"]
        st = status(h, "__websocket__")
        assert st["version"] == 2 and st["last_error"] is None, st
        await ws.close()


def test_world_writable_refused_new_function_served_removed_404():
    with reload_host(1) as h:
        not_found = {"error": "Function Not Found"}
        r = h.http("GET", "/counter")
        assert r.status == 404 and r.json == not_found, r

        # A world-writable file is refused (loading it would run anyone's code).
        deploy_mv(h, tplugin("counter"), "counter", mode=0o666)
        h.wait_log(re.escape(f"plugin {live(h, 'counter')} refused: writable by group or others"
                             " (mode 0666"))
        r = h.http("GET", "/counter")
        assert r.status == 404 and r.json == not_found, r
        st = status(h, "counter")
        assert st and not st["loaded"] and "writable" in st["last_error"], st

        # Fixing its mode is a change too: now it is served, without restart.
        os.chmod(live(h, "counter"), 0o644)
        r = wait_until(lambda: (lambda r: r if r.status == 200 else None)(h.http("GET", "/counter")),
                       SWITCH_BOUND, what="/counter served")
        assert r.json["calls"] == 1, r
        st = status(h, "counter")
        assert st["loaded"] and st["version"] == 1 and st["last_error"] is None, st

        # The live file made world-writable in place: refused, the loaded version keeps
        # serving; its mode fixed again: the error is over (the same file is serving).
        os.chmod(live(h, "counter"), 0o666)
        h.wait_log(refused_re(h, "counter", "writable by group or others", 1))
        assert "writable" in (status(h, "counter")["last_error"] or "")
        os.chmod(live(h, "counter"), 0o644)
        wait_until(lambda: status(h, "counter")["last_error"] is None, SWITCH_BOUND,
                   what="last_error cleared after chmod 644")
        st = status(h, "counter")
        assert st["version"] == 1, st

        # A world-writable update of a live function: refused, the old version keeps serving.
        deploy_mv(h, tplugin("counter"), "counter", mode=0o666)
        refused = refused_re(h, "counter", "writable by group or others", 1)
        wait_until(lambda: count_matches(h, refused) >= 2, 3, what="a second refusal")
        r = h.http("GET", "/counter")
        assert r.status == 200 and r.json["calls"] == 2, r
        os.chmod(live(h, "counter"), 0o644)
        wait_until(lambda: status(h, "counter")["version"] == 2, SWITCH_BOUND,
                   what="counter version 2")

        # A brand-new function dropped in is served over HTTP without restart.
        t0 = deploy_mv(h, tplugin("counter"), "counter2")
        wait_until(lambda: h.http("GET", "/counter2").status == 200, SWITCH_BOUND,
                   what="/counter2 served")
        assert time.monotonic() - t0 < SWITCH_BOUND

        # A removed one answers 404.
        os.unlink(live(h, "counter"))
        r = wait_until(lambda: (lambda r: r if r.status == 404 else None)(h.http("GET", "/counter")),
                       SWITCH_BOUND, what="/counter 404 after rm")
        assert r.json == not_found, r
        h.wait_log(re.escape(f"plugin {live(h, 'counter')} removed: version 2 unloaded"))
        assert h.http("GET", "/counter2").status == 200
        assert h.running()


def test_plugins_folder_made_writable_at_runtime_refuses_loads():
    """The folder is checked on every load, not only at start: made group/other-writable
    while the host runs, nothing new loads from it (the serving version stays); fixed, the
    next deploy loads."""
    with reload_host(1) as h:
        deploy_mv(h, tplugin("counter"), "counter")
        wait_until(lambda: h.http("GET", "/counter").status == 200, SWITCH_BOUND,
                   what="/counter served")
        os.chmod(h.plugins_dir, 0o777)
        try:
            deploy_mv(h, tplugin("counter"), "counter")
            h.wait_log(re.escape(f"plugins folder {os.path.realpath(h.plugins_dir)}: "
                                 "writable by group or others"))
            st = status(h, "counter")
            assert st["version"] == 1 and "plugins folder" in st["last_error"], st
            assert h.http("GET", "/counter").status == 200, "the serving version must stay"
        finally:
            os.chmod(h.plugins_dir, 0o755)
        os.utime(live(h, "counter"))  # a deploy after the fix
        wait_until(lambda: status(h, "counter")["version"] == 2, SWITCH_BOUND,
                   what="counter version 2 after the folder was fixed")
        assert h.running()


async def test_delete_websocket_function_then_restore():
    """Host behaviour (decided): deleting __websocket__.so unloads it; live connections stay
    open and their events are dropped with a warning (no answer, no close); new upgrades get
    503 until a file is back; then the same open connections are served by the new file."""
    with reload_host(1) as h:
        conns = [await connect_v(h, 1) for _ in range(3)]
        for i, ws in enumerate(conns):
            assert await ask(ws, f"before{i}") == f"v1:before{i}"

        os.unlink(live(h, "__websocket__"))
        h.wait_log(re.escape(f"plugin {live(h, '__websocket__')} removed: version 1 unloaded"))
        st = status(h, "__websocket__")
        assert st["loaded"] is False and "version" not in st, st
        assert shared_value(h, "lifecycle") == ["init 1", "fini 1"]

        dropped = r"warn +ws __websocket__ \S+ WebSocket:message dropped: no __websocket__\.so loaded"
        for i, ws in enumerate(conns):
            await ws.send(f"lost{i}")
        for ws in conns:
            await no_message(ws, 0.5)
            assert ws.open, "a live connection was closed when its function went away"
        await wait_log_count(h, dropped, 3)

        try:
            extra = await h.ws()
        except websockets.InvalidStatusCode as e:
            assert e.status_code == 503, e
        else:
            await extra.close()
            raise Fail("upgrade accepted with no __websocket__.so")

        t0 = deploy_mv(h, version(2))
        wait_until(lambda: (status(h, "__websocket__") or {}).get("version") == 2,
                   SWITCH_BOUND, what="v2 loaded")
        assert time.monotonic() - t0 < SWITCH_BOUND
        for i, ws in enumerate(conns):
            assert await ask(ws, f"after{i}") == f"v2:after{i}"  # not the dropped "lost"
        new = await connect_v(h, 2)
        assert await ask(new, "hi") == "v2:hi"
        for ws in conns + [new]:
            await ws.close()
        assert shared_value(h, "lifecycle") == ["init 1", "fini 1", "init 2"]


async def test_cmake_add_cloud_function():
    """CONTRACT 2: `add_cloud_function(__websocket__ handler.c)` builds __websocket__.so (no "lib"
    prefix) in a project of its own, and the host hot-loads it."""
    proj = os.path.join(_builds, "cmake-project")
    os.makedirs(proj, exist_ok=True)
    shutil.copyfile(RELOAD_SRC, os.path.join(proj, "handler.c"))
    with open(os.path.join(proj, "CMakeLists.txt"), "w") as f:
        f.write("cmake_minimum_required(VERSION 3.18)\n"
                "project(my_function C)\n"
                f"include({SOURCE_DIR}/sdk/cmake/CloudFunction.cmake)\n"
                "add_cloud_function(__websocket__ handler.c)\n"
                "target_compile_definitions(__websocket__ PRIVATE VERSION=5)\n")
    out = os.path.join(proj, "build")
    for cmd in (["cmake", "-S", proj, "-B", out], ["cmake", "--build", out]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"{' '.join(cmd)}:\n{r.stdout}\n{r.stderr}"
    built = sorted(f for f in os.listdir(out) if f.endswith(".so"))
    assert built == ["__websocket__.so"], built

    with reload_host(1) as h:
        ws = await connect_v(h, 1)
        t0 = deploy_mv(h, os.path.join(out, "__websocket__.so"))
        while (a := await ask(ws, "x")) != "v5:x":
            assert a == "v1:x", a
            assert time.monotonic() < t0 + SWITCH_BOUND, "the CMake-built version not serving"
            await asyncio.sleep(0.01)
        new = await connect_v(h, 5)
        assert await ask(new, "count") == "v5:count:1"
        st = status(h, "__websocket__")
        assert st["version"] == 2 and st["last_error"] is None, st
        await ws.close()
        await new.close()


if __name__ == "__main__":
    run(globals())
