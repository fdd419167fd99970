"""tools/wsbench against the real host: each mode does its job and says so on its result line.
Counts only, no timings (the figures are make bench's business, not a test's)."""

import os
import shutil
import subprocess

from harness import *  # noqa: F401,F403

WSBENCH = os.path.join(BUILD_DIR, "wsbench")


def wsbench(*args, timeout=120):
    # Generous handshake (-t) and push (-T) timeouts: under valgrind or ASan the host is slow,
    # and these tests count what happened, they do not time it.
    r = subprocess.run([WSBENCH, "-t", "30", "-T", "20000", *map(str, args)],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"wsbench {args} exit {r.returncode}: {r.stdout}{r.stderr}"
    lines = [l for l in r.stdout.splitlines() if l.startswith("mode=")]
    assert len(lines) == 1, f"wsbench {args}: want one result line, got:\n{r.stdout}"
    return dict(kv.split("=", 1) for kv in lines[0].split())


def test_echo_gets_answers():
    with Host() as h:
        r = wsbench("-p", h.port, "-m", "echo", "-c", 3, "-d", 0.5, "-w", 0.1, "-g", 1)
        assert r["up"] == "3" and r["failed"] == "0" and r["dropped"] == "0", r
        assert int(r["rtt"]) > 0, f"no round trip counted: {r}"


def test_push_reaches_the_users_socket():
    with Host() as h:
        r = wsbench("-p", h.port, "-m", "push", "-c", 5, "-d", 5, "-w", 0.1, "-n", 20)
        assert r["users"] == "5", f"user ids not read from the greetings: {r}"
        assert r["pushes"] == "20" and r["delivered"] == "20", r
        assert r["lost"] == "0" and r["queued"] == "0" and r["http_errors"] == "0", r


def test_room_reaches_every_member():
    plugins = {"__websocket__": tplugin("room_bench"), "room_bench": tplugin("room_bench")}
    # room_bench keeps the sockets it times in its own memory: with --isolation process each
    # worker would know only the connections whose events it ran (3 of 6 with 2 workers).
    with Host(plugins=plugins, flags=["--isolation", "none"]) as h:
        r = wsbench("-p", h.port, "-m", "room", "-c", 6, "-d", 5, "-w", 0.1, "-n", 10)
        assert r["members"] == "6", r
        assert r["messages"] == "10" and r["delivered"] == "60", r
        assert r["incomplete"] == "0" and r["http_errors"] == "0", r
        assert r["jl_sockets"] == "6", f"the host's join/leave timing did not come back: {r}"


def test_idle_holds_and_measures_the_server():
    with Host() as h:
        r = wsbench("-p", h.port, "-m", "idle", "-c", 40, "-d", 0.2, "-g", 1, "-k", 3,
                    "-R", h.serving_pid())
        assert r["up"] == "40" and r["failed"] == "0", r
        assert int(r["rss_after_kb"]) > 0 and "bytes_per_conn" in r, r


def test_idle_answers_heartbeat_pings():
    # Ping after 1 s idle, hang up 1 s later without a pong: 3.5 s held means two pings.
    with Host(flags=["--ping-interval", "1", "--pong-timeout", "1"]) as h:
        r = wsbench("-p", h.port, "-m", "idle", "-c", 5, "-d", 3.5, "-g", 1)
        assert r["up"] == "5" and r["dropped"] == "0", f"pings not answered: {r}"


def test_churn_counts_connections():
    with Host() as h:
        for close_handshake in (1, 0):
            r = wsbench("-p", h.port, "-m", "churn", "-c", 4, "-d", 0.5, "-w", 0.1, "-g", 1,
                        "-C", close_handshake)
            assert r["failed"] == "0" and int(r["churned"]) > 0, r


def test_push_to_another_node_of_a_cluster():
    # make bench's cpush row: users on node B, pushes POSTed to node A's /_/push (-E), and the
    # CPU of every process of the cluster counted as the server's (-R a,b), none as "others".
    if not shutil.which("redis-server"):
        skip("no redis-server (tools/install-deps installs it)")
    from test_cluster import Redis, node, wait_joined
    with Redis() as redis, node(redis) as a, node(redis) as b:
        wait_joined(a, b)
        r = wsbench("-p", b.port, "-E", a.port, "-P", "/_/push", "-a",
                    f"Authorization: Bearer {a.admin_token}", "-m", "push", "-c", 5, "-d", 10,
                    "-w", 1, "-n", 20, "-R", f"{a.serving_pid()},{b.serving_pid()},{redis.proc.pid}")
        assert r["users"] == "5", r
        assert r["pushes"] == "20" and r["delivered"] == "20", f"not pushed across nodes: {r}"
        assert r["lost"] == "0" and r["queued"] == "0" and r["http_errors"] == "0", r
        assert all(f"cpu_pct_{i}" in r for i in (1, 2, 3)), f"no CPU per process: {r}"
        # All 20 went through node B's socket, not a local one on A: A holds no connection.
        assert not a.online_users(), a.online_users()


def test_bad_arguments_exit_2():
    r = subprocess.run([WSBENCH, "-m", "nosuchmode"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2 and "usage" in r.stderr, r
    r = subprocess.run([WSBENCH, "-m", "push", "-g", "0"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2, "push without the greeting must be refused"


if __name__ == "__main__":
    run(globals())
