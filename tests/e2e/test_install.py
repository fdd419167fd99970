"""Install: `cmake --install` and `make install PREFIX=` into a temporary
prefix; functions built OUTSIDE the repository against that prefix, once with pkg-config and
once with find_package(wshost), then served by the installed wshost."""

import functools
import gzip

from harness import *  # noqa: F401,F403

HELLO_C = r"""
#include <cloud.h>
CLOUD_FUNCTION(ctx) {
  return cloud_response_json(ctx, 200, json_pack("{ss ss}", "hello", HOW, "method", ctx->method));
}
"""

EXPECTED = ["bin/wshost", "bin/wshostctl", "include/wshost/cloud.h", "share/pkgconfig/wshost.pc",
            "share/wshost/cmake/wshostConfig.cmake",
            "share/wshost/cmake/wshostConfigVersion.cmake",
            "share/wshost/examples/CMakeLists.txt", "share/wshost/examples/__websocket__.c",
            "share/wshost/examples/push.c", "share/man/man8/wshost.8.gz",
            "share/man/man8/wshostctl.8.gz", "share/doc/wshost/copyright",
            "share/doc/wshost/changelog.Debian.gz", "share/wshost/wshost.env",
            "lib/systemd/system/wshost.service", "etc/wshost/wshost.env", "etc/wshost/wshost.json",
            "share/wshost/wshost.json"]


def sh(cmd, cwd=None, env=None, timeout=240):
    r = subprocess.run(cmd, cwd=cwd, env=env, shell=isinstance(cmd, str), capture_output=True,
                       text=True, timeout=timeout)
    if r.returncode != 0:
        raise Fail(f"{cmd} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


def files_under(root):
    out = set()
    for d, _, fs in os.walk(root):
        for f in fs:
            out.add(os.path.relpath(os.path.join(d, f), root))
    return out


@functools.lru_cache(maxsize=None)
def prefix():
    """One `cmake --install` for the whole file, into a temp dir outside the repository."""
    p = tempfile.mkdtemp(prefix="wshost-prefix-")
    sh(["cmake", "--install", BUILD_DIR, "--prefix", p])
    return p


def scratch():
    d = tempfile.mkdtemp(prefix="wshost-fn-")
    assert not os.path.abspath(d).startswith(os.path.abspath(SOURCE_DIR) + os.sep)
    return d


class InstalledHost(Host):
    """A Host running <prefix>/bin/wshost instead of the build tree's."""

    def __init__(self, binary, **kw):
        self.binary = binary
        super().__init__(**kw)

    def command(self):
        return [self.binary] + super().command()[1:]


def test_cmake_install_layout():
    p = prefix()
    have = files_under(p)
    missing = [f for f in EXPECTED if f not in have]
    assert not missing, f"not installed: {missing}; have {sorted(have)}"
    assert os.access(os.path.join(p, "bin/wshost"), os.X_OK)
    assert os.access(os.path.join(p, "bin/wshostctl"), os.X_OK)
    # The unit and the settings name this prefix, not the build's or /usr.
    unit = open(os.path.join(p, "lib/systemd/system/wshost.service")).read()
    assert f"ExecStart={p}/bin/wshost --config {p}/etc/wshost/wshost.json\n" in unit, unit
    for line in ("Type=notify", "NotifyAccess=main", "Restart=on-failure", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "PrivateTmp=yes", "LimitNOFILE="):
        assert line in unit, f"{line} missing from the unit"
    env = open(os.path.join(p, "etc/wshost/wshost.env")).read()
    assert f"WSHOST_PLUGINS={p}/var/lib/wshost/plugins" in env, env
    # Secrets go in it: not readable by others (the package gives it to root:wshost).
    mode = os.stat(os.path.join(p, "etc/wshost/wshost.env")).st_mode & 0o777
    assert mode == 0o640, oct(mode)
    assert open(os.path.join(p, "share/wshost/wshost.env")).read() == env
    # The man page comes from --help: every flag of the installed binary is in it.
    help_text = sh([os.path.join(p, "bin/wshost"), "--help"])
    flags = re.findall(r"^  (--[a-z-]+)", help_text, re.M)
    assert len(flags) > 10, help_text
    page = gzip.open(os.path.join(p, "share/man/man8/wshost.8.gz"), "rt").read()
    assert page.startswith(".\\\"") and "\n.TH WSHOST 8 " in page, page[:200]
    for f in flags:
        assert f.replace("-", "\\-") in page, f"{f} not in wshost.8"
    if shutil.which("man"):
        text = sh(["man", "-l", os.path.join(p, "share/man/man8/wshost.8.gz")],
                  env={**os.environ, "MANWIDTH": "100", "MANPAGER": "cat", "PAGER": "cat"})
        assert "--metrics-public" in text and "SYNOPSIS" in text, text[:500]


def test_pkg_config_builds_a_function_outside_the_tree():
    p = prefix()
    d = scratch()
    with open(os.path.join(d, "hello.c"), "w") as f:
        f.write('#define HOW "pkg-config"\n' + HELLO_C)
    env = {**os.environ, "PKG_CONFIG_PATH": os.path.join(p, "share/pkgconfig")}
    cflags = sh(["pkg-config", "--cflags", "--libs", "wshost"], env=env)
    assert "-ljansson" in cflags and "/include/wshost" in cflags, cflags
    # The one line of the issue, through a shell as a user types it.
    sh("cc $(pkg-config --cflags --libs wshost) -shared -fPIC hello.c -o hello.so", cwd=d, env=env)
    # <wshost/cloud.h> works too with the prefix's include dir.
    with open(os.path.join(d, "hello2.c"), "w") as f:
        f.write('#define HOW "x"\n' + HELLO_C.replace("<cloud.h>", "<wshost/cloud.h>"))
    sh(f"cc -I{p}/include -shared -fPIC hello2.c -o hello2.so -ljansson", cwd=d)
    with InstalledHost(os.path.join(p, "bin/wshost"),
                       plugins={"hello": os.path.join(d, "hello.so")}) as h:
        r = h.http("GET", "/hello")
        assert r.status == 200 and r.json == {"hello": "pkg-config", "method": "GET"}, r
    shutil.rmtree(d, ignore_errors=True)


async def test_find_package_builds_functions_outside_the_tree():
    p = prefix()
    d = scratch()
    src = os.path.join(d, "src")
    os.mkdir(src)
    with open(os.path.join(src, "hello.c"), "w") as f:
        f.write('#define HOW "cmake"\n' + HELLO_C)
    with open(os.path.join(src, "CMakeLists.txt"), "w") as f:
        f.write("cmake_minimum_required(VERSION 3.18)\nproject(outside C)\n"
                "find_package(wshost 0.1 REQUIRED)\n"
                "add_cloud_function(hello hello.c)\n"
                "if(NOT TARGET wshost::sdk)\n  message(FATAL_ERROR \"no wshost::sdk\")\nendif()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSHOST_")}
    sh(["cmake", "-S", src, "-B", os.path.join(d, "b"), f"-DCMAKE_PREFIX_PATH={p}"], env=env)
    sh(["cmake", "--build", os.path.join(d, "b")], env=env)
    # The installed examples build the same way (share/wshost/examples/CMakeLists.txt).
    sh(["cmake", "-S", os.path.join(p, "share/wshost/examples"), "-B", os.path.join(d, "ex"),
        f"-DCMAKE_PREFIX_PATH={p}"], env=env)
    sh(["cmake", "--build", os.path.join(d, "ex")], env=env)
    plugins = {"hello": os.path.join(d, "b", "hello.so"),
               "__websocket__": os.path.join(d, "ex", "__websocket__.so"),
               "push": os.path.join(d, "ex", "push.so")}
    with InstalledHost(os.path.join(p, "bin/wshost"), plugins=plugins) as h:
        r = await h.ahttp("POST", "/hello", json_body={})
        assert r.status == 200 and r.json == {"hello": "cmake", "method": "POST"}, r
        ws, greeting = await h.user()
        await ws.send("hi")
        assert await recv(ws) == "I have received your message"
        r = await h.apush(greeting["user_id"], "pushed")
        assert r.status == 200 and r.json == {"delivered": 1}, r
        assert await recv(ws) == "pushed"
        await ws.close()
    shutil.rmtree(d, ignore_errors=True)


def test_make_install_prefix():
    d = scratch()
    target = os.path.join(d, "prefix")
    sh(["make", "-C", SOURCE_DIR, "install", f"PREFIX={target}", f"BUILD={BUILD_DIR}"],
       timeout=600)
    assert files_under(target) == files_under(prefix()), \
        f"make install differs from cmake --install: {files_under(target) ^ files_under(prefix())}"
    # DESTDIR stages as packagers do: nothing lands in the prefix itself.
    stage = os.path.join(d, "stage")
    existed = os.path.exists("/opt/wshost")
    sh(["make", "-C", SOURCE_DIR, "install", "PREFIX=/opt/wshost", f"BUILD={BUILD_DIR}"],
       env={**os.environ, "DESTDIR": stage}, timeout=600)
    assert os.path.exists(os.path.join(stage, "opt/wshost/bin/wshost"))
    assert existed or not os.path.exists("/opt/wshost"), "DESTDIR ignored: /opt/wshost written"
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    try:
        run(globals())
    finally:
        if prefix.cache_info().currsize:
            shutil.rmtree(prefix(), ignore_errors=True)
