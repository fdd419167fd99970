"""systemd readiness: with $NOTIFY_SOCKET set, the host says READY=1 once
its port answers, WATCHDOG=1 from its loop when $WATCHDOG_USEC asks for it, and STOPPING=1
when SIGTERM starts the drain. systemd is played by a unix datagram socket of this test."""

from harness import *  # noqa: F401,F403


class FakeSystemd:
    def __init__(self, tmp):
        self.path = os.path.join(tmp, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []

    def next(self, timeout=10.0):
        """The next datagram as a dict of its KEY=VALUE lines; Fail on timeout."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            raise Fail(f"no sd_notify message within {timeout}s (got {self.messages})") from None
        msg = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
        self.messages.append(msg)
        return msg

    def wait_for(self, key, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail(f"no {key} within {timeout}s (got {self.messages})")
            msg = self.next(left)
            if key in msg:
                return msg

    def drain(self, seconds):
        """Every message that arrives within seconds."""
        out, deadline = [], time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                return out
            out.append(data.decode())

    def close(self):
        self.sock.close()


def test_ready_watchdog_stopping():
    h = Host(plugins={"echo": example("echo")})
    sd = FakeSystemd(h.tmp)
    try:
        h.env.update({"NOTIFY_SOCKET": sd.path, "WATCHDOG_USEC": "200000"})
        h.start(wait=False)
        ready = sd.wait_for("READY")
        assert ready["READY"] == "1", ready
        assert "MAINPID" not in ready, "the serving process must not claim MAINPID"
        port = int(re.search(r"listening on port (\d+)", ready.get("STATUS", "")).group(1))
        # READY comes after the port listens: it answers at once, no retry.
        r = http_request(port, "GET", "/_/healthz", timeout=5)
        assert r.status == 200, r
        h.port = port
        # Pinged every 0.1 s from the loop: count them over a second (loaded machines: >= 3).
        pings = [m for m in sd.drain(1.0) if "WATCHDOG=1" in m]
        assert len(pings) >= 3, f"{len(pings)} watchdog pings in 1 s"
        h.signal(signal.SIGTERM)
        stopping = sd.wait_for("STOPPING")
        assert stopping["STOPPING"] == "1", stopping
        assert h.wait_exit() == 0
    finally:
        sd.close()


def test_no_watchdog_unless_asked():
    h = Host(plugins={"echo": example("echo")})
    sd = FakeSystemd(h.tmp)
    try:
        # No WATCHDOG_USEC; then one meant for another process (WATCHDOG_PID).
        for extra in ({}, {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}):
            h.env = {"NOTIFY_SOCKET": sd.path, **extra}
            h.start(wait=False)
            sd.wait_for("READY")
            msgs = sd.drain(0.6)
            assert not [m for m in msgs if "WATCHDOG" in m], f"{extra}: unasked pings {msgs}"
            h.signal(signal.SIGTERM)
            assert h.wait_exit() == 0
            sd.drain(0.2)
    finally:
        sd.close()


def test_only_the_main_process_notifies():
    """The unit says NotifyAccess=main: systemd drops (and logs) every message from another
    pid. So READY, each WATCHDOG=1 and STOPPING must come from the pid systemd started (the
    supervisor), which relays the serving loop's pings; the sender's pid is read from the
    kernel's SCM_CREDENTIALS, as systemd reads it."""
    h = Host(plugins={"echo": example("echo")})
    sd = FakeSystemd(h.tmp)
    sd.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    senders = {}

    def take(timeout):
        sd.sock.settimeout(timeout)
        data, anc, _, _ = sd.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = None
        for level, kind, blob in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", blob[:12])[0]
        for line in data.decode().split("\n"):
            if "=" in line:
                senders.setdefault(line.split("=", 1)[0], set()).add(pid)
        return data.decode()

    def take_until(key, timeout=10.0):
        deadline = time.monotonic() + timeout
        while key not in senders:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail(f"no {key} within {timeout}s (got {senders})")
            try:
                take(left)
            except socket.timeout:
                pass

    try:
        h.env.update({"NOTIFY_SOCKET": sd.path, "WATCHDOG_USEC": "200000"})
        h.start(wait=False)
        take_until("READY")
        assert h.serving_pid() != h.proc.pid  # the pings do come from a child's loop
        # A few pings, so the serving loop's timer has run (every 0.1 s).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(senders.get("WATCHDOG", ())) < 1:
            try:
                take(0.5)
            except socket.timeout:
                pass
        for _ in range(5):
            take(2.0)
        assert "WATCHDOG" in senders, f"no watchdog ping relayed: {senders}"
        h.signal(signal.SIGTERM)
        take_until("STOPPING")
        assert h.wait_exit() == 0
        main = h.proc.pid
        wrong = {k: v for k, v in senders.items() if v != {main}}
        assert not wrong, f"sent by a pid other than the main one ({main}): {wrong}"
    finally:
        sd.close()


def test_runs_without_notify_socket():
    with Host(plugins={"echo": example("echo")}) as h:
        assert h.http("GET", "/_/healthz").status == 200
        assert "sd_notify" not in h.log()


if __name__ == "__main__":
    run(globals())
