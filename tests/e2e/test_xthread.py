"""Sends other threads make are bounded in bytes, not only in count: a plugin thread that
floods cloud_broadcast with 1 MiB messages while its function holds the event loop is
refused with CLOUD_EFULL past --xthread-max-bytes, the serving process's memory stays
bounded, the refusals are counted in /_/metrics, and sends work again once the loop ran."""

import shutil
import socket
import subprocess
import tempfile

from harness import *  # noqa: F401,F403

MIB = 1 << 20


def peak_rss_kib(pid):
    """VmHWM: the most this process ever held in RAM, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise Fail(f"no VmHWM for {pid}")


def metric(h, name):
    text = h.http("GET", "/_/metrics", auth=True).text
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} not on the page"
    return float(m.group(1))


def test_flood_of_cross_thread_sends_is_refused_past_the_byte_bound():
    # The queue is the serving process's: functions run there (with --isolation process a
    # worker's threads write to its pipe, and a full pipe holds them back; see below).
    with Host(plugins={"xthread_flood": tplugin("xthread_flood")},
              flags=["--isolation", "none", "--xthread-max-bytes", str(8 * MIB)],
              env=MEMORY_BOUND_ENV) as h:
        pid = h.serving_pid()
        before = peak_rss_kib(pid)
        r = h.http("POST", "/xthread_flood", json_body={"n": 120, "size": MIB}, timeout=60)
        assert r.status == 200, r
        ok, full, other = r.json["ok"], r.json["full"], r.json["other"]
        # 8 MiB hold 7 messages of 1 MiB and their headers; the rest is refused, none lost
        # in another way.
        assert other == 0 and ok + full == 120, r.json
        assert 1 <= ok <= 8 and full >= 112, r.json
        grown = peak_rss_kib(pid) - before
        # The thread's own 1 MiB text plus the 8 MiB bound, and room for the allocator: far
        # from the 120 MiB the flood would pin without the bound.
        assert grown < 48 * 1024, f"peak RSS grew {grown} KiB"
        assert metric(h, "wshost_xthread_refused_total") == full
        # The loop ran what it accepted and gave the bytes back: sends are accepted again.
        assert metric(h, "wshost_xthread_queued_bytes") == 0
        r = h.http("POST", "/xthread_flood", json_body={"n": 3, "size": MIB})
        assert r.status == 200 and r.json == {"ok": 3, "full": 0, "other": 0}, r


def test_one_send_larger_than_the_bound_is_refused():
    with Host(plugins={"xthread_flood": tplugin("xthread_flood")},
              flags=["--isolation", "none", "--xthread-max-bytes", "65536"]) as h:
        r = h.http("POST", "/xthread_flood", json_body={"n": 2, "size": 100000})
        assert r.status == 200 and r.json == {"ok": 0, "full": 2, "other": 0}, r
        r = h.http("POST", "/xthread_flood", json_body={"n": 2, "size": 1000})
        assert r.status == 200 and r.json == {"ok": 2, "full": 0, "other": 0}, r
        assert metric(h, "wshost_xthread_refused_total") == 2


def test_flood_from_a_worker_thread_leaves_the_serving_process_bounded():
    """With --isolation process the flooding thread is in a worker: each send is a frame on
    the worker's pipe, which the serving process handles as it reads it, so a full pipe holds
    the thread back and the serving process does not grow either."""
    with Host(plugins={"xthread_flood": tplugin("xthread_flood")},
              flags=["--isolation", "process", "--workers", "1",
                     "--xthread-max-bytes", str(8 * MIB)]) as h:
        pid = h.serving_pid()
        before = peak_rss_kib(pid)
        r = h.http("POST", "/xthread_flood", json_body={"n": 120, "size": MIB}, timeout=60)
        assert r.status == 200, r
        assert r.json["other"] == 0 and r.json["ok"] + r.json["full"] == 120, r.json
        grown = peak_rss_kib(pid) - before
        assert grown < 48 * 1024, f"serving process peak RSS grew {grown} KiB"


def test_cluster_publish_flood_is_bounded():
    """In a cluster each broadcast is a PUBLISH, and one function making 120 of 1 MiB writes
    nothing until it returns: hiredis's write buffer held all 120 MiB. Past BUS_MAX_UNSENT
    (16 MiB) a publish is refused and logged instead; the local sends still happen."""
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="wshost-e2e-redis-")
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--loglevel", "warning", "--dir", tmp],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        def pong():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                    c.sendall(b"PING\r\n")
                    return c.recv(16).startswith(b"+PONG")
            except OSError:
                return False
        wait_until(pong, 10, what="redis-server")
        with Host(plugins={"xthread_flood": tplugin("xthread_flood")},
                  flags=["--isolation", "none", "--redis", f"redis://127.0.0.1:{port}"],
                  env=MEMORY_BOUND_ENV) as h:
            h.wait_log(r"cluster: connected to ", timeout=10)
            pid = h.serving_pid()
            before = peak_rss_kib(pid)
            r = h.http("POST", "/xthread_flood",
                       json_body={"n": 120, "size": MIB, "inline": True}, timeout=60)
            assert r.status == 200 and r.json == {"ok": 120, "full": 0, "other": 0}, r
            grown = peak_rss_kib(pid) - before
            assert grown < 48 * 1024, f"peak RSS grew {grown} KiB"
            wait_until(lambda: "not published" in h.log(), 5, what="the refused publishes")
            assert "more than 16777216 bytes wait to be written to Redis" in h.log()
    finally:
        redis.kill()
        redis.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run(globals())
