"""The supervisor restarts the serving process however it ends (exit 0 from a function, _exit,
a SIGTERM sent to it directly, a fatal signal) except on the SIGTERM it passed on itself, and
writes a crash record that says how it ended; it replaces a serving process whose event loop
stopped answering (SIGSTOP, an endless function in-process) after --heartbeat-timeout, with
SIGKILL and a record saying so; a worker that dies while a child it forked holds its socket is
seen by its pid (502 at once, not 504 at the deadline). docs/OPERATIONS.md, "The supervisor"."""

import asyncio
import os
import signal
import time

from harness import *  # noqa: F401,F403

# A heartbeat timeout short enough to keep the tests quick, long enough for a loaded machine.
HB = 3


def in_process(*flags):
    return ["--isolation", "none", *flags]


def healthz_ok(h):
    try:
        return h.http("GET", "/_/healthz", timeout=1).status == 200
    except (OSError, http.client.HTTPException):
        return False


def gone(pid):
    st = proc_stat(pid)
    return st is None or st[0] == "Z"


def replaced(h, old, timeout, what):
    """Waits for a serving process other than old that answers /_/healthz."""
    def back():
        kids = children_of(h.proc.pid) if h.running() else []
        return kids and kids[0] != old and gone(old) and healthz_ok(h)
    wait_until(back, timeout=timeout, interval=0.05, what=what)
    assert h.running(), "the supervisor itself stopped"
    return h.serving_pid()


def request_dies(h, path):
    """A request whose process ends under it: the client sees the connection go."""
    try:
        r = h.http("GET", path, timeout=5)
    except (OSError, http.client.HTTPException):
        return
    raise Fail(f"{path} was answered: {r}")


def last_crash(h):
    return h.http("GET", "/_/status", auth=True).json["crashes"][-1]


def plugins_with(**extra):
    p = {"__websocket__": example("__websocket__"), "push": example("push"),
         "echo": example("echo")}
    p.update({k: tplugin(v) for k, v in extra.items()})
    return p


async def test_exit0_in_a_function_restarts_and_users_resume():
    """exit(0) in a function used to stop the host for good (exit 0: systemd's on-failure
    does not restart). It is reported like a crash in that function: the service comes back,
    the build is quarantined, a user resumes with its id and what was queued meanwhile."""
    h = Host(plugins=plugins_with(exit_fn="exit_fn"), flags=in_process())
    with h:
        ws, g = await h.user()
        uid, token = g["user_id"], g["token"]
        first = h.serving_pid()
        await asyncio.to_thread(request_dies, h, "/exit_fn?do=exit&status=0")
        code, _ = await expect_close(ws, timeout=5)
        assert code == CLOSE_ABNORMAL, code
        await asyncio.to_thread(replaced, h, first, 10, "a new serving process after exit(0)")
        r = await h.apush(uid, "queued after the exit", admin=True)
        assert r.status == 200 and r.json == {"delivered": 0}, r
        h.wait_log(r"error exit_fn \S+ function exited: exit\(0\) in exit_fn version 1 "
                   rf"\(sha256 [0-9a-f]{{64}}\) request \S+, pid {first}")
        h.wait_log(rf"serving process {first} exited with status 0 \(exit\(\) called by a "
                   r"function\) in exit_fn version 1: version quarantined")
        last = last_crash(h)
        assert (last["end"], last["exit_status"], last["function"], last["pid"]) == \
            ("exit", 0, "exit_fn", first), last
        assert h.http("GET", "/exit_fn").status == 503, "the exiting build was not quarantined"
        assert h.http("GET", "/echo").status == 200
        ws = await h.ws(f"user_id={uid}&token={token}")
        greeting, msgs = await collect(ws, 1)
        assert greeting["user_id"] == uid and msgs == ["queued after the exit"], (greeting, msgs)
        await ws.close()
        assert h.stop() == 0


def test_exit_from_a_plugin_thread_is_pinned_on_its_function():
    """exit() on a thread the plugin started is found by its backtrace, like a fault there."""
    h = Host(plugins=plugins_with(exit_fn="exit_fn"), flags=in_process())
    with h:
        first = h.serving_pid()
        assert h.http("GET", "/exit_fn?do=thread").json == {"build": "exiting"}
        replaced(h, first, 10, "a new serving process after exit() on a plugin thread")
        h.wait_log(r"error exit_fn - function exited: exit\(0\) in exit_fn version 1")
        assert last_crash(h)["function"] == "exit_fn"
        assert h.http("GET", "/exit_fn").status == 503


def test_exit0_in_a_function_isolation_process_fails_one_request():
    """With --isolation process the function's exit(0) ends its worker, not the serving
    process: that request gets 502, the next ones a fresh worker."""
    h = Host(plugins=plugins_with(exit_fn="exit_fn"),
             flags=["--isolation", "process", "--workers", "1"])
    with h:
        first = h.serving_pid()
        r = h.http("GET", "/exit_fn?do=exit&status=0", timeout=15)
        assert r.status == 502 and r.json["error"] == "Function Crashed", r
        h.wait_log(r"worker 0 \(pid \d+\) exited with 0")
        wait_until(lambda: h.http("GET", "/exit_fn").status == 200, timeout=10,
                   what="a fresh worker")
        assert h.serving_pid() == first and h.running()


def test_exit0_in_a_constructor_at_start_is_quarantined_not_a_failed_start():
    """exit(0) while the first serving process loads the functions used to count as a failed
    start-up (the host exited 1); it is the function's: quarantined, and the host serves."""
    h = Host(plugins=plugins_with(exit_fn="exit_fn"), flags=in_process(),
             env={"EXIT_FN_AT_LOAD": "0"})
    with h:
        h.wait_log(r"error exit_fn load function exited: exit\(0\) in exit_fn version 1")
        assert last_crash(h)["function"] == "exit_fn"
        assert h.http("GET", "/exit_fn").status == 503
        assert h.http("GET", "/echo").status == 200


def test_exit_the_host_cannot_pin_restarts_with_a_record():
    """_exit(0) runs no exit hook: no function can be named, so nothing is quarantined, but
    the serving process is restarted and the supervisor writes the record."""
    h = Host(plugins=plugins_with(exit_fn="exit_fn"), flags=in_process())
    with h:
        first = h.serving_pid()
        request_dies(h, "/exit_fn?do=_exit&status=0")
        replaced(h, first, 10, "a new serving process after _exit(0)")
        h.wait_log(rf"serving process {first} exited with status 0; restarting")
        last = last_crash(h)
        assert (last["end"], last["exit_status"], last["by"], last["pid"]) == \
            ("exit", 0, "supervisor", first), last
        assert "function" not in last, last
        assert h.http("GET", "/exit_fn").json == {"build": "exiting"}, "quarantined anyway"


def test_sigterm_sent_to_the_serving_process_restarts_it():
    """Only the SIGTERM the supervisor passes on stops the host: one sent to the serving
    process itself (it drains and exits 0) is an end like any other."""
    h = Host(flags=in_process())
    with h:
        first = h.serving_pid()
        os.kill(first, signal.SIGTERM)
        replaced(h, first, 15, "a new serving process after SIGTERM to the old one")
        h.wait_log(rf"serving process {first} exited with status 0; restarting")
        assert h.stop() == 0, "the supervisor's own SIGTERM still stops the host with 0"


async def stop_and_replace(h):
    ws, g = await h.user()
    uid, token = g["user_id"], g["token"]
    first = h.serving_pid()
    os.kill(first, signal.SIGSTOP)
    try:
        # Replaced after the heartbeat timeout: a bound, with room for a loaded machine.
        await asyncio.to_thread(replaced, h, first, HB + 12, "the stopped process replaced")
    finally:
        if not gone(first):
            os.kill(first, signal.SIGKILL)
    h.wait_log(rf"serving process {first} stopped answering: no heartbeat from its event loop")
    last = last_crash(h)
    assert (last["end"], last["signal"], last["pid"]) == ("stopped answering", 9, first), last
    assert "stopped answering" in last["message"], last
    r = await h.apush(uid, "after the stop", admin=True)
    assert r.status == 200 and r.json == {"delivered": 0}, r
    ws2 = await h.ws(f"user_id={uid}&token={token}")
    greeting, msgs = await collect(ws2, 1)
    assert greeting["user_id"] == uid and msgs == ["after the stop"], (greeting, msgs)
    await ws2.close()


async def test_sigstop_of_the_serving_process_is_replaced():
    h = Host(flags=in_process("--heartbeat-timeout", str(HB)))
    with h:
        await stop_and_replace(h)


async def test_sigstop_of_the_serving_process_is_replaced_isolation_process():
    h = Host(flags=["--isolation", "process", "--workers", "1", "--heartbeat-timeout", str(HB)])
    with h:
        await stop_and_replace(h)


def test_endless_function_in_process_is_replaced():
    """In-process, a function that never returns holds the loop: no heartbeat, replaced, and
    the function is quarantined like one that crashed."""
    h = Host(plugins=plugins_with(crash="crash"), flags=in_process("--heartbeat-timeout", str(HB)))
    with h:
        first = h.serving_pid()
        try:
            h.http("GET", "/crash?do=loop", timeout=0.5)
        except (OSError, http.client.HTTPException):
            pass  # it never answers
        replaced(h, first, HB + 12, "the stuck process replaced")
        # The loop's thread was asked what held it: the function is named and quarantined,
        # so the next request cannot hold the loop again.
        h.wait_log(r"error crash \S+ function stopped answering: it held the event loop past "
                   r"--heartbeat-timeout in crash version 1")
        last = last_crash(h)
        assert (last["end"], last["function"], last["pid"]) == \
            ("stopped answering", "crash", first), last
        assert h.http("GET", "/crash?do=loop", timeout=5).status == 503
        assert h.http("GET", "/echo").status == 200


async def test_slow_connection_event_in_a_worker_is_not_a_stopped_loop():
    """With --isolation process the serving loop waits (bounded by --defer-timeout) for a
    worker's answer to the connection event: that wait beats, so a handler slower than the
    heartbeat timeout costs nothing but its own upgrade."""
    h = Host(plugins={"__websocket__": tplugin("slow_connect"), "echo": example("echo")},
             flags=["--isolation", "process", "--workers", "1", "--heartbeat-timeout", "2"])
    with h:
        first = h.serving_pid()
        ws = await h.ws("sleep=4", timeout=15)
        g = await recv_json(ws, timeout=10)
        assert g["event"] == "connected", g
        await ws.send("still here")
        assert await recv(ws) == "still here"
        await ws.close()
        assert h.serving_pid() == first, "the serving process was replaced"
        assert "stopped answering" not in h.log()


def test_heartbeat_timeout_0_never_replaces():
    h = Host(flags=in_process("--heartbeat-timeout", "0"))
    with h:
        first = h.serving_pid()
        os.kill(first, signal.SIGSTOP)
        try:
            time.sleep(HB + 1)
            assert children_of(h.proc.pid) == [first], "replaced with --heartbeat-timeout 0"
        finally:
            os.kill(first, signal.SIGCONT)
        wait_until(lambda: healthz_ok(h), timeout=5, what="healthz after SIGCONT")
        assert "stopped answering" not in h.log()


def kill_left_in(folder):
    """Kills what still runs in the host's folder (the children fork_crash left behind)."""
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and os.readlink(f"/proc/{d}/cwd") == folder:
                os.kill(int(d), signal.SIGKILL)
        except OSError:
            pass


async def test_worker_that_forks_then_dies_is_seen_by_its_pid():
    """A worker whose function forks a child (which keeps the worker's socket) and aborts:
    its socket never closes, but the serving process sees the death by the pid and fails the
    event at once: 502 (and 1011 for a WebSocket event), not the 504 of --defer-timeout."""
    h = Host(plugins={"__websocket__": tplugin("fork_crash"), "fork_crash": tplugin("fork_crash"),
                      "echo": example("echo")},
             flags=["--isolation", "process", "--workers", "1", "--defer-timeout", "30"])
    try:
        await fork_then_die(h)
    finally:
        kill_left_in(h.tmp)


async def fork_then_die(h):
    with h:
        t0 = time.monotonic()
        # The client's bound is well under --defer-timeout: a 504 cannot pass for it.
        try:
            r = await h.ahttp("GET", "/fork_crash?do=crash&hold=20", timeout=15)
        except OSError as e:  # socket.timeout included
            raise Fail(f"no answer within 15 s ({e!r}): the worker's death went unseen") from None
        assert r.status == 502 and r.json["error"] == "Function Crashed", r
        print(f"  502 after {time.monotonic() - t0:.2f}s")
        h.wait_log(r"worker 0 \(pid \d+\) died of signal 6 \(it died\)")
        wait_until(lambda: h.http("GET", "/fork_crash").status == 200, timeout=10,
                   what="a fresh worker")
        ws = await h.ws()
        await ws.send("crash")
        code, _ = await expect_close(ws, timeout=15)
        assert code == CLOSE_SERVER_ERROR, code
        assert h.http("GET", "/echo").status == 200


if __name__ == "__main__":
    run(globals())
