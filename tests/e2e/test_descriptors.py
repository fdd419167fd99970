"""Descriptor exhaustion: with a low `ulimit -n` and more clients than
descriptors, the host neither spins nor floods its log, and /_/healthz answers again on a
fresh connection as soon as some clients leave."""

import os
import socket
import time

from harness import *  # noqa: F401,F403

NOFILE = 128


class LimitedHost(Host):
    """A host whose soft and hard RLIMIT_NOFILE are NOFILE (prlimit execs it: same pid)."""

    def command(self):
        return ["prlimit", f"--nofile={NOFILE}:{NOFILE}", "--"] + super().command()


def cpu_ticks(h):
    pids = [h.proc.pid] + children_of(h.proc.pid)
    return sum((proc_stat(p) or (0, 0, 0))[2] for p in pids)


def test_more_clients_than_descriptors():
    h = LimitedHost(plugins={"echo": example("echo")})
    with h:
        h.wait_log(rf"descriptor limit {NOFILE}: up to \d+ connections")
        log0 = os.path.getsize(h.log_path)
        held = []
        for _ in range(3 * NOFILE):
            s = socket.socket()
            s.settimeout(5)
            s.connect(("127.0.0.1", h.port))
            held.append(s)
        time.sleep(0.5)  # let the host take them in
        tick = os.sysconf("SC_CLK_TCK")
        c0, t0 = cpu_ticks(h), time.monotonic()
        time.sleep(1.0)
        used = (cpu_ticks(h) - c0) / tick / (time.monotonic() - t0)
        assert used < 0.3, f"host used {used:.0%} of a CPU holding {len(held)} clients"
        grown = os.path.getsize(h.log_path) - log0
        assert grown < 16 * 1024, f"log grew by {grown} bytes in 1.5 s"
        print(f"  {len(held)} clients at ulimit -n {NOFILE}: {used:.1%} of a CPU, log +{grown} B")
        lines = [l for l in h.log().splitlines() if "accept:" in l]
        assert 1 <= len(lines) <= 3, f"accept log lines: {lines}"
        # Some clients leave; a newcomer is served.
        for s in held[:NOFILE // 2]:
            s.close()
        wait_until(lambda: healthz(h), timeout=5, what="/_/healthz on a fresh connection")
        for s in held[NOFILE // 2:]:
            s.close()


def test_accept_pauses_on_emfile():
    """Every descriptor taken (a function holds them for 2.5 s): accept fails with EMFILE.
    The host pauses accepting for 100 ms instead of spinning on the readable socket, logs it
    at most once a second, and serves the clients that wait in the backlog as descriptors
    free up (one each pause here: the one the finished /fdeater request gave back)."""
    # The function takes the serving process's descriptors: in-process only (with
    # --isolation process it would take its worker's).
    h = LimitedHost(plugins={"echo": example("echo"), "fdeater": tplugin("fdeater")},
                    flags=["--isolation", "none"])
    with h:
        r = h.http("GET", "/fdeater?hold_ms=2500")
        assert r.status == 200 and r.json["held"] > 0, r
        t_eaten = time.monotonic()
        log0 = os.path.getsize(h.log_path)
        waiting = []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", h.port), timeout=10)
            s.sendall(b"GET /_/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            waiting.append(s)
        tick = os.sysconf("SC_CLK_TCK")
        c0, t0 = cpu_ticks(h), time.monotonic()
        time.sleep(1.0)
        used = (cpu_ticks(h) - c0) / tick / (time.monotonic() - t0)
        assert time.monotonic() - t_eaten < 2.5, "the machine is too slow for this test's timing"
        with open(h.log_path, "rb") as f:
            f.seek(log0)
            new = f.read().decode(errors="replace").splitlines()
        print(f"  descriptors exhausted: {used:.1%} of a CPU, {len(new)} log lines in 1 s")
        assert used < 0.3, f"host used {used:.0%} of a CPU while out of descriptors"
        # (lws's own accept logged "accept: errno 24" for every attempt: 25 lines here.)
        lines = [l for l in new if "accept" in l]
        assert 1 <= len(lines) <= 2, f"accept log lines in 1 s: {lines}"
        assert "Too many open files" in lines[0], lines
        # Every client that waited is answered.
        for s in waiting:
            s.settimeout(10)
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            s.close()
            assert data.startswith(b"HTTP/1.1 200"), data[:100]


def healthz(h):
    try:
        return h.http("GET", "/_/healthz", timeout=1).status == 200
    except (OSError, http.client.HTTPException):
        return False


if __name__ == "__main__":
    run(globals())
