"""Work that waits end to end (CONTRACT 8): plugins/slow.c answers from a worker
thread after 200 ms while 20 WebSocket clients keep echoing (p99 under 50 ms); a deferred
response never completed gets 504 after --defer-timeout; a response completes exactly once;
a version with a response outstanding stays loaded across a reload until it is answered; a
client that leaves first costs nothing."""

import concurrent.futures
import os
import socket

from harness import *  # noqa: F401,F403


def slow_host(**kw):
    return Host(plugins={"__websocket__": tplugin("ws_echo"), "slow": example("slow"),
                         "defer_never": tplugin("defer_never")}, **kw)


def test_slow_answers_from_its_thread():
    with slow_host() as h:
        t0 = time.monotonic()
        r = h.http("GET", "/slow")
        dt = time.monotonic() - t0
        assert r.status == 200 and r.json == {"answer": "from the backend", "ms": 200}, r
        assert dt >= 0.19, dt
        assert "request-id" in r.headers
        h.wait_log(r"slow \S+ GET /slow 200 \S+ \(deferred\)")
        assert h.http("GET", "/_/status", auth=True).json["deferred"] == 0


async def test_loop_keeps_serving_while_responses_wait():
    with slow_host() as h:
        clients = [(await h.user())[0] for _ in range(20)]

        async def measure():
            """p99 of 800 echoes while 4 threads keep /slow (200 ms each) busy."""
            stop = False

            def hammer():
                n = 0
                while not stop:
                    r = h.http("GET", "/slow", timeout=30)
                    assert r.status == 200, r
                    n += 1
                return n

            pool = concurrent.futures.ThreadPoolExecutor(4)
            slow_calls = [pool.submit(hammer) for _ in range(4)]
            rtts = []

            async def echo(ws, i):
                for k in range(40):
                    t0 = time.monotonic()
                    await ws.send(f"c{i} m{k}")
                    assert await recv(ws, 10) == f"c{i} m{k}"
                    rtts.append(time.monotonic() - t0)
                    await asyncio.sleep(0.01)

            await asyncio.gather(*(echo(ws, i) for i, ws in enumerate(clients)))
            stop = True
            done = sum(f.result(timeout=30) for f in slow_calls)
            pool.shutdown()
            assert done >= 4, done
            rtts.sort()
            return rtts[int(len(rtts) * 0.99) - 1], done

        # Each slow call would hold the loop for 200 ms if it ran there; deferred, the echoes
        # do not wait for it. A sanitizer build runs several times slower: the bound widens
        # there, still well under the 200 ms a blocked loop adds. This machine is shared: a
        # busy moment of someone else's may spoil one measurement, never three (a blocked loop
        # spoils every one).
        bound = 0.150 if sanitized() else 0.050
        seen = []
        for _ in range(3):
            p99, done = await measure()
            seen.append(round(p99 * 1e3, 1))
            if p99 < bound:
                break
        assert p99 < bound, f"p99 (ms) {seen} over 800 echoes each, {done} slow calls"
        for ws in clients:
            await ws.close()


def test_never_completed_gets_504():
    with slow_host(flags=["--defer-timeout", "1"]) as h:
        t0 = time.monotonic()
        r = h.http("GET", "/defer_never", timeout=10)
        dt = time.monotonic() - t0
        assert r.status == 504 and r.json == {"error": "Gateway Timeout"}, r
        assert 0.9 <= dt < 5, dt
        h.wait_log(r"defer_never \S+ deferred response not completed within 1 s: 504")
        # A response set on ctx after cloud_defer was refused.
        h.wait_log(r"response after defer: %d" % CLOUD_ESTATE)
        assert h.http("GET", "/_/status", auth=True).json["deferred"] == 0


def test_completed_exactly_once():
    with slow_host() as h:
        r = h.http("GET", "/defer_never?twice=1")
        assert r.status == 201 and r.text == "first", r
        h.wait_log(r"completions: first 0 second %d" % CLOUD_EINVAL)


def test_version_stays_loaded_until_its_response_is_done():
    with slow_host() as h:
        pool = concurrent.futures.ThreadPoolExecutor(1)
        pending = pool.submit(h.http, "GET", "/slow?ms=1500", None, None, None, 20)
        wait_until(lambda: h.http("GET", "/_/status", auth=True).json["deferred"] == 1,
                   what="the response to be deferred")
        h.add_plugin("slow", example("slow"))  # a reload while version 1 owes a response
        h.wait_log(r"slow\.so loaded: version 2")
        assert "version 1 unloaded" not in h.log()
        r = pending.result(timeout=20)
        pool.shutdown()
        assert r.status == 200 and r.json["ms"] == 1500, r
        h.wait_log(r"last deferred response done, version 1 unloaded")
        # Version 2 serves.
        assert h.http("GET", "/slow?ms=10").status == 200


def test_client_gone_before_the_response():
    with slow_host() as h:
        s = socket.create_connection(("127.0.0.1", h.port), timeout=5)
        s.sendall(b"GET /slow?ms=300 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: h.http("GET", "/_/status", auth=True).json["deferred"] == 1,
                   what="the response to be deferred")
        s.close()
        # lws may notice the close only when it writes the response: either way the host
        # lets go of the response once, and keeps serving (ASan checks the rest).
        h.wait_log(r"deferred response 200 dropped: the client went away|GET /slow 200 .*deferred")
        wait_until(lambda: h.http("GET", "/_/status", auth=True).json["deferred"] == 0,
                   what="no response outstanding")
        assert h.http("GET", "/slow?ms=10").status == 200


async def test_deferred_push_from_another_thread():
    """cloud_deferred_send_to_user from a plugin's own thread: the push runs on the loop and
    the deferred response carries its outcome (CONTRACT 8: cloud_deferred_* from any thread)."""
    with Host(plugins={"__websocket__": tplugin("ws_echo"),
                       "defer_push_thread": tplugin("defer_push_thread")}) as h:
        ws, g = await h.user()
        body = {"user_id": g["user_id"], "message": "from a thread"}
        r = await asyncio.to_thread(h.http, "POST", "/defer_push_thread", json_body=body)
        assert r.status == 200 and r.json == {"delivered": 1}, r
        assert await recv(ws) == "from a thread"
        body = {"user_id": "nobody-here", "message": "x"}
        r = await asyncio.to_thread(h.http, "POST", "/defer_push_thread", json_body=body)
        assert r.status == 404 and r.json == {"error": "no such user"}, r
        # An id too long to be one is answered like any unknown id, in every mode.
        r = await asyncio.to_thread(h.http, "POST", "/defer_push_thread", json_body={
            "user_id": "u" * 200, "message": "x"})
        assert r.status == 404 and r.json == {"error": "no such user"}, r
        await ws.close()


if __name__ == "__main__":
    run(globals())

