"""--isolation process (CONTRACT 9): functions run in worker processes.
A crash fails only the event that was running (its connection gets 1011, its HTTP request
502) and the worker is replaced while every other connection keeps its answers; a function
that blocks stalls only its own worker; one connection's events stay in order; SIGTERM ends
the host even while a function spins forever."""

import asyncio
import hashlib
import os
import signal
import tempfile
import threading
import time

from harness import *  # noqa: F401,F403

ISO = ["--isolation", "process"]


def worker_starts(h):
    return h.log().count(" started (pid ")


async def echo_once(ws, text, timeout=10.0):
    t0 = time.monotonic()
    await ws.send(text)
    got = await recv(ws, timeout)
    assert got == text, f"sent {text!r}, got {got!r}"
    return time.monotonic() - t0


def test_ws_crash_fails_only_its_connection():
    h = Host(plugins={"__websocket__": tplugin("crash")}, flags=ISO + ["--workers", "2"])
    with h:
        serving = h.serving_pid()

        async def go():
            others = []
            for i in range(20):
                ws = await h.ws()
                await recv_json(ws)
                others.append(ws)
            victim = await h.ws()
            await recv_json(victim)
            for i, ws in enumerate(others):
                await echo_once(ws, f"before-{i}")
            starts = worker_starts(h)
            await victim.send("segv")
            code, reason = await expect_close(victim, 10)
            assert code == CLOSE_SERVER_ERROR, f"crashing client saw {code} {reason}, not 1011"
            # Every other client still has its connection and its answers.
            for i, ws in enumerate(others):
                await echo_once(ws, f"after-{i}")
            wait_until(lambda: worker_starts(h) > starts, 10, what="a replacement worker")
            for ws in others:
                await ws.close()
        asyncio.run(go())
        assert h.serving_pid() == serving, "the serving process was restarted"
        log = h.log()
        assert "function crashed: SIGSEGV" in log, log[-3000:]
        assert "crash_deref_null" in log, "no backtrace frame names the plugin's function"
        assert re.search(r"worker \d+ \(pid \d+\) died of signal 11", log), log[-3000:]


def test_http_crash_is_502_and_the_next_request_is_served():
    h = Host(plugins={"crash": tplugin("crash"), "echo": example("echo")},
             flags=ISO + ["--workers", "2"])
    with h:
        serving = h.serving_pid()
        r = h.http("GET", "/crash?do=segv", headers={"X-Request-Id": "iso-crash-1"})
        assert r.status == 502, r
        assert r.json == {"error": "Function Crashed", "requestId": "iso-crash-1"}, r.json
        r = h.http("GET", "/crash?do=abort", headers={"X-Request-Id": "iso-crash-2"})
        assert r.status == 502 and r.json["requestId"] == "iso-crash-2", r
        # The same build answers again on a fresh worker, and other functions never noticed.
        for _ in range(5):
            r = h.http("GET", "/crash")
            assert r.status == 200 and r.json == {"build": "crashing"}, r
            assert h.http("GET", "/echo?x=1").status == 200
        assert h.serving_pid() == serving, "the serving process was restarted"


def test_quarantine_after_k_crashes_and_a_fixed_build_lifts_it():
    h = Host(plugins={"crash": tplugin("crash"), "echo": example("echo")},
             flags=ISO + ["--workers", "2", "--quarantine-crashes", "3",
                          "--quarantine-window", "60"])
    with h:
        sha = hashlib.sha256(open(tplugin("crash"), "rb").read()).hexdigest()
        for i in range(2):
            r = h.http("GET", "/crash?do=segv", headers={"X-Request-Id": f"k-{i}"})
            assert r.status == 502, r
            # Below K the build keeps serving, and each crash is on /_/status.
            assert h.http("GET", "/crash").status == 200
        st = h.http("GET", "/_/status", auth=True).json
        assert st["quarantine"] == {}, st["quarantine"]
        assert [c["request_id"] for c in st["crashes"]] == ["k-0", "k-1"], st["crashes"]
        r = h.http("GET", "/crash?do=segv", headers={"X-Request-Id": "k-2"})
        assert r.status == 502, r
        r = h.http("GET", "/crash", headers={"X-Request-Id": "after-k"})
        assert r.status == 503 and r.json == {"error": "Function Unavailable",
                                              "requestId": "after-k"}, r
        assert h.http("GET", "/echo").status == 200
        st = h.http("GET", "/_/status", auth=True).json
        q = st["quarantine"]["crash"]
        assert (q["sha256"], q["request_id"], q["signal"]) == (sha, "k-2", 11), q
        h.wait_log(r"QUARANTINED crash version 1")
        # A different build lifts it, in every worker.
        h.add_plugin("crash", tplugin("crash_fixed"))
        wait_until(lambda: h.http("GET", "/crash").status == 200, what="the fixed build")
        for _ in range(4):
            assert h.http("GET", "/crash?do=segv").json == {"build": "fixed"}
        assert h.http("GET", "/_/status", auth=True).json["quarantine"] == {}


def test_blocking_function_stalls_only_its_worker():
    h = Host(plugins={"__websocket__": tplugin("slow_echo"), "echo": example("echo")},
             flags=ISO + ["--workers", "4"])
    with h:
        async def go():
            others = [await h.ws() for _ in range(20)]
            sleeper = await h.ws()
            for i, ws in enumerate(others):  # warm: every worker has run something
                await echo_once(ws, f"warm-{i}")
            await sleeper.send("sleep")
            await asyncio.sleep(0.05)  # the sleep has begun in its worker
            lat = []
            t_end = time.monotonic() + 1.5  # well inside the 2 s the sleeper blocks
            n = 0
            while time.monotonic() < t_end:
                rounds = await asyncio.gather(*(echo_once(ws, f"m{n}-{i}")
                                                for i, ws in enumerate(others)))
                lat.extend(rounds)
                n += 1
            t0 = time.monotonic()
            hz = await asyncio.get_running_loop().run_in_executor(
                None, lambda: h.http("GET", "/_/healthz", timeout=5).status)
            hz_s = time.monotonic() - t0
            assert hz == 200
            got = await recv(sleeper, 10)
            assert got == "sleep", got
            lat.sort()
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            print(f"  {len(lat)} echoes of 20 clients while one slept 2 s: "
                  f"p50 {lat[len(lat) // 2] * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; "
                  f"healthz {hz_s * 1000:.1f} ms")
            # In-process the sleeper delays every echo by up to 2 s. The bound is the issue's
            # 50 ms with room for a loaded 2-core machine shared with other builds.
            assert len(lat) >= 40, f"only {len(lat)} echoes in 1.5 s"
            assert p99 < 0.25, f"p99 {p99 * 1000:.0f} ms while another client's function slept"
            assert hz_s < 0.5, f"healthz took {hz_s * 1000:.0f} ms"
            for ws in others + [sleeper]:
                await ws.close()
        asyncio.run(go())


def test_flood_behind_a_busy_worker_is_bounded():
    # In-process TCP holds a flooding client back while its function runs; here the loop keeps
    # reading, so what waits for a worker is bounded (32 MiB): past it the connection gets 1013.
    h = Host(plugins={"__websocket__": tplugin("slow_echo")}, flags=ISO + ["--workers", "2"])
    with h:
        async def go():
            other = await h.ws()
            ws = await h.ws(max_size=None)
            # Long enough for 48 MiB to arrive from a loaded machine under ASan (2 s was not);
            # the 1013 ends the test as soon as the bound is passed.
            await ws.send("sleep 12")
            big = "x" * (1024 * 1024 - 16)
            for _ in range(48):
                await send_until_closed(ws, big)
            code, reason = await expect_close(ws, 15)
            assert (code, reason) == (1013, "server busy"), (code, reason)
            await echo_once(other, "still here")
            await other.close()
        asyncio.run(go())
        h.wait_log(r"refused: worker \d+ has \d+ bytes of events waiting")


def test_one_connections_events_stay_in_order():
    h = Host(plugins={"__websocket__": tplugin("slow_echo")}, flags=ISO + ["--workers", "4"])
    with h:
        async def go():
            ws = await h.ws()
            # Sent back to back, without waiting: they are in flight together across workers.
            for i in range(300):
                await ws.send(f"n{i}")
            got = [await recv(ws, 10) for _ in range(300)]
            assert got == [f"n{i}" for i in range(300)], got[:20]
            await ws.close()
        asyncio.run(go())


def test_functions_do_not_run_in_the_serving_process():
    h = Host(plugins={"__websocket__": tplugin("slow_echo"), "slow_echo": tplugin("slow_echo")},
             flags=ISO + ["--workers", "2"])
    with h:
        serving = h.serving_pid()
        pids = {h.http("GET", "/slow_echo").json["pid"] for _ in range(6)}

        async def go():
            ws = await h.ws()
            await ws.send("pid")
            m = await recv(ws, 5)
            await ws.close()
            return int(m.split()[1])
        pids.add(asyncio.run(go()))
        assert serving not in pids, f"a function ran in the serving process {serving}"
        workers = set(children_of(serving))
        assert pids <= workers, f"functions ran in {pids}, workers are {workers}"


def test_sigterm_while_a_function_spins():
    h = Host(plugins={"__websocket__": tplugin("crash"), "echo": example("echo")},
             flags=ISO + ["--workers", "2", "--drain-timeout", "2"])
    with h:
        async def go():
            ws = await h.ws()
            await recv_json(ws)
            await ws.send("loop")
            await asyncio.sleep(0.3)
            assert h.http("GET", "/_/healthz", timeout=5).status == 200
            t0 = time.monotonic()
            h.signal(signal.SIGTERM)
            code = await asyncio.get_running_loop().run_in_executor(None, h.wait_exit, 15)
            took = time.monotonic() - t0
            assert code == 0, f"exit code {code}"
            # The drain timeout (2 s) plus the serving process's own margin (2 s) and slack.
            assert took < 6.0, f"SIGTERM took {took:.1f} s"
        asyncio.run(go())


def test_crashes_of_a_replaced_build_are_charged_to_it():
    """Calls of build 1 still running in the retiring workers when a fixed build 2 is deployed
    crash there: the crashes are build 1's (quarantined, as it crashed K times), and build 2,
    which never crashed, keeps serving (it used to be quarantined for them: 503)."""
    h = Host(plugins={"cr": tplugin("crash")},
             flags=ISO + ["--workers", "3", "--quarantine-crashes", "3",
                          "--quarantine-window", "60"])
    with h:
        sha1 = hashlib.sha256(open(tplugin("crash"), "rb").read()).hexdigest()
        results = {}

        def call(i):
            try:
                r = h.http("GET", "/cr?do=slowsegv", headers={"X-Request-Id": f"slow-{i}"},
                           timeout=20)
                results[i] = r.status
            except OSError as e:
                results[i] = repr(e)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
        for t in threads:  # one in each worker: each waits 2 s in build 1, then crashes
            t.start()
            time.sleep(0.1)
        h.add_plugin("cr", tplugin("crash_fixed"))
        wait_until(lambda: h.http("GET", "/cr").json == {"build": "fixed"}, timeout=10,
                   what="the fixed build serving")
        for t in threads:
            t.join(30)
        assert results == {0: 502, 1: 502, 2: 502}, results
        h.wait_log(r"QUARANTINED cr version 1 \(sha256 [0-9a-f]{12}\.\.\., no longer serving\)")
        for _ in range(3):
            r = h.http("GET", "/cr")
            assert r.status == 200 and r.json == {"build": "fixed"}, r
        st = h.http("GET", "/_/status", auth=True).json
        assert st["plugins"]["cr"]["loaded"] is True, st["plugins"]["cr"]
        assert st["quarantine"]["cr"]["sha256"] == sha1, st["quarantine"]
        assert [c["version"] for c in st["crashes"]] == [1, 1, 1], st["crashes"]


def test_worker_stuck_loading_is_replaced():
    """A worker maps its own copy of every function when it starts: one whose constructor
    hangs there is killed after --load-timeout and replaced (it used to hang for good, and the
    function's requests with it), while the serving process keeps answering."""
    release = os.path.join(tempfile.mkdtemp(prefix="wshost-release-"), "go")
    h = Host(plugins={"echo": example("echo")}, env={"WSTEST_RELEASE": release},
             flags=ISO + ["--workers", "2", "--load-timeout", "2"])
    with h:
        pid = h.serving_pid()
        h.add_plugin("wk", tplugin("ctor_worker_wait"))
        # The workers forked with wk hang in its constructor (for 60 s, released or not).
        wait_until(lambda: os.path.exists(release + ".hung"), timeout=15,
                   what="a worker hanging in the constructor")
        assert h.http("GET", "/_/healthz", timeout=5).status == 200
        open(release, "w").close()
        # Replaced after --load-timeout, the next workers load it (the file is there now).
        wait_until(lambda: h.http("GET", "/wk", timeout=5).status == 200, timeout=15,
                   what="a worker that loaded serving wk")
        h.wait_log(r"did not finish loading the functions within --load-timeout \(2 s\): "
                   r"replacing it")
        assert h.http("GET", "/wk").json == {"ctor": "returned"}
        assert h.http("GET", "/echo").status == 200
        assert h.serving_pid() == pid


if __name__ == "__main__":
    run(globals())
