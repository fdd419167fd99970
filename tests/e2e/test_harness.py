"""The test runner itself (harness.run): a skipped test is reported as skipped, never as passed;
a file whose every test skipped exits 77, which ctest shows as "Not Run" (SKIP_RETURN_CODE);
a name filter that selects nothing, or names a test that does not exist, fails."""

from harness import *  # noqa: F401,F403

SAMPLE = '''
import os, sys
sys.path.insert(0, {harness_dir!r})
from harness import *

def test_passes():
    assert 1 + 1 == 2

def test_needs_a_tool():
    skip("the tool is not installed")

def test_fails_when_asked():
    assert not os.environ.get("SAMPLE_FAIL"), "asked to fail"

if __name__ == "__main__":
    if os.environ.get("SAMPLE_SKIP_FILE"):
        skip_file("the server is not installed")
    run(globals())
'''


def sample(*args, **env):
    d = tempfile.mkdtemp(prefix="wshost-harness-")
    path = os.path.join(d, "sample_tests.py")
    with open(path, "w") as f:
        f.write(SAMPLE.format(harness_dir=os.path.dirname(os.path.abspath(__file__))))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SAMPLE_")}
    r = subprocess.run([sys.executable, path, *args], capture_output=True, text=True, timeout=60,
                       env={**clean, **env})
    shutil.rmtree(d, ignore_errors=True)
    return r.returncode, r.stdout + r.stderr


def test_a_skip_is_reported_as_a_skip():
    rc, out = sample()
    assert rc == 0, out
    assert "SKIP test_needs_a_tool: the tool is not installed" in out, out
    assert "PASS test_needs_a_tool" not in out, out
    assert "2 passed, 0 failed, 1 skipped" in out, out


def test_every_test_skipped_exits_77():
    rc, out = sample("test_needs_a_tool")
    assert rc == 77, (rc, out)
    assert "0 passed, 0 failed, 1 skipped" in out, out
    rc, out = sample(SAMPLE_SKIP_FILE="1")
    assert rc == 77 and "SKIP all tests: the server is not installed" in out, (rc, out)


def test_a_failure_still_fails_beside_a_skip():
    rc, out = sample("test_needs_a_tool", "test_fails_when_asked", SAMPLE_FAIL="1")
    assert rc == 1 and "FAIL test_fails_when_asked" in out, (rc, out)


def test_a_filter_that_selects_nothing_fails():
    rc, out = sample("test_no_such_thing")
    assert rc not in (0, 77), (rc, out)
    assert "no such test: test_no_such_thing" in out, out
    # One good name and one typo: the typo is not silently dropped.
    rc, out = sample("test_passes", "test_pases")
    assert rc not in (0, 77) and "test_pases" in out, (rc, out)


def test_ctest_shows_a_skip_as_not_run():
    """The e2e tests are registered with SKIP_RETURN_CODE 77 (CMakeLists.txt)."""
    r = subprocess.run(["ctest", "--show-only=json-v1"], cwd=BUILD_DIR, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    tests = {t["name"]: t for t in json.loads(r.stdout)["tests"]}
    e2e = [n for n in tests if n.startswith("e2e.")]
    assert len(e2e) > 10, sorted(tests)
    for name in e2e:
        props = {p["name"]: p["value"] for p in tests[name].get("properties", [])}
        assert props.get("SKIP_RETURN_CODE") == 77, f"{name}: {props}"


if __name__ == "__main__":
    run(globals())
