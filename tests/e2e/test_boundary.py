"""--isolation process as a boundary, attacked from inside a worker by tests/plugins/evil_worker.c,
which writes raw frames on its worker's socket: an answer forged for another worker's request
is refused (the victim gets its real answer), a call naming another request's sequence number
reads nothing of it, and replies a worker never reads cannot grow the serving process. Each
refusal is logged and counted, and the worker that tried is replaced."""

import re
import threading
import time

from harness import *  # noqa: F401,F403


def evil_host():
    return Host(plugins={"evil": tplugin("evil_worker")},
                flags=["--isolation", "process", "--workers", "2"], env=MEMORY_BOUND_ENV)


def in_thread(fn):
    out = {}

    def run_it():
        try:
            out["r"] = fn()
        except Exception as e:  # noqa: BLE001 - reported by the caller
            out["e"] = e

    t = threading.Thread(target=run_it, daemon=True)
    t.start()
    return t, out


def violations(h):
    text = h.http("GET", "/_/metrics", auth=True).text
    m = re.search(r"^wshost_worker_violations_total (\d+)", text, re.M)
    return int(m.group(1)) if m else 0


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def test_forged_answer_for_another_request_is_refused():
    with evil_host() as h:
        t, victim = in_thread(lambda: h.http("GET", "/evil?do=slow", timeout=20))
        time.sleep(0.5)  # the victim's request is in flight in one worker
        r = h.http("GET", "/evil?do=forge&from=1&to=300", timeout=20)
        t.join(20)
        assert "e" not in victim, victim
        v = victim["r"]
        assert v.status == 200 and v.body == b"real answer", f"the victim got {v}"
        assert b"FORGED" not in r.body, f"the forger's own request was answered by its forgery: {r}"
        assert violations(h) >= 1, "the forgery was not counted"
        h.wait_log(r"worker \d+ .*refused")
        # The service goes on: the next requests are served (by a fresh worker).
        assert h.http("GET", "/_/healthz").status == 200
        for _ in range(4):
            assert h.http("GET", "/evil?do=nothing").status == 400


def test_a_call_for_another_request_reads_nothing_of_it():
    with evil_host() as h:
        t, victim = in_thread(lambda: h.http(
            "GET", "/evil?do=slow", headers={"Authorization": "Bearer victim-SECRET-123"},
            timeout=20))
        time.sleep(0.5)
        r = h.http("GET", "/evil?do=steal&from=1&to=300", timeout=20)
        t.join(20)
        assert b"victim-SECRET" not in r.body, f"a header of another request was read: {r}"
        assert victim["r"].status == 200 and victim["r"].body == b"real answer", victim
        assert violations(h) >= 1


def test_unread_replies_cannot_grow_the_serving_process():
    with evil_host() as h:
        pid = h.serving_pid()
        before = rss_kb(pid)
        t, flood = in_thread(lambda: h.http("GET", "/evil?do=flood&n=600", timeout=40))
        peak = before
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            peak = max(peak, rss_kb(pid))
            r = h.http("GET", "/_/healthz", timeout=5)
            assert r.status == 200, r
            time.sleep(0.1)
        t.join(40)
        assert (peak - before) < 64 * 1024, f"the serving process grew {peak - before} kB"
        assert "r" in flood and flood["r"].status in (502, 503), f"the flooding worker: {flood}"
        assert violations(h) >= 1


if __name__ == "__main__":
    run(globals())
