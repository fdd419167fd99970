"""Build and test dependencies apart: tools/install-deps installs a set (build, run, test,
bench), `make build` asks for build only, so a machine without chromium, prometheus or cmocka
still builds; CMake configures without cmocka and then fails one test instead of passing
without the unit tests. Runs the script with a stub dpkg-query (every package missing) and a
stub id (not root), so it only prints what it would install: nothing on the machine changes."""

import os
import re
import subprocess
import tempfile

from harness import SOURCE_DIR, run

SCRIPT = os.path.join(SOURCE_DIR, "tools", "install-deps")
TEST_TOOLS = {"chromium", "prometheus", "libcmocka-dev", "python3-websockets", "redis-server"}


def stub_bin(d):
    """A PATH folder whose dpkg-query knows no package and whose id says uid 1000."""
    b = os.path.join(d, "bin")
    os.mkdir(b)
    for name, body in (("dpkg-query", "exit 1"), ("id", "echo 1000"),
                       ("apt-get", "echo apt-get must not run >&2; exit 99")):
        p = os.path.join(b, name)
        with open(p, "w") as f:
            f.write("#!/bin/sh\n" + body + "\n")
        os.chmod(p, 0o755)
    return b


def wanted(*sets):
    """The packages install-deps asks for with these set names, and its exit status."""
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, PATH=stub_bin(d) + ":/usr/bin:/bin")
        r = subprocess.run(["/bin/sh", SCRIPT, *sets], capture_output=True, text=True, env=env,
                           timeout=30)
    m = re.search(r"apt-get install -y(.*)$", r.stderr, re.M)
    return (set(m.group(1).split()) if m else set()), r.returncode, r.stderr


def test_build_set_has_no_test_tools():
    pkgs, rc, err = wanted("build")
    assert rc == 1 and pkgs, f"install-deps build as non-root: rc {rc}\n{err}"
    assert {"cmake", "libwebsockets-dev", "libsqlite3-dev", "libhiredis-dev"} <= pkgs, pkgs
    assert not pkgs & TEST_TOOLS, f"build set has test tools {sorted(pkgs & TEST_TOOLS)}"
    assert wanted()[0] == pkgs, "no argument should mean the build set"


def test_run_set_is_build_plus_what_runs():
    build, run_, test = wanted("build")[0], wanted("run")[0], wanted("test")[0]
    assert build < run_, f"run set {sorted(run_)} is not build + more"
    assert "libwebsockets-evlib-ev" in run_, "the host loads lws's libev plugin at run time"
    assert not run_ & TEST_TOOLS, f"run set has test tools {sorted(run_ & TEST_TOOLS)}"
    assert run_ < test and TEST_TOOLS <= test, f"test set lacks {sorted(TEST_TOOLS - test)}"
    assert "redis-server" in wanted("bench")[0]


def test_unknown_set_is_refused():
    _, rc, err = wanted("everything")
    assert rc == 2 and "everything" in err, f"rc {rc}: {err}"


def test_makefile_asks_each_target_for_its_set():
    mk = open(os.path.join(SOURCE_DIR, "Makefile")).read()

    def rule(target):
        m = re.search(rf"^{re.escape(target)}:([^\n]*)\n((?:\t[^\n]*\n)*)", mk, re.M)
        assert m, f"no rule {target}"
        return m.group(1), m.group(2)

    assert "install-deps build" in rule("deps")[1]
    assert rule("build")[0].split() == ["deps"], rule("build")
    assert "deps-test" in rule("build-test")[0] and "install-deps test" in rule("deps-test")[1]
    assert "build-test" in rule("test")[0].split(), rule("test")
    assert "deps-run" in rule("run")[0].split(), rule("run")


def test_cmake_configures_without_cmocka():
    """pkg-config that knows no cmocka: the configure succeeds, no unit.* test but one that
    fails and says why."""
    with tempfile.TemporaryDirectory() as d:
        pc = os.path.join(d, "pkg-config")
        with open(pc, "w") as f:
            f.write('#!/bin/sh\ncase " $* " in *" cmocka "*) exit 1 ;; esac\n'
                    'exec /usr/bin/pkg-config "$@"\n')
        os.chmod(pc, 0o755)
        b = os.path.join(d, "b")
        r = subprocess.run(["cmake", "-S", SOURCE_DIR, "-B", b, f"-DPKG_CONFIG_EXECUTABLE={pc}"],
                           capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, f"configure without cmocka failed:\n{r.stdout}\n{r.stderr}"
        assert "cmocka not found" in r.stdout, r.stdout[-2000:]
        tests = subprocess.run(["ctest", "-N"], cwd=b, capture_output=True, text=True,
                               timeout=60).stdout
        assert "unit.cmocka_missing" in tests and "unit.test_" not in tests, tests
        assert "e2e.test_ws" in tests, tests
        r = subprocess.run(["ctest", "-R", "unit.cmocka_missing"], cwd=b, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode != 0, "the missing-cmocka test passed"


if __name__ == "__main__":
    run(globals())
