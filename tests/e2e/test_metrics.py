"""GET /_/metrics: the Prometheus text format, parsed strictly here, with
values that follow what the test did; behind the admin token unless --metrics-public; and
scraped by Debian's real `prometheus` server, whose query API must then know the series."""

import http.client
import json
import math
import shutil
import subprocess
import urllib.parse
import urllib.request

from harness import *  # noqa: F401,F403

NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def parse_labels(text, line):
    """'{a="x",b="y"}' -> {"a": "x", "b": "y"}; Fail on anything the format does not allow."""
    if not text:
        return {}
    body = text[1:-1]
    labels, pos = {}, 0
    while pos < len(body):
        m = LABEL_RE.match(body, pos)
        if not m:
            raise Fail(f"bad label syntax at {body[pos:]!r} in {line!r}")
        if m.group(1) in labels:
            raise Fail(f"label {m.group(1)} twice in {line!r}")
        labels[m.group(1)] = m.group(2)
        pos = m.end()
        if pos < len(body):
            if body[pos] != ",":
                raise Fail(f"expected ',' at {body[pos:]!r} in {line!r}")
            pos += 1
            if pos == len(body):
                raise Fail(f"trailing comma in {line!r}")
    return labels


def parse_metrics(text):
    """Strict parser of the text format 0.0.4 as the host writes it. Returns
    {family: {"type", "help", "samples": [(name, labels, value)]}}."""
    if not text.endswith("\n"):
        raise Fail("the page does not end with a newline")
    families, current = {}, None
    for line in text.split("\n")[:-1]:
        if not line:
            raise Fail("empty line in the page")
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) < 3 or parts[1] not in ("HELP", "TYPE"):
                raise Fail(f"comment that is neither HELP nor TYPE: {line!r}")
            name = parts[2]
            if not NAME_RE.match(name):
                raise Fail(f"bad metric name {name!r}")
            fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
            if parts[1] == "TYPE":
                if fam["type"] is not None:
                    raise Fail(f"second TYPE for {name}")
                if fam["samples"]:
                    raise Fail(f"TYPE for {name} after its samples")
                if len(parts) != 4 or parts[3] not in TYPES:
                    raise Fail(f"bad TYPE line {line!r}")
                fam["type"] = parts[3]
            else:
                if fam["help"] is not None:
                    raise Fail(f"second HELP for {name}")
                fam["help"] = parts[3] if len(parts) == 4 else ""
            current = name
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            raise Fail(f"bad sample line {line!r}")
        name, labels, value = m.group(1), parse_labels(m.group(2), line), m.group(3)
        try:
            v = float(value)
        except ValueError:
            raise Fail(f"bad value in {line!r}") from None
        base = current
        if base is None or not (name == base or (
                families[base]["type"] == "histogram"
                and name in (base + "_bucket", base + "_sum", base + "_count"))):
            raise Fail(f"sample {name} outside its family's block (current {current})")
        if families[base]["type"] is None:
            raise Fail(f"sample {name} before a TYPE line")
        if families[base]["type"] == "counter" and (v < 0 or math.isnan(v)):
            raise Fail(f"negative counter {line!r}")
        families[base]["samples"].append((name, labels, v))
    for name, fam in families.items():
        if fam["type"] == "histogram":
            check_histogram(name, fam["samples"])
        seen = set()
        for s in fam["samples"]:
            key = (s[0], tuple(sorted(s[1].items())))
            if key in seen:
                raise Fail(f"series {key} twice")
            seen.add(key)
    return families


def check_histogram(name, samples):
    groups = {}
    for n, labels, v in samples:
        key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        g = groups.setdefault(key, {"buckets": [], "sum": None, "count": None})
        if n.endswith("_bucket"):
            if "le" not in labels:
                raise Fail(f"{n} without le")
            g["buckets"].append((math.inf if labels["le"] == "+Inf" else float(labels["le"]), v))
        elif n.endswith("_sum"):
            g["sum"] = v
        else:
            g["count"] = v
    for key, g in groups.items():
        b = g["buckets"]
        if not b or b[-1][0] != math.inf:
            raise Fail(f"{name}{key}: no +Inf bucket last")
        if [x[0] for x in b] != sorted(x[0] for x in b):
            raise Fail(f"{name}{key}: le not increasing")
        if any(b[i][1] > b[i + 1][1] for i in range(len(b) - 1)):
            raise Fail(f"{name}{key}: buckets not cumulative: {b}")
        if g["count"] is None or g["sum"] is None or g["count"] != b[-1][1]:
            raise Fail(f"{name}{key}: _count {g['count']} != +Inf bucket {b[-1][1]}")


def value(families, name, **labels):
    """The value of one series (labels must match exactly, le aside), Fail if absent."""
    for fam in families.values():
        for n, l, v in fam["samples"]:
            if n == name and l == labels:
                return v
    raise Fail(f"no series {name}{labels}")


def scrape(h, auth=True):
    r = h.http("GET", "/_/metrics", auth=auth)
    assert r.status == 200, f"/_/metrics: {r}"
    ctype = r.headers.get("content-type", "")
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
    return parse_metrics(r.text)


def test_metrics_need_the_admin_token():
    with Host(plugins={"echo": example("echo")}) as h:
        r = h.http("GET", "/_/metrics")
        assert r.status == 401, f"no token: {r}"
        r = h.http("GET", "/_/metrics", auth="wrong-token")
        assert r.status == 401, f"wrong token: {r}"
        scrape(h)
    with Host(plugins={"echo": example("echo")}, flags=["--metrics-public"]) as h:
        scrape(h, auth=False)
        # Only the metrics page became public.
        assert h.http("GET", "/_/status").status == 401


async def test_series_follow_what_happened():
    plugins = default_plugins()
    plugins["fail"] = tplugin("fail")
    with Host(plugins=plugins, flags=["--allowed-origins", "http://ok.example"]) as h:
        before = scrape(h)
        assert value(before, "wshost_connections") == 0
        assert value(before, "wshost_ws_upgrades_total") == 0
        # HTTP: two calls of echo, one failing call.
        for _ in range(2):
            assert (await h.ahttp("POST", "/echo", json_body={"a": 1})).status == 200
        assert (await h.ahttp("GET", "/fail")).status == 500
        # Refused upgrades: a wrong origin (403) and a wrong version (426), twice.
        for _ in range(2):
            r = await asyncio.to_thread(http_request, h.port, "GET", "/", None, {
                "Upgrade": "websocket", "Connection": "Upgrade", "Origin": "http://evil.example",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"})
            assert r.status == 403, r
        r = await asyncio.to_thread(http_request, h.port, "GET", "/", None, {
            "Upgrade": "websocket", "Connection": "Upgrade", "Origin": "http://ok.example",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "8"})
        assert r.status == 426, r
        # A user: greeting out, one message in ("hi"), the reply out. Then offline, one
        # queued push, and back: the outbox delivers it.
        ws, greeting = await user_with_origin(h)
        await ws.send("hi")
        assert await recv(ws) == "I have received your message"
        mid = scrape(h)
        assert value(mid, "wshost_connections") == 1
        assert value(mid, "wshost_users_online") == 1
        await go_offline(h, ws, greeting["user_id"])
        assert (await h.apush(greeting["user_id"], "while you were away")).json == {"delivered": 0}
        ws2 = await ws_connect(h.ws_url(f"user_id={greeting['user_id']}&token={greeting['token']}"),
                               origin="http://ok.example")
        _, queued = await collect(ws2, 1)
        assert queued == ["while you were away"], queued
        await ws2.close()
        # A reload through the watch, and one refused (not an ELF).
        h.add_plugin("echo", example("echo"))
        with open(os.path.join(h.plugins_dir, "junk.so.tmp"), "w") as f:
            f.write("not a shared object")
        os.rename(os.path.join(h.plugins_dir, "junk.so.tmp"), os.path.join(h.plugins_dir, "junk.so"))
        await async_wait_until(lambda: value(scrape(h), "wshost_plugin_reloads_total",
                                             result="refused") >= 1, timeout=10,
                               what="the refused reload to be counted")
        # The load runs on the loader thread: counted when it is swapped in.
        await async_wait_until(lambda: value(scrape(h), "wshost_plugin_reloads_total",
                                             result="loaded") >= 1, timeout=10,
                               what="the reload to be counted")
        await async_wait_until(lambda: value(scrape(h), "wshost_connections") == 0, timeout=5,
                               what="connections gauge back to 0")
        m = scrape(h)
        assert value(m, "wshost_function_calls_total", function="echo") == 2
        assert value(m, "wshost_function_errors_total", function="echo") == 0
        assert value(m, "wshost_function_calls_total", function="fail") == 1
        assert value(m, "wshost_function_errors_total", function="fail") == 1
        assert value(m, "wshost_function_duration_seconds_count", function="echo") == 2
        assert value(m, "wshost_function_duration_seconds_bucket", function="echo", le="+Inf") == 2
        # __websocket__ ran for: 2 connections, 1 message, 2 closes.
        assert value(m, "wshost_function_calls_total", function="__websocket__") == 5
        assert value(m, "wshost_ws_upgrades_total") == 2
        assert value(m, "wshost_ws_closed_total") == 2
        assert value(m, "wshost_ws_upgrades_refused_total", reason="origin", status="403") == 2
        assert value(m, "wshost_ws_upgrades_refused_total", reason="bad_version",
                     status="426") == 1
        assert value(m, "wshost_ws_messages_received_total") == 1
        assert value(m, "wshost_ws_received_bytes_total") == 2
        # greeting, reply, greeting again, the queued message
        assert value(m, "wshost_ws_messages_sent_total") == 4
        assert value(m, "wshost_ws_sent_bytes_total") >= len("I have received your message") \
            + len("while you were away")
        assert value(m, "wshost_outbox_delivered_total") == 1
        assert value(m, "wshost_outbox_messages") == 0
        assert value(m, "wshost_users") >= 1
        assert value(m, "wshost_ws_send_queue_overflows_total") == 0
        assert value(m, "wshost_plugin_reloads_total", result="loaded") >= 1
        assert value(m, "wshost_store_commit_duration_seconds_count") >= 1
        assert value(m, "wshost_store_wal_bytes") > 0
        assert value(m, "wshost_store_db_bytes") > 0
        assert value(m, "wshost_draining") == 0
        assert abs(value(m, "wshost_start_time_seconds") - time.time()) < 600


async def user_with_origin(h):
    ws = await ws_connect(h.ws_url(), origin="http://ok.example")
    return ws, await recv_json(ws)


def test_slow_reader_counted():
    """A reader that never reads past --max-send-queue is closed and counted."""
    with Host(plugins={"__websocket__": tplugin("ws_echo")},
              flags=["--max-send-queue", "65536"]) as h:
        raw = h.raw(rcvbuf=4096)
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        block = "x" * 16384
        try:
            for i in range(400):
                raw.send_frame(OP_TEXT, block)
                if i % 8 == 7 and value(scrape(h), "wshost_ws_send_queue_overflows_total"):
                    break
        finally:
            raw.close()
        wait_until(lambda: value(scrape(h), "wshost_ws_send_queue_overflows_total") == 1,
                   timeout=10, what="one send-queue overflow")


def project_version():
    with open(os.path.join(SOURCE_DIR, "CMakeLists.txt")) as f:
        m = re.search(r"^project\(wshost VERSION (\S+)", f.read(), re.M)
    assert m, "no project(wshost VERSION ...) in CMakeLists.txt"
    return m.group(1)


def abi_version():
    with open(os.path.join(SOURCE_DIR, "sdk", "include", "cloud.h")) as f:
        return int(re.search(r"#define CLOUD_ABI_VERSION (\d+)", f.read()).group(1))


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise Fail(f"no {key} for {pid}")


def soft_nofile(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise Fail("no Max open files")


def promtool_check(text):
    """`promtool check metrics` on the page: exit 0 and nothing to say."""
    promtool = shutil.which("promtool")
    if not promtool:
        raise Fail("promtool is not installed (apt-get install prometheus; tools/install-deps)")
    p = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True,
                       timeout=30)
    out = (p.stdout + p.stderr).decode()
    assert p.returncode == 0 and not out.strip(), f"promtool check metrics: {p.returncode}\n{out}"


async def test_process_build_status_event_series_and_promtool():
    """The standard process_* series (this serving process, from /proc), wshost_build_info,
    HTTP requests by status, and a duration histogram per event type; promtool is clean."""
    plugins = default_plugins()
    plugins["fail"] = tplugin("fail")
    with Host(plugins=plugins, flags=["--isolation", "none"]) as h:
        pid = h.serving_pid()
        for _ in range(2):
            assert (await h.ahttp("POST", "/echo", json_body={"a": 1})).status == 200
        assert (await h.ahttp("GET", "/fail")).status == 500
        assert (await h.ahttp("GET", "/no-such-function")).status == 404
        assert (await h.ahttp("GET", "/_/status", auth="wrong-token")).status == 401
        ws, _ = await h.user()
        await ws.send("hi")
        assert await recv(ws) == "I have received your message"
        await ws.close()
        await async_wait_until(lambda: value(scrape(h), "wshost_connections") == 0, timeout=5,
                               what="the close to be seen")
        text = h.http("GET", "/_/metrics", auth=True).text
        promtool_check(text)
        m = parse_metrics(text)
        for name, kind in (("process_cpu_seconds_total", "counter"),
                           ("process_resident_memory_bytes", "gauge"),
                           ("process_open_fds", "gauge"), ("process_max_fds", "gauge"),
                           ("process_start_time_seconds", "gauge"),
                           ("wshost_build_info", "gauge"), ("wshost_crashes_total", "counter"),
                           ("wshost_event_duration_seconds", "histogram")):
            assert m.get(name, {}).get("type") == kind, (name, m.get(name))
        rss = value(m, "process_resident_memory_bytes")
        vm_rss = proc_status(pid, "VmRSS") * 1024
        assert 0.5 * vm_rss < rss < 2 * vm_rss, (rss, vm_rss)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        assert abs(value(m, "process_open_fds") - fds) <= 3, (value(m, "process_open_fds"), fds)
        assert value(m, "process_max_fds") == soft_nofile(pid)
        assert abs(value(m, "process_start_time_seconds") - time.time()) < 120
        assert value(m, "process_start_time_seconds") <= time.time() + 1
        assert 0 <= value(m, "process_cpu_seconds_total") < 120
        info = m["wshost_build_info"]["samples"]
        assert len(info) == 1 and info[0][2] == 1, info
        labels = info[0][1]
        assert labels["version"] == project_version(), labels
        assert labels["abi"] == str(abi_version()), labels
        assert re.match(r"^4\.", labels["lws"]), labels
        assert value(m, "wshost_http_requests_total", status="200") >= 2  # + healthz, this
        assert value(m, "wshost_http_requests_total", status="500") == 1
        assert value(m, "wshost_http_requests_total", status="404") == 1
        assert value(m, "wshost_http_requests_total", status="401") == 1
        ev = lambda e: value(m, "wshost_event_duration_seconds_count", event=e)  # noqa: E731
        assert ev("HTTP") == 3  # echo twice and fail (the 404 ran no function)
        assert ev("WebSocket:connection") == 1 and ev("WebSocket:message") == 1, m
        assert ev("WebSocket:close") == 1
        assert value(m, "wshost_event_duration_seconds_bucket", event="HTTP", le="+Inf") == 3


def test_crashes_counted_by_function():
    """wshost_crashes_total{function}: a crash in a worker is counted at once; a crash of the
    serving process is counted by the one that replaces it (from the crash records)."""
    plugins = {"crash": tplugin("crash"), "echo": example("echo")}
    with Host(plugins=plugins, flags=["--isolation", "process"]) as h:
        assert scrape(h).get("wshost_crashes_total", {}).get("samples") == []
        r = h.http("GET", "/crash?do=segv", timeout=5)
        assert r.status == 502, r
        text = h.http("GET", "/_/metrics", auth=True).text
        promtool_check(text)
        assert value(parse_metrics(text), "wshost_crashes_total", function="crash") == 1
    with Host(plugins=plugins, flags=["--isolation", "none"]) as h:
        first = h.serving_pid()
        try:
            h.http("GET", "/crash?do=segv", timeout=5)
            raise Fail("the crashing request was answered")
        except (OSError, http.client.HTTPException):
            pass
        wait_until(lambda: h.serving_pid() != first, 10, what="a new serving process")
        m = wait_until(lambda: h.http("GET", "/_/metrics", auth=True), 10,
                       what="metrics after the restart")
        assert m.status == 200, m
        promtool_check(m.text)
        assert value(parse_metrics(m.text), "wshost_crashes_total", function="crash") == 1


def test_prometheus_scrapes_it():
    prom = shutil.which("prometheus")
    if not prom:
        skip("no prometheus binary (apt-get install prometheus; tools/install-deps installs it)")
    with Host(plugins={"echo": example("echo")}) as h:
        assert h.http("POST", "/echo", json_body={"x": 1}).status == 200
        tmp = os.path.join(h.tmp, "prom")
        os.mkdir(tmp)
        token_file = os.path.join(tmp, "token")
        with open(token_file, "w") as f:
            f.write(h.admin_token)
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: wshost
    metrics_path: /_/metrics
    authorization:
      type: Bearer
      credentials_file: {token_file}
    static_configs:
      - targets: ["127.0.0.1:{h.port}"]
""")
        web = free_port()
        log_path = os.path.join(tmp, "prometheus.log")
        with open(log_path, "wb") as log:
            p = subprocess.Popen([prom, f"--config.file={config}",
                                  f"--storage.tsdb.path={os.path.join(tmp, 'data')}",
                                  f"--web.listen-address=127.0.0.1:{web}"],
                                 stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            def query(q):
                url = f"http://127.0.0.1:{web}/api/v1/query?" + urllib.parse.urlencode({"query": q})
                try:
                    with urllib.request.urlopen(url, timeout=5) as r:
                        d = json.loads(r.read())
                except OSError:
                    return None
                assert d.get("status") == "success", d
                return d["data"]["result"]

            def series():
                if p.poll() is not None:
                    raise Fail("prometheus exited:\n" + open(log_path).read()[-3000:])
                return query('wshost_function_calls_total{job="wshost",function="echo"}')

            res = wait_until(series, timeout=60, interval=0.5, what="prometheus to scrape wshost")
            assert float(res[0]["value"][1]) == 1, res
            up = query('up{job="wshost"}')
            assert up and up[0]["value"][1] == "1", up
            hist = query('wshost_function_duration_seconds_count{function="echo"}')
            assert hist and float(hist[0]["value"][1]) == 1, hist
        finally:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


if __name__ == "__main__":
    run(globals())
