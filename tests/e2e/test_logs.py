"""The host's log (CONTRACT 6): every line of a run has time, level,
source, function and request id, in text or --log-format json; lines about a request carry its
id; a storm of identical warnings is counted, not written line by line."""

import http.client
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


def json_lines(h):
    """Every line the host wrote, each parsed as one JSON object (Fail if one is not)."""
    out = []
    for line in h.log().splitlines():
        try:
            o = json.loads(line)
        except ValueError:
            raise Fail(f"not one JSON object: {line!r}") from None
        if not isinstance(o, dict):
            raise Fail(f"not an object: {line!r}")
        out.append(o)
    return out


def test_json_crash_report_is_one_object_with_a_backtrace_array():
    """A crash in a function, with --log-format json: the report is one object (with the
    frames in a "backtrace" array), not an error line and a raw line per frame. In the
    serving process (which the supervisor replaces) and in a worker (the request gets 502)."""
    for isolation in ("none", "process"):
        with Host(plugins={"crash": tplugin("crash"), "echo": example("echo")},
                  flags=["--log-format", "json", "--isolation", isolation]) as h:
            first = h.serving_pid()
            try:
                r = h.http("GET", "/crash?do=segv", headers={"X-Request-Id": "json-crash-1"},
                           timeout=5)
                assert isolation == "process" and r.status == 502, r
            except (OSError, http.client.HTTPException):
                assert isolation == "none"
                wait_until(lambda: h.serving_pid() != first, 10, what="a new serving process")
            wait_until(lambda: any("backtrace" in o for o in json_lines(h)), 10,
                       what="the crash report")
            wait_until(lambda: h.http("GET", "/_/healthz").status == 200, 10, what="healthz")
            reports = [o for o in json_lines(h) if "backtrace" in o]
            assert len(reports) == 1, reports
            rep = reports[0]
            assert rep["level"] == "error" and rep["source"] == "crash", rep
            assert rep["function"] == "crash" and rep["request_id"] == "json-crash-1", rep
            assert rep["signal"] == "SIGSEGV", rep
            assert (rep["pid"] == first) == (isolation == "none"), (rep, first)
            assert rep["msg"].startswith("function crashed: SIGSEGV (signal 11) at address 0x0 "
                                         "in crash version 1 (sha256 "), rep
            frames = rep["backtrace"]
            assert isinstance(frames, list) and 3 <= len(frames) <= 64, frames
            assert all(isinstance(f, str) and re.search(r"\[0x[0-9a-f]+\]$", f)
                       for f in frames), frames
            assert any(re.search(r"crash\.w?\d+\.so\(crash_deref_null\+0x[0-9a-f]+\)", f)
                       for f in frames), frames


def test_json_access_lines_carry_their_fields():
    """An access line names method, path, status, peer, bytes and duration as fields, not
    only inside msg; a deferred answer and a 404 too."""
    with Host(plugins={"echo": example("echo"), "slow": example("slow")},
              flags=["--log-format", "json"]) as h:
        r = h.http("POST", "/echo?x=1", json_body={"hello": "world"})
        assert r.status == 200, r
        body_len = len(r.body)
        assert h.http("GET", "/slow").status == 200
        assert h.http("GET", "/no-such-function").status == 404
        rid = r.headers["request-id"]
        wait_until(lambda: any(o.get("path") == "/slow" for o in json_lines(h)), 5,
                   what="the deferred access line")
        by_path = {o["path"]: o for o in json_lines(h) if "path" in o}
        echo = by_path["/echo"]
        assert (echo["method"], echo["status"], echo["bytes"]) == ("POST", 200, body_len), echo
        assert echo["request_id"] == rid and echo["function"] == "echo", echo
        assert re.match(r"^(::ffff:)?127\.0\.0\.1$", echo["peer"]), echo
        assert isinstance(echo["duration_ms"], (int, float)) and echo["duration_ms"] >= 0, echo
        slow = by_path["/slow"]
        assert slow["status"] == 200 and slow["note"] == "(deferred)", slow
        assert slow["duration_ms"] >= 150, slow  # the function answers after 200 ms
        assert by_path["/no-such-function"]["status"] == 404
        assert by_path["/no-such-function"]["method"] == "GET"
    # The text form says the same in its message.
    with Host(plugins={"echo": example("echo")}) as h:
        assert h.http("GET", "/echo").status == 200
        h.wait_log(r"echo \S+ GET /echo 200 \S+( \(deferred\))?, \d+ bytes in \d+\.\d ms")


PRIORITY = {"debug": "7", "info": "6", "warn": "4", "error": "3"}


def test_journal_priority_prefix():
    """Under journald each line starts with its syslog priority: --log-journal on, or auto
    when stderr is the stream JOURNAL_STREAM names (device:inode). Elsewhere no prefix."""
    for fmt in ("text", "json"):
        # A crash in a worker too: its report (and, in text, each frame's line) is an error.
        h = Host(plugins={"echo": example("echo"), "crash": tplugin("crash")},
                 flags=["--log-journal", "on", "--log-format", fmt, "--log-level", "debug",
                        "--isolation", "process"])
        with h:
            assert h.http("GET", "/echo").status == 200
            assert h.http("GET", "/_/status", auth="wrong-token").status == 401
            assert h.http("GET", "/crash?do=segv", timeout=5).status == 502
            h.wait_log(r"crash_deref_null")
        lines = h.log().splitlines()
        assert len(lines) > 5
        levels = set()
        frames = 0
        for line in lines:
            m = re.match(r"^<([0-7])>(.*)$", line)
            assert m, f"no priority prefix: {line!r}"
            rest = m.group(2)
            if fmt == "text" and re.match(r"^\S+\[0x[0-9a-f]+\]$", rest):
                assert m.group(1) == "3", line  # a backtrace frame of the crash report
                frames += 1
                continue
            level = json.loads(rest)["level"] if fmt == "json" else rest.split()[1]
            assert m.group(1) == PRIORITY[level], line
            levels.add(level)
        assert {"info", "warn", "error"} <= levels, levels
        assert (frames >= 3) == (fmt == "text"), frames
    # auto: the stream systemd would name is the host's stderr (the log file here).
    h = Host(plugins={"echo": example("echo")})
    open(h.log_path, "ab").close()
    st = os.stat(h.log_path)
    h.env = dict(h.env or {}, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    with h:
        assert h.http("GET", "/echo").status == 200
    assert h.log() and all(re.match(r"^<[0-7]>", l) for l in h.log().splitlines()), h.log_tail()
    # auto with JOURNAL_STREAM naming another stream (a child of a journald-run shell whose
    # stderr was redirected): no prefix.
    h = Host(plugins={"echo": example("echo")}, env={"JOURNAL_STREAM": "1:1"})
    with h:
        assert h.http("GET", "/echo").status == 200
    assert h.log() and not any(l.startswith("<") for l in h.log().splitlines()), h.log_tail()


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
