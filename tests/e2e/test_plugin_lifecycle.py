"""Loading and unloading plugins against hostile code (docs/PLUGINS.md "Loading and
unloading"), in both isolation modes (WSHOST_E2E_ISOLATION=1 reruns it with --isolation
process):
- a CLOUD_INIT that starts a thread and has no CLOUD_FINI: a reload never unmaps its code
  (the old host died of SIGSEGV after dlclose), the version is counted as leaked;
- a constructor that takes long runs off the loop: /_/healthz answers while it runs;
- a constructor that never returns is refused after --load-timeout, its build quarantined,
  the loaded functions keep serving and /_/status names the stuck load;
- a CLOUD_FINI that does not return does not stall the loop and leaves its version mapped;
  CLOUD_INIT's and CLOUD_FINI's cloud_shared calls still work (the host runs them on the loop).
The plugins wait on a release file the test creates, so no test depends on a duration."""

import hashlib
import os
import re
import subprocess
import tempfile
import atexit
import shutil

from harness import *  # noqa: F401,F403

SDK_INCLUDE = os.path.join(SOURCE_DIR, "sdk", "include")
_builds = tempfile.mkdtemp(prefix="wshost-lifecycle-builds-")
atexit.register(shutil.rmtree, _builds, True)


def build(name, build_no):
    """tests/plugins/<name>.c with -DBUILD=<build_no> (another file hash, another version)."""
    out = os.path.join(_builds, f"{name}-{build_no}.so")
    if not os.path.exists(out):
        src = os.path.join(SOURCE_DIR, "tests", "plugins", name + ".c")
        cmd = ["cc", "-shared", "-fPIC", "-I", SDK_INCLUDE, f"-DBUILD={build_no}", src, "-o",
               out, "-ljansson", "-lpthread"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stderr}"
    return out


def metric(h, name):
    r = h.http("GET", "/_/metrics", auth=True)
    assert r.status == 200, r
    m = re.search(rf"^{name} (\d+)$", r.text, re.M)
    assert m, f"{name} not in /_/metrics"
    return int(m.group(1))


def status(h):
    r = h.http("GET", "/_/status", auth=True, timeout=5)
    assert r.status == 200, r
    return r.json


def plugin(h, name):
    return status(h)["plugins"].get(name, {})


def healthz(h):
    r = h.http("GET", "/_/healthz", timeout=5)
    assert r.status == 200, r


def healthz_or_none(h):
    try:
        return h.http("GET", "/_/healthz", timeout=5).status == 200
    except OSError:
        return False


def no_host_crash(h, pid):
    assert h.serving_pid() == pid, "the serving process was replaced (it crashed)"
    log = h.log()
    assert "host crashed" not in log and "function crashed" not in log, h.log_tail()


def test_thread_started_by_init_outlives_its_version():
    h = Host(plugins={"tn": tplugin("thread_init")})
    with h:
        pid = h.serving_pid()
        r = h.http("GET", "/tn")
        assert r.status == 200 and r.json["build"] == 1, r
        h.add_plugin("tn", build("thread_init", 2))
        wait_until(lambda: h.http("GET", "/tn").json["build"] == 2, timeout=10,
                   what="build 2 serving")
        # Version 1's thread runs its code every millisecond: had the file been unmapped, the
        # process would be dead by now. Let it run a while on the old mapping.
        for _ in range(20):
            time.sleep(0.02)
            assert healthz_or_none(h), "the host stopped answering after the reload"
        no_host_crash(h, pid)
        h.wait_log(r"stays mapped: it started threads and has no CLOUD_FINI", timeout=10)
        assert metric(h, "wshost_plugin_versions_leaked_total") >= 1
        # Build 3 over it: build 2 is kept mapped the same way, and the host still stands.
        h.add_plugin("tn", build("thread_init", 3))
        wait_until(lambda: h.http("GET", "/tn").json["build"] == 3, timeout=10,
                   what="build 3 serving")
        wait_until(lambda: metric(h, "wshost_plugin_versions_leaked_total") >= 2, timeout=10,
                   what="build 2 counted as leaked")
        no_host_crash(h, pid)


def test_constructor_that_takes_long_runs_off_the_loop():
    release = os.path.join(tempfile.mkdtemp(prefix="wshost-release-"), "go")
    h = Host(plugins={"echo": example("echo")}, env={"WSTEST_RELEASE": release},
             flags=["--load-timeout", "60"])
    with h:
        h.add_plugin("cw", tplugin("ctor_wait"))
        # The load is on its way and its constructor has not returned: the loop still serves.
        wait_until(lambda: plugin(h, "cw").get("loading") is True, timeout=10,
                   what="the load in progress")
        for _ in range(5):
            healthz(h)
            assert h.http("GET", "/echo", timeout=5).status == 200
        assert h.http("GET", "/cw", timeout=5).status == 404  # not loaded yet
        assert plugin(h, "cw").get("loading") is True, "the constructor returned unreleased"
        open(release, "w").close()
        wait_until(lambda: h.http("GET", "/cw").status == 200, timeout=15, what="cw loaded")
        assert h.http("GET", "/cw").json == {"ctor": "returned", "build": 1}
        assert plugin(h, "cw").get("loading") is None


def test_constructor_that_never_returns_is_refused_and_quarantined():
    release = os.path.join(tempfile.mkdtemp(prefix="wshost-release-"), "never")
    h = Host(plugins={"echo": example("echo"), "crash": tplugin("crash")},
             env={"WSTEST_RELEASE": release}, flags=["--load-timeout", "2"])
    with h:
        pid = h.serving_pid()
        sha = hashlib.sha256(open(tplugin("ctor_forever"), "rb").read()).hexdigest()
        h.add_plugin("cf", tplugin("ctor_forever"))
        wait_until(lambda: "did not finish loading within --load-timeout" in
                   (plugin(h, "cf").get("last_error") or ""), timeout=15, what="the refusal")
        st = status(h)
        cf = st["plugins"]["cf"]
        assert cf["loaded"] is False, cf
        assert cf["stuck_load"]["holds_loader_lock"] is True, cf
        assert cf["stuck_load"]["sha256"] == sha, cf
        assert st["quarantine"]["cf"]["sha256"] == sha, st["quarantine"]
        assert metric(h, "wshost_plugin_load_timeouts_total") == 1
        # What was loaded keeps serving.
        healthz(h)
        assert h.http("GET", "/echo", timeout=5).status == 200
        assert h.http("GET", "/crash", timeout=5).json == {"build": "crashing"}
        # Nothing else can be loaded while that dlopen holds the loader's lock: said so.
        h.add_plugin("echo2", example("echo"))
        wait_until(lambda: "stuck in a constructor" in
                   (plugin(h, "echo2").get("last_error") or ""), timeout=10,
                   what="the next load refused with the reason")
        if ISOLATION:
            # A worker that dies is replaced by a fresh fork, which loads its copies fine.
            assert h.http("GET", "/crash?do=segv", timeout=10).status == 502
            wait_until(lambda: h.http("GET", "/crash", timeout=5).status == 200, timeout=10,
                       what="a new worker serving")
            assert h.serving_pid() == pid
        else:
            # A crash now must still be reported and end the process (the crash handler must
            # not wait for the loader's lock); the restarted host refuses the stuck build.
            try:
                h.http("GET", "/crash?do=segv", timeout=5)
            except OSError:
                pass
            h.wait_log(r"function crashed: SIGSEGV", timeout=10)
            wait_until(lambda: children_of(h.proc.pid) and children_of(h.proc.pid)[0] != pid,
                       timeout=15, what="the serving process replaced")
            wait_until(lambda: "quarantined" in (plugin(h, "cf").get("last_error") or ""),
                       timeout=15, what="the stuck build refused after the restart")
            assert h.http("GET", "/echo", timeout=5).status == 200
            assert h.http("GET", "/echo2", timeout=5).status == 200


def test_fini_that_does_not_return_stalls_nothing():
    release = os.path.join(tempfile.mkdtemp(prefix="wshost-release-"), "go")
    h = Host(plugins={"fw": tplugin("fini_wait")}, env={"WSTEST_RELEASE": release},
             flags=["--load-timeout", "3"])
    with h:
        pid = h.serving_pid()
        # CLOUD_INIT ran off the loop, and its cloud_shared_set still reached the shared map.
        assert h.http("GET", "/fw").json == {"build": 1, "init_build": 1, "fini_done": None}
        h.add_plugin("fw", build("fini_wait", 2))
        wait_until(lambda: h.http("GET", "/fw").json["build"] == 2, timeout=10,
                   what="build 2 serving")
        # Build 1's CLOUD_FINI is waiting for the release file: the loop is not.
        for _ in range(5):
            healthz(h)
        assert h.http("GET", "/fw").json["init_build"] == 2
        wait_until(lambda: metric(h, "wshost_plugin_versions_leaked_total") == 1, timeout=15,
                   what="build 1 counted as left mapped")
        h.wait_log(r"CLOUD_FINI of version 1 has not returned within --load-timeout")
        if ISOLATION:  # the retiring workers run it too, and are killed past the bound
            h.wait_log(r"was told to quit 3 s ago and is still there \(a CLOUD_FINI that "
                       r"does not return\): killing it", timeout=10)
        # Released late, it returns; its cloud_shared_set is run on the loop for it.
        open(release, "w").close()
        wait_until(lambda: h.http("GET", "/fw").json["fini_done"] == 1, timeout=10,
                   what="build 1's fini done")
        no_host_crash(h, pid)


def test_fini_that_stops_its_threads_lets_the_version_go():
    """The contract kept (plugins/slow.c: CLOUD_INIT starts a thread, CLOUD_FINI joins it):
    the replaced version is dlclose'd, nothing is counted as leaked."""
    h = Host(plugins={"slow": example("slow")})
    with h:
        assert h.http("GET", "/slow?ms=1").status == 200
        stage = os.path.join(h.tmp, "slow-again.so")
        shutil.copyfile(example("slow"), stage)  # a new inode: a new version of the same build
        os.chmod(stage, 0o644)
        os.rename(stage, os.path.join(h.plugins_dir, "slow.so"))
        wait_until(lambda: plugin(h, "slow").get("version") == 2, timeout=10,
                   what="version 2 of slow")
        h.wait_log(r"plugin copy \S+ \(version 1\) unloaded", timeout=10)
        assert metric(h, "wshost_plugin_versions_leaked_total") == 0
        assert h.http("GET", "/slow?ms=1").status == 200


if __name__ == "__main__":
    run(globals())
