"""Nothing in plugins/ and no stuck function can take the host down or keep it up
(CONTRACT 4, 6): a plugin written in place and cut short at any offset is refused while the
old version serves; SIGTERM ends a host whose loop a function holds forever."""

import signal

from harness import *  # noqa: F401,F403


def echo_status(h):
    r = h.http("GET", "/_/status", auth=True)
    assert r.status == 200, r
    return r.json["plugins"]["echo"]


def test_truncated_plugin_in_place_is_refused_old_version_serves():
    # Old main: SIGBUS inside dlopen at every cut between 4 KB and the end of the file.
    with Host(flags=["--reload-debounce", "40"]) as h:
        path = os.path.join(h.plugins_dir, "echo.so")
        with open(example("echo"), "rb") as f:
            whole = f.read()
        assert echo_status(h)["version"] == 1
        n = len(whole)
        cuts = sorted({0, 3, 52, 64, 200, 4096, 5000, n // 8, n // 4, n // 3, n // 2,
                       2 * n // 3, 3 * n // 4, 7 * n // 8, n - 4096, n - 2048, n - 512, n - 64,
                       n - 8, n - 1} - {n})
        refused = 0
        for cut in cuts:
            before = echo_status(h).get("last_error_at_ms", 0)
            with open(path, "r+b") as f:  # in place: the same inode, as a careless deploy does
                f.truncate(0)
                f.write(whole[:cut])
            # Wait past the debounce for the host's verdict on this cut.
            st = wait_until(lambda: (lambda s: s if s.get("last_error_at_ms", 0) > before
                                     else None)(echo_status(h)), timeout=10,
                            what=f"refusal of echo.so cut at {cut} of {n}")
            assert h.running(), f"host died on echo.so cut at {cut} of {n}:\n{h.log_tail()}"
            assert st["version"] == 1 and st["loaded"], (cut, st)
            assert st["last_error"], (cut, st)
            r = h.http("GET", "/echo?cut=%d" % cut)
            assert r.status == 200 and r.json["query"] == {"cut": str(cut)}, (cut, r)
            refused += 1
            # Distinct sizes only: the same size and mtime second would not be a change.
            time.sleep(0.01)
        assert refused == len(cuts)
        log = h.log()
        assert re.search(r"echo\.so refused: .*truncated\?; version 1 keeps serving", log), log
        # The whole file again: the watch still works and loads it.
        with open(path, "r+b") as f:
            f.truncate(0)
            f.write(whole)
        wait_until(lambda: echo_status(h).get("version") == 2, timeout=10, what="version 2")
        assert h.http("GET", "/echo").status == 200


async def test_sigterm_ends_host_with_function_stuck_in_a_loop():
    # Old main: signals were loop watchers; with the loop stuck, SIGTERM did nothing.
    # In-process: the function holds the loop itself (test_isolation.py has the same with
    # --isolation process, where it holds only its worker).
    h = Host(plugins={"__websocket__": tplugin("spin")},
             flags=["--drain-timeout", "1", "--isolation", "none"])
    with h:
        ws = await h.ws()
        await ws.send("hello")
        assert await recv(ws) == "hello"
        await ws.send("spin")
        # The loop is held: /_/healthz stops answering (polled: a loaded machine may take a
        # moment to run the message).
        stuck = False
        for _ in range(20):
            try:
                await asyncio.to_thread(h.http, "GET", "/_/healthz", timeout=1)
                await asyncio.sleep(0.2)
            except (OSError, http.client.HTTPException):
                stuck = True
                break
        assert stuck, "healthz kept answering: the function did not hold the loop"
        t0 = time.monotonic()
        h.signal(signal.SIGTERM)
        rc = await asyncio.to_thread(h.wait_exit, 20)
        took = time.monotonic() - t0
        # --drain-timeout 1 + 2 s margin; generous slack for a loaded machine.
        assert took < 8, f"exit took {took:.1f}s"
        assert rc == 1, f"exit status {rc}"
        assert re.search(r"^\S+Z error signals - - drain did not end within --drain-timeout",
                         h.log(), re.M), h.log_tail()


def test_sigterm_idle_still_exits_0_quickly():
    with Host(flags=["--drain-timeout", "5"]) as h:
        t0 = time.monotonic()
        assert h.stop() == 0
        assert time.monotonic() - t0 < 4


if __name__ == "__main__":
    run(globals())
