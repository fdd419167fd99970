"""multipart/form-data uploads through tests/plugins/upload.c: ctx->files (private temp files
in the runtime folder, removed after the function returns) and the other fields in ctx->body,
malformed bodies refused with 400 and a message, --max-body, and a 100 MB upload that keeps
the serving process's RSS within 20 MB of idle. In every mode."""

import json
import os
import socket
import stat
import threading
import time

from harness import *  # noqa: F401,F403

B = "XyZzy42"


def up_host(flags=(), **kw):
    plugins = default_plugins()
    plugins["upload"] = tplugin("upload")
    return Host(plugins=plugins, flags=list(flags), **kw)


def fnv(data):
    h = 1469598103934665603
    for c in data:
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def form(parts):
    out = b""
    for name, filename, ctype, data in parts:
        out += f"--{B}\r\n".encode()
        disp = f'Content-Disposition: form-data; name="{name}"'
        if filename is not None:
            disp += f'; filename="{filename}"'
        out += disp.encode() + b"\r\n"
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{B}--\r\n".encode()


def post(h, body, boundary=B):
    return h.http("POST", "/upload", body=body,
                  headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})


def test_files_and_fields():
    with up_host() as h:
        png = bytes(range(256)) * 40 + b"\r\n--XyZ not a boundary\r\n"
        body = form([("title", None, None, b"holiday"), ("photo", "a.png", "image/png", png),
                     ("note", "n.txt", None, b""), ("tag", None, None, "caf\u00e9".encode())])
        r = post(h, body)
        assert r.status == 200, r
        j = r.json
        assert j["fields"] == {"title": "holiday", "tag": "caf\u00e9"}, j
        assert j["raw"] is False, "the raw body is not kept for an upload"
        f0, f1 = j["files"]
        assert (f0["field"], f0["filename"], f0["content_type"]) == ("photo", "a.png",
                                                                      "image/png"), f0
        assert f0["size"] == f0["read"] == len(png) and f0["fnv"] == fnv(png), f0
        assert f0["mode"] == "600", f0
        assert f1["field"] == "note" and f1["size"] == 0 and f1["content_type"] is None, f1
        run = os.path.dirname(f0["path"])
        assert os.path.basename(run).startswith("wshost-"), run
        assert stat.S_IMODE(os.stat(run).st_mode) == 0o700, oct(os.stat(run).st_mode)
        # Removed once the function returned.
        wait_until(lambda: not os.path.exists(f0["path"]) and not os.path.exists(f1["path"]),
                   timeout=5, what="the temp files to go")


def test_malformed_multipart_is_400_with_a_message():
    with up_host(["--max-body", "100000"]) as h:
        cases = [
            (f"--{B}\r\nContent-Disposition: form-data; name=a\r\n\r\nno end".encode(),
             "ends before its closing boundary"),
            (f"--{B}\r\nContent-Type: text/plain\r\n\r\nv\r\n--{B}--".encode(),
             "without Content-Disposition"),
            (f"--{B}junk\r\n".encode(), "not followed by a line break"),
            (f"--{B}\r\nX: " .encode() + b"a" * 9000 + b"\r\n\r\n", "over 8192"),
        ]
        for body, why in cases:
            r = post(h, body)
            assert r.status == 400 and why in r.json["message"], (why, r)
        r = h.http("POST", "/upload", body=b"x",
                   headers={"Content-Type": "multipart/form-data"})
        assert r.status == 400 and "boundary" in r.json["message"], r
        r = http_upload(h.port, "/upload", 200000,
                        content_type=f"multipart/form-data; boundary={B}")
        assert r.status == 413, r
        # Still serving.
        assert post(h, form([("a", None, None, b"1")])).json["fields"] == {"a": "1"}


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise Fail("no VmRSS")


def test_100mb_upload_keeps_rss_flat():
    total = 100 * 1024 * 1024
    with up_host(["--max-body", str(200 * 1024 * 1024)]) as h:
        pid = h.serving_pid()
        post(h, form([("warm", "w", None, b"x" * 100000)]))  # first-use allocations
        idle = rss_kb(pid)
        peak = [idle]
        done = threading.Event()

        def sample():
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], rss_kb(pid))
                except (OSError, Fail):
                    return
                time.sleep(0.02)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        head = (f"--{B}\r\nContent-Disposition: form-data; name=\"big\"; filename=\"big.bin\""
                f"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
        tail = f"\r\n--{B}--\r\n".encode()
        s = socket.create_connection(("127.0.0.1", h.port), timeout=60)
        try:
            s.sendall((f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                       f"boundary={B}\r\nContent-Length: {len(head) + total + len(tail)}\r\n\r\n"
                       ).encode() + head)
            block = b"q" * (1 << 20)
            for _ in range(total // len(block)):
                s.sendall(block)
            s.sendall(tail)
            got = b""
            while b"\r\n\r\n" not in got or not got.rstrip().endswith(b"}"):
                d = s.recv(65536)
                if not d:
                    break
                got += d
        finally:
            s.close()
            done.set()
            t.join(5)
        assert b" 200 " in got.split(b"\r\n")[0], got[:200]
        body = json.loads(got.split(b"\r\n\r\n", 1)[1])
        f = body["files"][0]
        assert f["size"] == total and f["read"] == total, f
        grown = peak[0] - idle
        assert grown < 20 * 1024, f"the serving process grew {grown} kB for a 100 MB upload"
        wait_until(lambda: not os.path.exists(f["path"]), timeout=5, what="the temp file to go")


if __name__ == "__main__":
    run(globals())
