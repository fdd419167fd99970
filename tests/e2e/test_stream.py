"""Streamed responses through tests/plugins/streamer.c: cloud_stream_start/write/end (chunked
transfer encoding, written by the function's thread after it returned), cloud_sse_send
(text/event-stream with ids that go on after Last-Event-ID; a browser's EventSource reads them
and resumes), a slow reader bounded by --max-send-queue (CLOUD_EFULL, the host's memory flat,
other connections answered) and CLOUD_ECLOSED once the client went. In every mode."""

import asyncio
import http.client
import socket
import time

from harness import *  # noqa: F401,F403
from test_browser import CHROMIUM, Page


def stream_host(flags=(), **kw):
    plugins = default_plugins()
    plugins["streamer"] = tplugin("streamer")
    # One worker with --isolation process: ?do=stats reads the flood's own process.
    return Host(plugins=plugins, flags=["--workers", "1"] + list(flags), **kw)


def get(h, path, headers=None, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    return r, r.read(), c


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise Fail("no VmRSS")


def test_chunked_stream_written_after_the_function_returned():
    with stream_host() as h:
        r, body, c = get(h, "/streamer?do=chunks&n=4&ms=30")
        assert r.status == 200, r.status
        assert r.getheader("transfer-encoding") == "chunked", r.getheaders()
        assert r.getheader("content-length") is None
        assert r.getheader("content-type") == "text/plain; charset=utf-8"
        assert body == b"part 0\npart 1\npart 2\npart 3\n", body
        # The connection is kept: the next request on it is answered.
        r, body, _ = get(h, "/echo", conn=c)
        assert r.status in (200, 204), r.status
        c.close()
        # Start twice, a 204 stream, a write before the start and after the end.
        r, body, _ = get(h, "/streamer?do=twice")
        assert r.status == 201 and r.getheader("x-streamed") == "yes", r.getheaders()
        assert body == b"%d %d 0 %d\n" % (CLOUD_ECLOSED, CLOUD_EINVAL, CLOUD_ESTATE), body
        h.wait_log(r"twice: end 0, write after end -2")


def test_sse_ids_resume_after_last_event_id():
    with stream_host() as h:
        r, body, _ = get(h, "/streamer?do=sse&n=2")
        assert r.status == 200 and r.getheader("content-type") == "text/event-stream"
        assert body == (b"id: 1\nevent: hello\ndata: first\n\n"
                        b"id: 2\nevent: tick\ndata: tick 0\ndata: second line\n\n"
                        b"id: 3\nevent: tick\ndata: tick 1\ndata: second line\n\n"), body
        r, body, _ = get(h, "/streamer?do=sse&n=1", headers={"Last-Event-ID": "41"})
        assert body.startswith(b"id: 42\nevent: hello\n") and b"id: 43\n" in body, body
        r, body, _ = get(h, "/streamer?do=sse&n=0", headers={"Last-Event-ID": "junk"})
        assert body.startswith(b"id: 1\n"), body


def test_slow_reader_is_bounded_and_others_still_answer():
    with stream_host(["--max-send-queue", "65536"]) as h:
        pid = h.serving_pid()
        idle = rss_kb(pid)
        s = socket.create_connection(("127.0.0.1", h.port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /streamer?do=flood&size=65536 HTTP/1.1\r\nHost: x\r\n\r\n")
        # It reads nothing: the writer is told CLOUD_EFULL, again and again.
        wait_until(lambda: h.http("GET", "/streamer?do=stats").json["full"] >= 5, timeout=15,
                   what="the flood's writer to hit CLOUD_EFULL")
        st = h.http("GET", "/streamer?do=stats").json
        assert not st["done"], st
        # Other connections are answered meanwhile, on fresh connections.
        for _ in range(5):
            r = h.http("GET", "/echo?x=1")
            assert r.status in (200, 204), r
        grown = rss_kb(pid) - idle
        assert grown < 20 * 1024, f"the serving process grew {grown} kB for a slow reader"
        s.close()
        wait_until(lambda: h.http("GET", "/streamer?do=stats").json["done"], timeout=10,
                   what="the writer to see the client go")
        st = h.http("GET", "/streamer?do=stats").json
        assert st["closed"], f"the writer never got CLOUD_ECLOSED: {st}"
        # Accepted: the queue and the kernel's buffers, not the 256 MiB it offered.
        assert st["bytes"] < 64 << 20, st


def test_isolation_a_crashed_writer_ends_its_stream():
    with stream_host(["--isolation", "process"]) as h:
        pid = h.serving_pid()
        r, body, _ = get(h, "/streamer?do=crash")
        assert r.status == 200 and body == b"before\n", (r.status, body)
        h.wait_log(r"died of signal 11")
        assert h.serving_pid() == pid
        r, body, _ = get(h, "/streamer?do=chunks&n=1")
        assert body == b"part 0\n", body


async def test_browser_event_source_reads_and_resumes():
    if not CHROMIUM:
        raise Fail("chromium is not installed (tools/install-deps installs it)")
    with stream_host() as h:
        page = Page(h.port, url=f"http://127.0.0.1:{h.port}/streamer?do=page")
        try:
            await page.attach()
            # The stream ends after 4 events; EventSource reconnects with Last-Event-ID: 4.
            deadline = time.monotonic() + 30
            events = []
            while time.monotonic() < deadline:
                events = await page.events()
                if len(events) >= 8:
                    break
                await asyncio.sleep(0.2)
            assert len(events) >= 8, events
            assert events[:4] == [["hello", "1", "first"], ["tick", "2", "tick 0\nsecond line"],
                                  ["tick", "3", "tick 1\nsecond line"],
                                  ["tick", "4", "tick 2\nsecond line"]], events
            assert [e[1] for e in events[4:8]] == ["5", "6", "7", "8"], events
            assert await page.eval("window.opens") >= 2
        finally:
            await page.close()


if __name__ == "__main__":
    run(globals())
