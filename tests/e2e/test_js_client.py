"""test_js_client.py: the JS client (sdk/js, npm "wshost-client") in Node 20 with the `ws`
package as its WebSocket option, against the real host: installed from its folder as a package
(package.json "exports"), a token function called before every (re)connect (a refused token
closes 4401 and the next attempt asks for a fresh one), a fixed token that is refused stops,
and a 4403 (refused by the function) stops. Node 22 (a global WebSocket) is not tested here:
it is not installed on this machine."""

import atexit
import json
import os
import shutil
import subprocess
import tempfile
import time

from harness import Host, default_plugins, run, skip, tplugin

from test_auth import SECRET, jwt

DRIVER = r"""
import { connect } from "wshost-client";
import { WebSocket } from "ws";
const [url, mode, ...tokens] = process.argv.slice(2);
const events = [];
let dials = 0, calls = 0;
class Counted extends WebSocket {
  constructor(...a) { super(...a); dials++; }
}
const opts = { WebSocket: Counted, minDelayMs: 10, maxDelayMs: 50 };
if (mode === "function") opts.token = async () => tokens[Math.min(calls++, tokens.length - 1)];
else if (mode === "string") opts.token = tokens[0];
const c = connect(url, opts);
let done;
const finished = new Promise((r) => (done = r));
c.on("open", (e) => events.push(["open", e]));
c.on("identity", (e) => events.push(["identity", e]));
// Sent before any connection: it must survive a refused attempt and reach the function.
c.send("early");
c.on("message", (data, meta) => { events.push(["message", data, meta]); c.close(); });
let closes = 0;
c.on("close", (e) => {
  events.push(["close", e]);
  if (!e.willReconnect) setTimeout(done, 300); // no further dial may follow
  else if (++closes === 3) { c.close(); done(); } // retrying: three tries are enough to see
});
const timer = setTimeout(done, 8000);
await finished;
clearTimeout(timer);
console.log(JSON.stringify({ events, dials, calls, userId: c.userId }));
process.exit(0);
"""


_INSTALLED = []  # one install for the file's tests


def node_with_ws():
    """(node, folder with node_modules holding ws@8 and sdk/js as wshost-client)."""
    if _INSTALLED:
        if isinstance(_INSTALLED[0], str):
            skip(_INSTALLED[0])
        return _INSTALLED[0]
    node = shutil.which("node")
    npm = shutil.which("npm")
    if not node or not npm:
        skip("node or npm is not installed")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    if not version.startswith("v20."):
        skip(f"this test is the Node 20 one (the ws option); node here is {version.strip()}")
    tmp = tempfile.mkdtemp(prefix="wshost-e2e-node-")
    atexit.register(shutil.rmtree, tmp, True)
    sdk = os.path.join(os.environ["WSHOST_SOURCE_DIR"], "sdk", "js")
    # A copy, so npm writes nothing into the source tree; installed like any package.
    pkg = shutil.copytree(sdk, os.path.join(tmp, "wshost-client"))
    r = subprocess.run([npm, "install", "--prefix", tmp, "--no-audit", "--no-fund",
                        "--cache", os.path.join(tmp, "npm-cache"), "ws@8", pkg],
                       capture_output=True, text=True, timeout=180,
                       env={**os.environ, "npm_config_update_notifier": "false"})
    if r.returncode != 0:
        why = [ln for ln in r.stderr.splitlines() if "err" in ln.lower()][:3] or [r.stderr[-300:]]
        _INSTALLED.append("npm install ws@8 failed (no registry?): " + " / ".join(why))
        skip(_INSTALLED[0])
    with open(os.path.join(tmp, "drive.mjs"), "w") as f:
        f.write(DRIVER)
    _INSTALLED.append((node, tmp))
    return node, tmp


def drive(node, tmp, url, mode, *tokens):
    r = subprocess.run([node, os.path.join(tmp, "drive.mjs"), url, mode, *tokens],
                       capture_output=True, text=True, timeout=30, cwd=tmp)
    assert r.returncode == 0, r
    return json.loads(r.stdout)


def names(out):
    return [e[0] for e in out["events"]]


def test_node20_token_function_refreshes_after_4401():
    node, tmp = node_with_ws()
    expired = jwt({"sub": "carol", "exp": int(time.time()) - 120})  # past the 30 s leeway
    fresh = jwt({"sub": "carol", "exp": int(time.time()) + 600})
    with Host(plugins=default_plugins(), flags=["--jwt-secret", SECRET]) as h:
        out = drive(node, tmp, f"ws://127.0.0.1:{h.port}/", "function", expired, fresh)
        ev = out["events"]
        # The expired token: close 4401 saying why (no open event for that attempt), and the
        # client goes on.
        assert ev[0] == ["close", {"code": 4401, "reason": "expired", "willReconnect": True}], ev
        # The next attempt asked the function again and got in as the token's sub.
        assert out["calls"] == 2 and out["dials"] == 2, out
        assert ev[1] == ["open", {"user_id": None, "session_id": None, "resumed": False,
                                  "replayed": 0}], ev
        assert ev[2] == ["identity", {"user_id": "carol"}], ev
        # The message sent before any connection outlived the refused attempt: its answer.
        assert ev[3] == ["message", "I have received your message", {"seq": None}], ev
        assert out["userId"] == "carol", out
        assert ev[4][0] == "close" and ev[4][1]["willReconnect"] is False, ev
        assert len(ev) == 5, ev


def test_node20_fixed_token_refused_and_4403_stop():
    node, tmp = node_with_ws()
    expired = jwt({"sub": "carol", "exp": int(time.time()) - 120})  # past the 30 s leeway
    with Host(plugins=default_plugins(), flags=["--jwt-secret", SECRET]) as h:
        # A fixed string cannot get better: one dial, close 4401, willReconnect false.
        out = drive(node, tmp, f"ws://127.0.0.1:{h.port}/", "string", expired)
        assert out["events"] == [["close", {"code": 4401, "reason": "expired",
                                            "willReconnect": False}]], out
        assert out["dials"] == 1, out
    with Host(plugins={"__websocket__": tplugin("door")}) as h:
        # Refused by the function (cloud_reject 403): close 4403 with its reason, no retry.
        out = drive(node, tmp, f"ws://127.0.0.1:{h.port}/?reject=403", "none")
        assert out["events"] == [["close", {"code": 4403, "reason": "go away",
                                            "willReconnect": False}]], out
        assert out["dials"] == 1, out
        # 429 stays an HTTP answer: the client sees 1006 and retries (backoff).
        out = drive(node, tmp, f"ws://127.0.0.1:{h.port}/?reject=429", "none")
        closes = [e[1] for e in out["events"] if e[0] == "close"]
        assert len(closes) >= 2 and all(c["code"] == 1006 and c["willReconnect"]
                                        for c in closes), out


if __name__ == "__main__":
    run(globals())
