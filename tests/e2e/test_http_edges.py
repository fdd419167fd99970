"""HTTP edges lws 4.1 gets wrong: slow request bodies hold neither memory nor
connections (--max-body-total, --min-body-rate), a request answered before its body was read
is answered in a way every client can read (lingering close), and header lines lws 4.1 gets
wrong are answered with a status."""

import http.client
import select
import socket
import threading
import time

from harness import *  # noqa: F401,F403
from harness import _parse_http_response


def proc_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise Fail(f"no {field} in /proc/{pid}/status")


def slow_body(port, total, fast, out, key, timeout=60):
    """POST /echo announcing `total` bytes, sends `fast` of them at once and then one byte a
    second; out[key] = the status of the response (None: closed without one)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall((f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                   f"Content-Length: {total}\r\n\r\n").encode())
        s.setblocking(False)
        sent, got, closed, last = 0, b"", False, 0.0
        block = b"a" * 65536
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, w, _ = select.select([s], [s] if sent < total else [], [], 0.2)
            if r:
                try:
                    d = s.recv(65536)
                except (ConnectionResetError, BlockingIOError):
                    d = b""
                closed = not d
                got += d
                resp = _parse_http_response(got, closed)
                if resp:
                    out[key] = resp.status
                    return
                if closed:
                    break
            if w:
                now = time.monotonic()
                if sent < fast:
                    n = min(len(block), fast - sent)
                elif now - last >= 1.0:
                    n, last = 1, now
                else:
                    continue
                try:
                    sent += s.send(block[:n])
                except BlockingIOError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    sent = total
        out[key] = None
    finally:
        s.close()


def test_slow_bodies_bounded():
    """Finding 6: 32 bodies of 4 MB each sent all but the end fast and then a byte a second.
    Before: every one held its 4 MiB for as long as it trickled (each byte reset lws's 20 s
    timeout), 128 MB in all. Now the host's peak RSS grows by less than 48 MiB (an 8 MiB
    --max-body-total plus slack), each slow client gets 503 (over the total) or 408 (too
    slow), and a GET is served meanwhile."""
    with Host(flags=["--max-body-total", str(8 << 20), "--min-body-rate", "10000"]) as h:
        pid = h.proc.pid
        base = proc_kb(pid, "VmRSS")
        out = {}
        n, total = 32, 4_000_000
        threads = [threading.Thread(target=slow_body, args=(h.port, total, total - 1000, out, i))
                   for i in range(n)]
        for t in threads:
            t.start()
        time.sleep(3)  # all of them are trickling or refused by now
        r = h.http("GET", "/echo?during=1", timeout=20)
        assert r.status == 200 and r.json["query"] == {"during": "1"}, r
        for t in threads:
            t.join(60)
        peak = max(proc_kb(pid, "VmHWM"), proc_kb(pid, "VmRSS"))
        with open(f"/proc/{pid}/maps") as f:
            asan = "libasan" in f.read()  # its quarantine keeps freed buffers resident
        statuses = sorted(out.values(), key=str)
        assert len(out) == n and all(s in (408, 503) for s in out.values()), statuses
        assert 408 in statuses and 503 in statuses, statuses
        assert asan or peak - base < 48 * 1024, f"RSS grew from {base} kB to a peak of {peak} kB"
        r = h.http("POST", "/echo", body="after", headers={"Content-Type": "text/plain"})
        assert r.status == 200 and r.json["body_raw"] == "after", r
        assert "408" in h.log() and "503" in h.log()


def test_early_answer_readable_by_a_client_that_sends_everything():
    """Finding 8: an 11 MiB body is answered 413 before it is read. Before: the host closed at
    once with 11 MiB unread, the kernel sent a reset, and http.client (like Node's fetch) got
    EPIPE/ECONNRESET instead of the answer. Now the host reads and drops the rest first."""
    with Host() as h:
        for path in ("/echo", "/no-such-function"):
            conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=30)
            try:
                conn.request("POST", path, body=b"x" * (11 << 20),
                             headers={"Content-Type": "application/octet-stream"})
                r = conn.getresponse()
                r.read()
            finally:
                conn.close()
            assert r.status == (413 if path == "/echo" else 404), (path, r.status)
        r = h.http("GET", "/echo")
        assert r.status == 200, r


def test_linger_is_bounded():
    """The rest of a refused body is read for at most a few seconds: a client that announces
    11 MiB and then sends nothing is closed after its 413, not held."""
    with Host() as h:
        s = socket.create_connection(("127.0.0.1", h.port), timeout=20)
        t0 = time.monotonic()
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11534336\r\n\r\nabc")
        got = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
        dt = time.monotonic() - t0
        s.close()
        assert got.startswith(b"HTTP/1.1 413"), got[:100]
        assert dt < 15, f"held {dt:.1f} s after the 413"


def test_space_before_colon_400():
    """Finding 8: `Content-Length : 4` was taken as no body (and "abcd" as the next request);
    RFC 9112 5.1 wants 400. Same for Transfer-Encoding and a tab."""
    with Host() as h:
        for head in (b"Content-Length : 4", b"Content-Length\t: 4", b"Transfer-Encoding : chunked",
                     b"Host  : x"):
            s = socket.create_connection(("127.0.0.1", h.port), timeout=10)
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n\r\nabcd")
            got = b""
            try:
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    got += d
            except (ConnectionResetError, socket.timeout):
                pass
            s.close()
            assert got.startswith(b"HTTP/1.1 400"), (head, got[:200])
            assert b"whitespace between a header name and its colon" in got, got
        # A second request on a kept-alive connection is lws's alone (the head guard reads
        # only the first): http.c finds the spaced name among lws's unknown headers.
        s = socket.create_connection(("127.0.0.1", h.port), timeout=10)
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while not _parse_http_response(got, False):
            got += s.recv(65536)
        assert got.startswith(b"HTTP/1.1 200"), got[:100]
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length : 4\r\n\r\nabcd")
        got = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
        s.close()
        assert got.startswith(b"HTTP/1.1 400") and b"whitespace" in got, got[:200]
        r = h.http("POST", "/echo", body="abcd", headers={"Content-Type": "text/plain"})
        assert r.status == 200 and r.json["body_raw"] == "abcd", r


def read_all(port, data, timeout=25):
    """Sends data on a fresh connection; (bytes until the server closed, seconds)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    t0 = time.monotonic()
    got = b""
    try:
        s.sendall(data)
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    return got, time.monotonic() - t0


def test_header_name_prefix_of_a_known_one_400():
    """`Acc:`, `Cont:`, `Ho:`: lws 4.1 misreads a header name that is a strict prefix of one it
    knows: the rest of the head becomes one unknown name (a following `Connection: close` was
    lost and the connection held ~5 s; as the last header the request never completed and the
    connection was dropped after 10 s without a word). Now: 400 at once, saying why; a name
    that is both a known one and a prefix of others (`Accept`) is served."""
    with Host() as h:
        for name in (b"Acc", b"Cont", b"Ho", b"Sec-WebSocket"):
            for rest in (b"X-After: 2\r\nConnection: close\r\n", b""):
                got, dt = read_all(h.port, b"GET /echo HTTP/1.1\r\nHost: x\r\n" + name +
                                   b": 1\r\n" + rest + b"\r\n")
                assert got.startswith(b"HTTP/1.1 400"), (name, rest, got[:200])
                assert b"prefix of a known one" in got and dt < 5, (got, dt)
        r = h.http("GET", "/echo", headers={"Accept": "1", "Accept-Encoding": "x"})
        assert r.status == 200 and r.json["headers"]["accept"] == "1", r


def test_too_many_fields_431():
    """92+ query parameters or one header repeated 100 times: lws 4.1 runs out of header
    fragments and closed the connection with no response. Now 431, and a request just under
    the limit is served."""
    with Host() as h:
        q = "&".join(f"a{i}=1" for i in range(100))
        for head in (f"GET /echo?{q} HTTP/1.1\r\nHost: x\r\n",
                     "GET /echo HTTP/1.1\r\nHost: x\r\n" + "Accept: 1\r\n" * 100,
                     "GET /echo HTTP/1.1\r\nHost: x\r\n" + "X-Many: 1\r\n" * 100):
            got, _ = read_all(h.port, (head + "Connection: close\r\n\r\n").encode())
            assert got.startswith(b"HTTP/1.1 431"), (head[:60], got[:200])
            assert b"too many header lines and query parameters" in got, got
        q = "&".join(f"a{i}=1" for i in range(60))
        r = h.http("GET", "/echo?" + q)
        assert r.status == 200 and len(r.json["query"]) == 60, r


def test_head_over_max_header_431():
    """A head over --max-header: lws drops it without a word; the host answers 431."""
    with Host() as h:
        got, _ = read_all(h.port, b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 +
                          b"\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 431"), got[:200]


def test_incomplete_head_408():
    """A head that stops coming is dropped after lws's 10 s header timeout; before, without a
    word, now with a 408 the client can read."""
    with Host() as h:
        got, dt = read_all(h.port, b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Half: ")
        assert got.startswith(b"HTTP/1.1 408"), got[:200]
        assert 8 < dt < 20, dt


if __name__ == "__main__":
    run(globals())
