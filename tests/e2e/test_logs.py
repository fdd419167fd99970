"""The host's log (CONTRACT 6): every line of a run has time, level,
source, function and request id, in text or --log-format json; lines about a request carry its
id; a storm of identical warnings is counted, not written line by line."""

import json
import signal

from harness import *  # noqa: F401,F403

TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info |warn |error) [a-z_]+ \S+ \S+ .*$")


async def busy_run(h):
    """A bit of everything that logs: users, a resume with a wrong token, pushes, HTTP, a bad
    admin token, a refused plugin, a plugin error, a stop."""
    ws, g = await h.user()
    bad, _ = await h.user(f"user_id={g['user_id']}&token=wrong")
    await bad.close()
    assert (await h.apush(g["user_id"], "hi")).status == 200
    assert (await h.ahttp("GET", "/echo?x=1")).status == 200
    assert (await h.ahttp("GET", "/_/status", auth="wrong-token")).status == 401
    with open(os.path.join(h.plugins_dir, "broken.so"), "wb") as f:
        f.write(b"\x7fELF" + b"\0" * 100)
    h.wait_log(r"broken\.so refused")
    await ws.close()
    assert await asyncio.to_thread(h.stop) == 0


async def test_every_text_line_has_time_level_source_function_request_id():
    h = Host(flags=["--log-level", "debug"])
    with h:
        await busy_run(h)
    lines = h.log().splitlines()
    assert len(lines) > 10, lines
    for line in lines:
        assert TEXT_LINE.match(line), f"line not in the format: {line!r}"
    # A line about a request carries that request's id.
    refused = [l for l in lines if "refused: no valid bearer token" in l]
    assert refused and all(re.search(r" admin _ [0-9a-f]{8}-[0-9a-f]+ admin GET", l)
                           for l in refused), refused
    # So does a line about a connection (the id of its upgrade) or one of its events.
    about_conn = [l for l in lines
                  if re.search(r" (connection \d+ of user|resume as \S+ from)", l)]
    assert len(about_conn) >= 3, lines
    for l in about_conn:
        assert re.search(r" ws __websocket__ [0-9a-f]{8}-[0-9a-f]+ ", l), l


async def test_json_lines_parse_and_name_their_fields():
    h = Host(flags=["--log-format", "json", "--log-level", "debug"])
    with h:
        await busy_run(h)
    lines = h.log().splitlines()
    assert len(lines) > 10, lines
    seen_rid = False
    for line in lines:
        try:
            o = json.loads(line)
        except ValueError:
            raise Fail(f"not one JSON object: {line!r}")
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", o["time"]), o
        assert o["level"] in ("debug", "info", "warn", "error"), o
        assert re.match(r"^[a-z_]+$", o["source"]) and isinstance(o["msg"], str), o
        if "bearer token" in o["msg"]:
            assert o["function"] == "_" and re.match(r"^[0-9a-f]{8}-[0-9a-f]+$",
                                                     o["request_id"]), o
            seen_rid = True
    assert seen_rid


def test_store_lines_have_the_format_too():
    # Old main: store.c wrote "store: ..." with fprintf, no time, no level.
    h = Host()
    con = sqlite3.connect(h.db)
    con.execute("PRAGMA user_version = 999")
    con.commit()
    con.close()
    h.start(wait=False)
    assert h.wait_exit() != 0
    lines = h.log().splitlines()
    assert any(re.match(r"^\S+Z error store - - database schema version 999 is newer", l)
               for l in lines), lines
    for line in lines:
        assert TEXT_LINE.match(line), f"line not in the format: {line!r}"


def test_bad_token_storm_is_counted_not_logged():
    # Old main: one line per refused request (3 000 requests: ~400 KB of log).
    n = 3000
    with Host() as h:
        before = os.path.getsize(h.log_path)
        s = socket.create_connection(("127.0.0.1", h.port), timeout=10)
        req = (b"GET /_/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\r\n")
        got = b""
        sent = 0
        # Pipelined in batches on one keep-alive connection: fast on a loaded machine.
        while sent < n:
            k = min(100, n - sent)
            s.sendall(req * k)
            sent += k
            while got.count(b"HTTP/1.1 401") < sent:
                chunk = s.recv(65536)
                assert chunk, f"connection closed after {got.count(b'HTTP/1.1 401')} answers"
                got += chunk
        s.close()
        pattern = r"last message repeated (\d+) more times in [\d.]+ s: admin GET /_/status refused"
        wait_until(lambda: re.search(pattern, h.log()), timeout=10, what="a repeat summary")
        # Every refusal is accounted for: written lines plus counted repeats.
        def accounted():
            log = h.log()
            return (log.count("refused: no valid bearer token")
                    - len(re.findall(pattern, log))
                    + sum(int(x) for x in re.findall(pattern, log)))
        wait_until(lambda: accounted() == n, timeout=10, what=f"{n} refusals accounted")
        grown = os.path.getsize(h.log_path) - before
        assert grown < 60 * 1024, f"{n} refusals wrote {grown} bytes of log"
        assert h.http("GET", "/_/healthz").status == 200


if __name__ == "__main__":
    run(globals())
