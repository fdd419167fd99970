"""The Debian package: `make deb` builds it; it depends on runtime
packages only; `dpkg -i` (root) creates the wshost user, /etc/wshost/wshost.env,
/var/lib/wshost (0750, wshost) and /var/lib/wshost/plugins (0755, root), enables nothing;
`systemd-analyze verify` accepts the unit; the installed host runs as the unit would run it
(user wshost, the env file) and says READY; `dpkg -r` removes it again."""

import grp
import pwd
import stat

from harness import *  # noqa: F401,F403

UNIT = "/usr/lib/systemd/system/wshost.service"


def sh(cmd, timeout=600, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise Fail(f"{cmd} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def dpkg(*args):
    """dpkg, waiting (bounded) for the lock an apt-get elsewhere on the machine may hold."""
    deadline = time.monotonic() + 180
    while True:
        r = sh(["dpkg", *args], check=False)
        if r.returncode == 0:
            return r
        if "lock" not in (r.stderr + r.stdout) or time.monotonic() > deadline:
            raise Fail(f"dpkg {args} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        time.sleep(2)


def build_deb(out):
    sh(["make", "-C", SOURCE_DIR, "deb", f"BUILD={BUILD_DIR}", f"DEB_OUT={out}"])
    debs = [f for f in os.listdir(out) if f.startswith("wshost_") and f.endswith(".deb")]
    assert len(debs) == 1, f"make deb made {debs}"
    return os.path.join(out, debs[0])


def test_make_deb_contents():
    out = tempfile.mkdtemp(prefix="wshost-deb-")
    deb = build_deb(out)
    depends = sh(["dpkg-deb", "-f", deb, "Depends"]).stdout.strip()
    names = [d.strip().split(" ")[0] for d in depends.replace("|", ",").split(",")]
    dev = [n for n in names if n.endswith("-dev") or n in ("build-essential", "cmake", "gcc")]
    assert not dev, f"the package depends on build packages: {dev} ({depends})"
    for need in ("libwebsockets-evlib-ev", "libsqlite3-0", "libjansson4", "libev4", "libsystemd0"):
        assert need in names, f"{need} not in Depends: {depends}"
    listing = sh(["dpkg-deb", "-c", deb]).stdout
    for path in ("./usr/bin/wshost", "./usr/bin/wshostctl", "./usr/include/wshost/cloud.h",
                 "./usr/share/pkgconfig/wshost.pc", "./usr/share/wshost/cmake/wshostConfig.cmake",
                 "./usr/share/man/man8/wshost.8", "./usr/lib/systemd/system/wshost.service",
                 "./etc/wshost/wshost.env", "./usr/share/wshost/examples/__websocket__.c"):
        assert re.search(rf" {re.escape(path)}$", listing, re.M), f"{path} not in the package"
    # Enables nothing by itself: no wants/ symlink shipped, no systemctl enable in a script.
    assert ".wants/" not in listing, listing
    ctrl = os.path.join(out, "control")
    sh(["dpkg-deb", "-e", deb, ctrl])
    for script in ("postinst", "prerm", "postrm"):
        text = open(os.path.join(ctrl, script)).read()
        code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
        for verb in ("enable", "start", "restart"):
            assert not re.search(rf"(systemctl|deb-systemd-\w+)[ \t]([^\n]*[ \t])?{verb}\b", code), \
                f"{script} runs systemctl {verb}: {text}"
    assert open(os.path.join(ctrl, "conffiles")).read().split() == ["/etc/wshost/wshost.env"]
    shutil.rmtree(out, ignore_errors=True)


class FakeSystemd:
    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)

    def wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                msg = self.sock.recv(4096).decode()
            except socket.timeout:
                break
            if "READY=1" in msg.split("\n"):
                return msg
        raise Fail(f"no READY=1 within {timeout}s")


def run_as_service(port_log):
    """Starts /usr/bin/wshost as the unit does: user wshost, /etc/wshost/wshost.env, in
    /var/lib/wshost, with a fake NOTIFY_SOCKET; returns (process, READY message)."""
    env = {"PATH": "/usr/bin:/bin"}
    for line in open("/etc/wshost/wshost.env"):
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            env[k] = v
    env["WSHOST_PORT"] = "0"  # the test's own port; 8080 may be taken on this machine
    sock_dir = tempfile.mkdtemp(prefix="wshost-notify-")
    os.chmod(sock_dir, 0o755)
    sd = FakeSystemd(os.path.join(sock_dir, "notify"))
    os.chmod(sd.path, 0o777)  # the host runs as wshost
    env["NOTIFY_SOCKET"] = sd.path
    u = pwd.getpwnam("wshost")

    def drop():
        os.setgroups([])
        os.setgid(u.pw_gid)
        os.setuid(u.pw_uid)

    proc = subprocess.Popen(["/usr/bin/wshost"], env=env, cwd="/var/lib/wshost",
                            stdout=port_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=drop)
    try:
        ready = sd.wait_ready()
    except Fail:
        proc.kill()
        proc.wait(5)
        raise
    finally:
        sd.sock.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
    return proc, ready


def test_dpkg_install_and_remove():
    if os.geteuid() != 0:
        print("SKIP test_dpkg_install_and_remove: needs root for dpkg -i")
        return
    out = tempfile.mkdtemp(prefix="wshost-deb-")
    deb = build_deb(out)
    user_before = subprocess.run(["getent", "passwd", "wshost"], capture_output=True).returncode == 0
    state_before = os.path.exists("/var/lib/wshost")
    etc_before = os.path.exists("/etc/wshost")
    proc = None
    try:
        dpkg("-i", deb)
        u = pwd.getpwnam("wshost")
        assert u.pw_uid < 1000, f"wshost is not a system user: {u}"
        assert grp.getgrgid(u.pw_gid).gr_name == "wshost"
        st = os.stat("/var/lib/wshost")
        assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_uid == u.pw_uid, \
            f"/var/lib/wshost: mode {oct(st.st_mode)} uid {st.st_uid}"
        st = os.stat("/var/lib/wshost/plugins")
        assert stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == 0, \
            f"/var/lib/wshost/plugins: mode {oct(st.st_mode)} uid {st.st_uid}"
        assert os.path.isfile("/etc/wshost/wshost.env")
        conffiles = sh(["dpkg-query", "-W", "-f=${Conffiles}", "wshost"]).stdout
        assert "/etc/wshost/wshost.env" in conffiles, conffiles
        # Enabled nowhere.
        for d in ("/etc/systemd/system/multi-user.target.wants",
                  "/etc/systemd/system/default.target.wants"):
            assert not os.path.exists(os.path.join(d, "wshost.service")), f"enabled in {d}"
        # The unit, as systemd reads it.
        if shutil.which("systemd-analyze"):
            r = sh(["systemd-analyze", "verify", UNIT], check=False)
            assert r.returncode == 0, f"systemd-analyze verify: {r.stdout}{r.stderr}"
        else:
            print("SKIP systemd-analyze verify: not in this container")
        # Deploy the example functions as root, then run the host the unit's way.
        for name in ("echo", "__websocket__"):
            sh(["install", "-m", "0644", example(name), f"/var/lib/wshost/plugins/{name}.so"])
        log_path = os.path.join(out, "service.log")
        with open(log_path, "wb") as log:
            proc, ready = run_as_service(log)
        port = int(re.search(r"listening on port (\d+)", ready).group(1))
        r = http_request(port, "POST", "/echo", json_body={"deployed": True})
        assert r.status == 200, f"{r}\n{open(log_path).read()}"
        # It generated its admin token where only it (and root) can read it.
        token_path = "/var/lib/wshost/admin-token"
        st = os.stat(token_path)
        assert st.st_uid == u.pw_uid and stat.S_IMODE(st.st_mode) & 0o077 == 0, oct(st.st_mode)
        token = open(token_path).read().strip()
        r = http_request(port, "GET", "/_/metrics", bearer=token)
        assert r.status == 200 and b'wshost_function_calls_total{function="echo"} 1' in r.body, r
        assert os.path.getsize("/var/lib/wshost/wshost.db") > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, open(log_path).read()
        proc = None
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(5)
        subprocess.run(["dpkg", "-r", "wshost"], capture_output=True, timeout=120)
        gone = not os.path.exists("/usr/bin/wshost")
        kept = os.path.exists("/etc/wshost/wshost.env")
        # Purge too: a conffile deleted while the package is only removed would not come
        # back with the next install (dpkg keeps the admin's deletion).
        subprocess.run(["dpkg", "--purge", "wshost"], capture_output=True, timeout=120)
        if not state_before:
            shutil.rmtree("/var/lib/wshost", ignore_errors=True)
        if not etc_before:
            shutil.rmtree("/etc/wshost", ignore_errors=True)
        if not user_before:
            subprocess.run(["userdel", "wshost"], capture_output=True, timeout=30)
            subprocess.run(["groupdel", "wshost"], capture_output=True, timeout=30)
        shutil.rmtree(out, ignore_errors=True)
    assert gone, "dpkg -r left /usr/bin/wshost"
    assert kept, "dpkg -r removed the settings (a conffile stays until purge)"
    assert sh(["dpkg-query", "-W", "-f=${Status}", "wshost"], check=False).stdout \
        in ("", "deinstall ok config-files"), "wshost still installed after dpkg -r"


if __name__ == "__main__":
    run(globals())
