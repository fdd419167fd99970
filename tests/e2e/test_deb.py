"""The Debian package: `make deb` builds it; lintian finds no error or warning in it (beyond the
overrides it ships, each with its reason); the host inside is stripped, with its debug info in
a file beside the package; the unit passes `systemd-analyze verify` and rates <= 3.0 in
`systemd-analyze security`; and install, upgrade (with settings the operator changed, stdin
closed), remove and purge work in a throwaway root, where the installed binary serves.

Nothing here touches the machine's own package, service, /etc or /var/lib: dpkg runs with
--root in a temporary folder (its own dpkg database, passwd and group), the maintainer
scripts run chrootless against $DPKG_ROOT, and systemctl/deb-systemd-invoke are stubs on PATH
that only write down what they were asked. The machine's state is compared before and after.

WSHOST_TEST_DEB=<file.deb> tests that package instead of building one (e.g. an older one)."""

import functools
import grp
import hashlib
import pwd
import stat

from harness import *  # noqa: F401,F403

UNIT = "usr/lib/systemd/system/wshost.service"
SETTINGS = "etc/wshost/wshost.env"
CONFIG = "etc/wshost/wshost.json"  # the --config file the unit passes
TEMPLATE = "usr/share/wshost/wshost.env"
EXPOSURE_MAX = 3.0


def sh(cmd, timeout=600, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise Fail(f"{cmd} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


@functools.lru_cache(maxsize=None)
def built():
    """(the .deb, its folder): one `make deb` for the whole file, into a temp folder."""
    given = os.environ.get("WSHOST_TEST_DEB")
    if given:
        return given, os.path.dirname(given)
    out = tempfile.mkdtemp(prefix="wshost-deb-")
    sh(["make", "-C", SOURCE_DIR, "deb", f"BUILD={BUILD_DIR}", f"DEB_OUT={out}"])
    debs = [f for f in os.listdir(out) if f.startswith("wshost_") and f.endswith(".deb")]
    assert len(debs) == 1, f"make deb made {debs}"
    return os.path.join(out, debs[0]), out


def extracted():
    d = tempfile.mkdtemp(prefix="wshost-debx-")
    sh(["dpkg-deb", "-x", built()[0], d])
    return d


def test_make_deb_contents():
    deb, out = built()
    depends = sh(["dpkg-deb", "-f", deb, "Depends"]).stdout.strip()
    names = [d.strip().split(" ")[0] for d in depends.replace("|", ",").split(",")]
    dev = [n for n in names if n.endswith("-dev") or n in ("build-essential", "cmake", "gcc")]
    assert not dev, f"the package depends on build packages: {dev} ({depends})"
    for need in ("libwebsockets-evlib-ev", "libsqlite3-0", "libjansson4", "libev4", "libsystemd0"):
        assert need in names, f"{need} not in Depends: {depends}"
    maintainer = sh(["dpkg-deb", "-f", deb, "Maintainer"]).stdout.strip()
    assert re.fullmatch(r"[^<>@]+ <[^<>@\s]+@[a-z0-9-]+(\.[a-z0-9-]+)+>", maintainer) \
        and "root@" not in maintainer and "localhost" not in maintainer, maintainer
    listing = sh(["dpkg-deb", "-c", deb]).stdout
    for path in ("./usr/bin/wshost", "./usr/bin/wshostctl", "./usr/include/wshost/cloud.h",
                 "./usr/share/pkgconfig/wshost.pc", "./usr/share/wshost/cmake/wshostConfig.cmake",
                 "./usr/share/man/man8/wshost.8.gz", "./usr/share/man/man8/wshostctl.8.gz",
                 "./usr/share/doc/wshost/copyright", "./usr/share/doc/wshost/changelog.Debian.gz",
                 "./" + UNIT, "./" + TEMPLATE, "./usr/share/wshost/examples/__websocket__.c"):
        assert re.search(rf" {re.escape(path)}$", listing, re.M), f"{path} not in the package"
    # No file in /etc: dpkg has no conffile to stop an upgrade at a prompt (postinst makes it).
    assert not re.search(r" \./etc/", listing), listing
    # Enables nothing by itself: no wants/ symlink shipped.
    assert ".wants/" not in listing, listing
    ctrl = tempfile.mkdtemp(prefix="wshost-ctrl-")
    sh(["dpkg-deb", "-e", deb, ctrl])
    assert not os.path.exists(os.path.join(ctrl, "conffiles")), open(
        os.path.join(ctrl, "conffiles")).read()
    for script in ("postinst", "prerm", "postrm"):
        text = open(os.path.join(ctrl, script)).read()
        code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
        # Never enable or start: that is the administrator's act. try-restart only.
        for verb in ("enable", "start", "restart", "reload"):
            assert not re.search(rf"(systemctl|deb-systemd-\w+)[ \t]([^\n]*[ \t])?{verb}\b", code), \
                f"{script} runs systemctl {verb}: {text}"
        assert "DPKG_ROOT" in code, f"{script} ignores $DPKG_ROOT"
    shutil.rmtree(ctrl, ignore_errors=True)
    # Compressed man pages that man reads.
    x = extracted()
    try:
        for page in ("wshost.8.gz", "wshostctl.8.gz"):
            data = open(os.path.join(x, "usr/share/man/man8", page), "rb").read()
            assert data[:2] == b"\x1f\x8b", f"{page} is not gzip"
            assert data[4:8] == b"\0\0\0\0", f"{page}: a time stamp in the gzip header"
        text = sh(["man", "-l", os.path.join(x, "usr/share/man/man8/wshost.8.gz")],
                  env={**os.environ, "MANWIDTH": "100", "MANPAGER": "cat", "PAGER": "cat"}).stdout
        for what in ("SIGHUP", "/_/rooms", "/_/quarantine", "wshostctl(8)", "--metrics-public"):
            assert what in text, f"{what} not in wshost(8)"
        text = sh(["man", "-l", os.path.join(x, "usr/share/man/man8/wshostctl.8.gz")],
                  env={**os.environ, "MANWIDTH": "100", "MANPAGER": "cat", "PAGER": "cat"}).stdout
        helped = sh([os.path.join(SOURCE_DIR, "tools/wshostctl"), "--help"]).stdout
        commands = re.findall(r"^    (\w+) ", helped, re.M)
        assert len(commands) >= 5, helped
        for c in commands:
            assert re.search(rf"^       {c}\b", text, re.M), f"wshostctl {c} not in wshostctl(8)"
    finally:
        shutil.rmtree(x, ignore_errors=True)


def test_lintian_is_clean():
    deb, _ = built()
    r = sh(["lintian", "--fail-on", "error,warning", deb], check=False, timeout=600)
    lines = [l for l in (r.stdout + r.stderr).splitlines()
             if not l.startswith("running with root privileges")]
    bad = [l for l in lines if l[:2] in ("E:", "W:")]
    assert r.returncode == 0 and not bad, f"lintian exit {r.returncode}:\n" + "\n".join(lines)
    print("lintian: " + ("\n".join(lines) or "(nothing)"), flush=True)
    # What the shipped overrides hide, each with its reason (the comment above it).
    r = sh(["lintian", "--show-overrides", deb], check=False, timeout=600)
    overridden = [l for l in r.stdout.splitlines() if l.startswith("O:")]
    x = extracted()
    try:
        path = os.path.join(x, "usr/share/lintian/overrides/wshost")
        blocks = open(path).read().split("\n\n") if os.path.exists(path) else []
    finally:
        shutil.rmtree(x, ignore_errors=True)
    for block in blocks:
        rows = [l for l in block.splitlines() if l.strip()]
        tags = [l for l in rows if not l.startswith("#")]
        assert not tags or rows[0].startswith("#"), f"an override without its reason: {block}"
    assert len(overridden) <= sum(1 for b in blocks for l in b.splitlines()
                                  if l.strip() and not l.startswith("#")), overridden


def test_binary_is_stripped_with_its_debug_info_beside_it():
    deb, out = built()
    x = extracted()
    try:
        binary = os.path.join(x, "usr/bin/wshost")
        sections = sh(["readelf", "-S", "-W", binary]).stdout
        assert ".debug_info" not in sections and ".symtab" not in sections, sections
        assert ".gnu_debuglink" in sections, sections
        build_id = re.search(r"Build ID: ([0-9a-f]+)", sh(["readelf", "-n", binary]).stdout)
        assert build_id, "no build id in the packaged binary"
        debug = deb[:-len(".deb")] + ".debug"
        assert os.path.exists(debug), f"no debug file beside {deb}: {os.listdir(out)}"
        dsec = sh(["readelf", "-S", "-W", debug]).stdout
        assert ".debug_info" in dsec, f"{debug} has no debug info"
        assert build_id.group(1) in sh(["readelf", "-n", debug]).stdout, "build ids differ"
    finally:
        shutil.rmtree(x, ignore_errors=True)


def test_unit_is_hardened():
    x = extracted()
    try:
        path = os.path.join(x, UNIT)
        unit = open(path).read()
        for line in ("Type=notify", "NotifyAccess=main", "ExecReload=/bin/kill -HUP $MAINPID",
                     "NoNewPrivileges=yes", "CapabilityBoundingSet=\n", "ProtectSystem=strict",
                     "ReadWritePaths=/var/lib/wshost\n", "SystemCallFilter=@system-service",
                     "PrivateTmp=yes", "ProtectHome=yes", "RestrictAddressFamilies=",
                     "Restart=on-failure", "EnvironmentFile=-/etc/wshost/wshost.env",
                     "ExecStart=/usr/bin/wshost --config /etc/wshost/wshost.json"):
            assert line in unit, f"{line!r} missing from the unit"
        # systemd reads it without a complaint (the binary named where the throwaway tree has it).
        copy = os.path.join(x, "wshost.service")
        with open(copy, "w") as f:
            f.write(unit.replace("ExecStart=/usr/bin/wshost",
                                 f"ExecStart={x}/usr/bin/wshost"))
        r = sh(["systemd-analyze", "verify", "--man=no", copy], check=False)
        assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), \
            f"systemd-analyze verify: {r.stdout}{r.stderr}"
        r = sh(["systemd-analyze", "security", "--offline=true", path], check=False)
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
        assert m, f"systemd-analyze security said:\n{r.stdout}{r.stderr}"
        print(r.stdout.strip().splitlines()[-1], flush=True)
        assert float(m.group(1)) <= EXPOSURE_MAX, r.stdout
    finally:
        shutil.rmtree(x, ignore_errors=True)


# --- the unit's system call filter, applied to the real host -----------------------------------


@functools.lru_cache(maxsize=None)
def syscalls_of(item):
    """The system calls a SystemCallFilter= item names, groups (@name) expanded as systemd
    expands them (systemd-analyze syscall-filter)."""
    if not item.startswith("@"):
        return frozenset([item])
    out = sh(["systemd-analyze", "syscall-filter", item]).stdout.splitlines()
    names = set()
    for line in out[1:]:
        line = line.strip()
        if line and not line.startswith("#"):
            names |= syscalls_of(line)
    assert names, f"{item}: no system calls"
    return frozenset(names)


def unit_allow_list(unit):
    """The allow-list the unit's SystemCallFilter= lines make, in order: the first line sets
    it, each later one adds to it or (with ~) takes from it."""
    allow = None
    for value in re.findall(r"^SystemCallFilter=(.*)$", unit, re.M):
        deny = value.startswith("~")
        names = set()
        for item in value.lstrip("~").split():
            names |= syscalls_of(item)
        if allow is None:
            assert not deny, "the unit's filter is a deny-list: this test checks an allow-list"
            allow = names
        else:
            allow = allow - names if deny else allow | names
    assert allow, "the unit has no SystemCallFilter="
    return allow


class FilteredHost(Host):
    """A Host started under the unit's system call filter (tests/e2e/seccomp_run.c)."""

    def __init__(self, launcher, allow_file, **kw):
        self.launcher = [launcher, allow_file]
        super().__init__(**kw)

    def command(self):
        return self.launcher + super().command()


async def test_host_works_under_the_units_syscall_filter():
    """Without booting the unit: the host, its supervisor and its workers do their work with
    the unit's SystemCallFilter= loaded the way systemd loads it (EPERM for the rest): serve
    HTTP and WebSocket, push, load a function deployed while running, restart after a crash
    in a function, SIGHUP, and drain on SIGTERM to exit 0. A call the filter refuses would
    show as a failure here instead of in production."""
    x = extracted()
    work = tempfile.mkdtemp(prefix="wshost-seccomp-")
    try:
        unit = open(os.path.join(x, UNIT)).read()
        assert "SystemCallErrorNumber=EPERM" in unit, "the test assumes EPERM, as the unit says"
        allow = unit_allow_list(unit)
        for needed in ("fork", "clone", "execve", "inotify_add_watch", "signalfd4", "prctl",
                       "setrlimit"):
            assert needed in allow, f"{needed} not allowed"
        for refused in ("chroot", "setpriority", "mount", "reboot", "ptrace"):
            assert refused not in allow, f"{refused} allowed"
        allow_file = os.path.join(work, "allow")
        with open(allow_file, "w") as f:
            f.write("\n".join(sorted(allow)) + "\n")
        launcher = os.path.join(work, "seccomp_run")
        r = sh(["cc", "-O1", "-Wall", "-Werror", os.path.join(os.path.dirname(
            os.path.abspath(__file__)), "seccomp_run.c"), "-o", launcher, "-lseccomp"],
            check=False)
        if r.returncode != 0 and "seccomp.h" in r.stderr:
            skip("libseccomp-dev is not installed (tools/install-deps installs it)")
        assert r.returncode == 0, r.stderr
        # The filter bites: raising one's own nice value (@resources) is refused under it.
        probe = [sys.executable, "-c", "import os; os.setpriority(os.PRIO_PROCESS, 0, 1)"]
        assert sh(probe, check=False).returncode == 0
        r = sh([launcher, allow_file] + probe, check=False)
        assert r.returncode != 0 and "Operation not permitted" in r.stderr, (r.returncode, r.stderr)

        plugins = {"__websocket__": example("__websocket__"), "echo": example("echo"),
                   "push": example("push"), "crash": tplugin("crash")}
        for flags in ([], ["--isolation", "process"]):
            h = FilteredHost(launcher, allow_file, plugins=plugins, flags=flags)
            with h:
                r = await h.ahttp("POST", "/echo", json_body={"x": 1})
                assert r.status == 200, (flags, r)
                ws, greeting = await h.user()
                await ws.send("hi")
                assert await recv(ws) == "I have received your message"
                r = await h.apush(greeting["user_id"], "pushed")
                assert r.status == 200 and r.json == {"delivered": 1}, (flags, r)
                assert await recv(ws) == "pushed"
                await ws.close()
                # Deployed while running: inotify, the private copy, dlopen.
                h.add_plugin("echo2", example("echo"))
                await asyncio.to_thread(wait_until, lambda: h.http(
                    "POST", "/echo2", json_body={}).status == 200, 10, 0.1, "echo2 loaded")
                # A crash in a function: the report, the quarantine, a new serving process.
                try:
                    await h.ahttp("GET", "/crash?do=segv", timeout=5)
                except (OSError, http.client.HTTPException):
                    pass
                await asyncio.to_thread(wait_until, lambda: h.http(
                    "GET", "/_/healthz").status == 200, 10, 0.1, "healthz after the crash")
                r = await h.ahttp("POST", "/echo", json_body={"after": "crash"})
                assert r.status == 200, (flags, r)
                h.signal(signal.SIGHUP)
                await asyncio.sleep(0.3)
                assert (await h.ahttp("GET", "/_/healthz")).status == 200
                assert h.stop() == 0, f"{flags}: exit {h.returncode}\n{h.log_tail()}"
                log = h.log()
                assert "quarantined" in log, f"{flags}: no crash handling\n{h.log_tail()}"
                for word in ("Operation not permitted", "EPERM"):
                    assert word not in log, f"{flags}: {word} in the log:\n{h.log_tail(80)}"
    finally:
        shutil.rmtree(x, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


# --- install, upgrade, remove, purge in a throwaway root --------------------------------------

MACHINE_PATHS = ["/etc/wshost", "/var/lib/wshost", "/usr/bin/wshost", "/usr/bin/wshostctl",
                 "/usr/lib/systemd/system/wshost.service", "/lib/systemd/system/wshost.service",
                 "/etc/systemd/system/wshost.service",
                 "/etc/systemd/system/multi-user.target.wants/wshost.service",
                 "/usr/share/wshost", "/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"]


def machine_state():
    """What of the machine's own wshost (and its users and dpkg database) this test could
    change: each path's type, mode, owner, size and content hash, recursively."""
    state = {}
    for top in MACHINE_PATHS:
        for d, dirs, files in (os.walk(top) if os.path.isdir(top) else [(None, [], [top])]):
            for name in ([""] if d else []) + files + dirs:
                p = os.path.join(d, name) if d else name
                try:
                    st = os.lstat(p)
                except FileNotFoundError:
                    state[p] = None
                    continue
                h = None
                if stat.S_ISREG(st.st_mode):
                    with open(p, "rb") as f:
                        h = hashlib.sha256(f.read()).hexdigest()
                elif stat.S_ISLNK(st.st_mode):
                    h = os.readlink(p)
                state[p] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, h)
    state["dpkg-query wshost"] = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status} ${Version}", "wshost"], capture_output=True,
        text=True).stdout
    return state


# dpkg runs in a mount namespace of its own where the machine's folders are read-only: a
# maintainer script that forgot $DPKG_ROOT fails there instead of changing the machine.
GUARD = """mount --make-rprivate / || exit 97
for p in /etc /usr /var /opt /srv /root /home /boot /run /lib /bin /sbin; do
  [ -d "$p" ] && [ ! -L "$p" ] || continue
  mount --bind "$p" "$p" && mount -o remount,bind,ro "$p" || exit 97
done
exec "$@"
"""


def scripts_honour_dpkg_root(deb):
    """Maintainer scripts run chrootless only if each one works under $DPKG_ROOT."""
    ctrl = tempfile.mkdtemp(prefix="wshost-ctrl-")
    try:
        sh(["dpkg-deb", "-e", deb, ctrl])
        for name in ("preinst", "postinst", "prerm", "postrm"):
            p = os.path.join(ctrl, name)
            if os.path.exists(p) and "DPKG_ROOT" not in open(p).read():
                return f"{name} ignores $DPKG_ROOT"
        return None
    finally:
        shutil.rmtree(ctrl, ignore_errors=True)


class Root:
    """A throwaway root for dpkg: its own database (the package's dependencies marked as
    installed at the machine's versions) and log, passwd/group/shadow, a /run/systemd/system
    that tells the scripts systemd runs, and stubs for systemctl and deb-systemd-invoke."""

    def __init__(self, deb):
        self.dir = tempfile.mkdtemp(prefix="wshost-root-")
        os.chmod(self.dir, 0o755)
        d = self.dir
        for sub in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "etc",
                    "var/log", "run/systemd/system", "stubs"):
            os.makedirs(os.path.join(d, sub))
        os.makedirs(os.path.join(d, "tmp"), mode=0o1777)
        os.chmod(os.path.join(d, "tmp"), 0o1777)
        open(os.path.join(d, "var/lib/dpkg/available"), "w").close()
        stanzas = self.dependency_stanzas(deb)
        with open(os.path.join(d, "var/lib/dpkg/status"), "w") as f:
            f.write(stanzas)
        for name in re.findall(r"^Package: (\S+)$", stanzas, re.M):
            open(os.path.join(d, f"var/lib/dpkg/info/{name}.list"), "w").close()
        for name, text, mode in (("passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
                                 ("group", "root:x:0:\n", 0o644),
                                 ("shadow", "root:*:19000:0:99999:7:::\n", 0o640),
                                 ("gshadow", "root:*::\n", 0o640)):
            with open(os.path.join(d, "etc", name), "w") as f:
                f.write(text)
            os.chmod(os.path.join(d, "etc", name), mode)
        self.log = os.path.join(d, "stubs.log")
        for stub in ("systemctl", "deb-systemd-invoke"):
            p = os.path.join(d, "stubs", stub)
            with open(p, "w") as f:
                f.write(f'#!/bin/sh\necho "{stub} $*" >> "{self.log}"\nexit 0\n')
            os.chmod(p, 0o755)
        self.env = {"PATH": f"{d}/stubs:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
        for stub in ("systemctl", "deb-systemd-invoke"):
            found = shutil.which(stub, path=self.env["PATH"])
            assert found == os.path.join(d, "stubs", stub), f"{stub} resolves to {found}"
        probe = subprocess.run(["unshare", "--mount", "sh", "-c", GUARD, "sh", "touch",
                                "/etc/.wshost-guard-probe"], capture_output=True, text=True,
                               timeout=30)
        # 1: touch failed on the read-only /etc, as it should.
        self.guarded = probe.returncode == 1 and "Read-only" in probe.stderr
        if not self.guarded:
            if os.path.exists("/etc/.wshost-guard-probe"):
                os.unlink("/etc/.wshost-guard-probe")
            print(f"no read-only mount namespace here ({probe.returncode}: {probe.stderr.strip()}); "
                  "relying on the $DPKG_ROOT check and the before/after comparison", flush=True)

    @staticmethod
    def dependency_stanzas(deb):
        depends = sh(["dpkg-deb", "-f", deb, "Depends"]).stdout
        out = []
        for alt in depends.split(","):
            name = alt.split("|")[0].strip().split(" ")[0]
            r = sh(["dpkg-query", "-W", "-f=${Version}\n${Architecture}", name], check=False)
            if r.returncode != 0:
                raise Fail(f"the package's dependency {name} is not installed on this machine")
            version, arch = r.stdout.split("\n")[:2]
            out.append(f"Package: {name}\nStatus: install ok installed\nPriority: optional\n"
                       f"Maintainer: test <test@example.org>\nArchitecture: {arch}\n"
                       f"Version: {version}\nDescription: stands in for the machine's {name}\n")
        return "\n".join(out)

    def path(self, rel):
        return os.path.join(self.dir, rel.lstrip("/"))

    def dpkg(self, *args):
        """dpkg in this root, stdin closed (an upgrade must never wait at a prompt)."""
        for a in args:
            if a.endswith(".deb"):
                why = scripts_honour_dpkg_root(a)
                if why:
                    raise Fail(f"{a}: {why}: its scripts would change this machine, not the root")
        cmd = ["dpkg", f"--root={self.dir}", f"--log={self.dir}/var/log/dpkg.log",
               "--force-script-chrootless", *args]
        if self.guarded:
            cmd = ["unshare", "--mount", "sh", "-c", GUARD, "sh"] + cmd
        return sh(cmd, env=self.env, stdin=subprocess.DEVNULL, check=False, timeout=300)

    def status(self):
        r = sh(["dpkg-query", f"--root={self.dir}", "-W", "-f=${Status} ${Version}", "wshost"],
               check=False)
        return r.stdout.strip()

    def calls(self):
        """What the stubs were asked since the last call, one line each."""
        if not os.path.exists(self.log):
            return []
        lines = open(self.log).read().splitlines()
        os.unlink(self.log)
        return lines

    def entry(self, db, name):
        for line in open(self.path(f"etc/{db}")):
            f = line.rstrip("\n").split(":")
            if f[0] == name:
                return f
        return None


def upgraded_deb(deb, folder):
    """The same package as a next version, with a changed settings template: what an operator
    upgrading to the next release gets."""
    raw = os.path.join(folder, "raw")
    sh(["dpkg-deb", "-R", deb, raw])
    control = os.path.join(raw, "DEBIAN", "control")
    text = open(control).read()
    version = re.search(r"^Version: (\S+)$", text, re.M).group(1)
    newer = version + "+next1"
    with open(control, "w") as f:
        f.write(text.replace(f"Version: {version}\n", f"Version: {newer}\n"))
    for rel in (TEMPLATE, SETTINGS):  # the template (or, in an old package, the conffile)
        p = os.path.join(raw, rel)
        if os.path.exists(p):
            with open(p, "a") as f:
                f.write("# A setting added by the next release.\n#WSHOST_NEXT_RELEASE=1\n")
    out = os.path.join(folder, f"wshost_{newer}.deb")
    sh(["dpkg-deb", "--root-owner-group", "-b", raw, out])
    shutil.rmtree(raw, ignore_errors=True)
    return out, newer


def conffile_era_deb(deb, folder):
    """The package as it was before 0.1.0-1 (version 0.1.0): the settings shipped as a conffile
    /etc/wshost/wshost.env, root:root 0644. Without maintainer scripts (that package's ignored
    $DPKG_ROOT); the user is made by the upgrade's postinst as on a first install."""
    raw = os.path.join(folder, "raw-old")
    sh(["dpkg-deb", "-R", deb, raw])
    control = os.path.join(raw, "DEBIAN", "control")
    text = re.sub(r"^Version: \S+$", "Version: 0.1.0", open(control).read(), flags=re.M)
    with open(control, "w") as f:
        f.write(text)
    for script in ("postinst", "prerm", "postrm"):
        os.unlink(os.path.join(raw, "DEBIAN", script))
    os.makedirs(os.path.join(raw, "etc/wshost"))
    shutil.copy(os.path.join(raw, TEMPLATE), os.path.join(raw, SETTINGS))
    os.chmod(os.path.join(raw, SETTINGS), 0o644)
    with open(os.path.join(raw, "DEBIAN", "conffiles"), "w") as f:
        f.write("/" + SETTINGS + "\n")
    out = os.path.join(folder, "wshost_0.1.0_old.deb")
    sh(["dpkg-deb", "--root-owner-group", "-b", raw, out])
    shutil.rmtree(raw, ignore_errors=True)
    return out


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


def serve_from_root(root, log_file):
    """Starts <root>/usr/bin/wshost as the unit would (the wshost user of the root, the
    settings file, the state folder as working directory), every path moved into the root and
    a free port; returns (process, READY message)."""
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": root.path("tmp")}
    for line in open(root.path(SETTINGS)):
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            env[k] = root.path(v) if v.startswith(("/var/lib/wshost", "/etc/wshost")) else v
    env["WSHOST_PORT"] = "0"  # the test's own port; 8080 may be taken on this machine
    sd = FakeSystemd(root.path("tmp/notify"))
    os.chmod(sd.path, 0o777)  # the host runs as the root's wshost user
    env["NOTIFY_SOCKET"] = sd.path
    u = root.entry("passwd", "wshost")
    uid, gid = int(u[2]), int(u[3])

    def drop():
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    proc = subprocess.Popen([root.path("usr/bin/wshost"), "--config", root.path(CONFIG)], env=env,
                            cwd=root.path("var/lib/wshost"),
                            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=drop)
    try:
        ready = sd.wait_ready()
    except Fail:
        proc.kill()
        proc.wait(5)
        raise
    finally:
        sd.sock.close()
    return proc, ready


def mode_of(path):
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def test_install_upgrade_remove_purge_in_a_throwaway_root():
    if os.geteuid() != 0:
        skip("dpkg --root needs root to give the files their owners")
    deb, _ = built()
    before = machine_state()
    root = Root(deb)
    proc = None
    try:
        # Install.
        r = root.dpkg("-i", deb)
        assert r.returncode == 0, f"dpkg -i: {r.stdout}{r.stderr}"
        assert root.status().startswith("install ok installed"), root.status()
        u = root.entry("passwd", "wshost")
        assert u and int(u[2]) < 1000 and u[6] == "/usr/sbin/nologin", f"wshost user: {u}"
        uid, gid = int(u[2]), int(u[3])
        assert root.entry("group", "wshost")[2] == str(gid)
        assert mode_of(root.path("var/lib/wshost")) == (0o750, uid, gid)
        assert mode_of(root.path("var/lib/wshost/plugins")) == (0o755, 0, 0)
        # The settings hold secrets: root:wshost 0640.
        assert mode_of(root.path(SETTINGS)) == (0o640, 0, gid), mode_of(root.path(SETTINGS))
        # The JSON settings the unit passes (--config) come the same way; the host reads them
        # when it serves below (an unknown key would stop it).
        assert mode_of(root.path(CONFIG)) == (0o640, 0, gid), mode_of(root.path(CONFIG))
        calls = root.calls()
        assert "systemctl --system daemon-reload" in calls, calls
        assert not [c for c in calls if "start" in c or "enable" in c or "stop" in c], \
            f"a first install starts or enables nothing: {calls}"

        # The installed binary serves: deploy a function as root, run the host the unit's way.
        shutil.copy(example("echo"), root.path("var/lib/wshost/plugins/echo.so"))
        os.chmod(root.path("var/lib/wshost/plugins/echo.so"), 0o644)
        log_path = root.path("tmp/service.log")
        with open(log_path, "wb") as log:
            proc, ready = serve_from_root(root, log)
        port = int(re.search(r"listening on port (\d+)", ready).group(1))
        r = http_request(port, "POST", "/echo", json_body={"deployed": True})
        assert r.status == 200, f"{r}\n{open(log_path).read()}"
        token_path = root.path("var/lib/wshost/admin-token")
        mode, owner, _ = mode_of(token_path)
        assert owner == uid and mode & 0o077 == 0, oct(mode)
        token = open(token_path).read().strip()
        r = http_request(port, "GET", "/_/metrics", bearer=token)
        assert r.status == 200 and b'wshost_function_calls_total{function="echo"} 1' in r.body, r
        assert os.path.getsize(root.path("var/lib/wshost/wshost.db")) > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, open(log_path).read()
        proc = None

        # The operator's changes: a tighter state folder, a setting of their own.
        os.chmod(root.path("var/lib/wshost"), 0o700)
        with open(root.path(SETTINGS), "a") as f:
            f.write("WSHOST_LOG_LEVEL=debug\n")
        os.chmod(root.path(SETTINGS), 0o600)

        # Upgrade to a next version whose settings template changed, stdin closed.
        nxt, version = upgraded_deb(deb, root.path("tmp"))
        r = root.dpkg("-i", nxt)
        assert r.returncode == 0, f"the upgrade failed:\n{r.stdout}{r.stderr}"
        assert root.status() == f"install ok installed {version}", root.status()
        assert "WSHOST_LOG_LEVEL=debug" in open(root.path(SETTINGS)).read(), "settings lost"
        assert mode_of(root.path(SETTINGS))[0] == 0o600, "the settings' mode was reset"
        assert mode_of(root.path("var/lib/wshost"))[0] == 0o700, "the state folder was reset"
        assert "WSHOST_NEXT_RELEASE" in open(root.path(TEMPLATE)).read(), "template not updated"
        calls = root.calls()
        assert "deb-systemd-invoke try-restart wshost.service" in calls, \
            f"an upgrade restarts a running service onto the new binary: {calls}"
        assert not [c for c in calls if re.search(r"\b(start|enable|stop)\b", c)], calls

        # Remove: the service stops, the program goes, settings and data stay.
        r = root.dpkg("-r", "wshost")
        assert r.returncode == 0, f"dpkg -r: {r.stdout}{r.stderr}"
        calls = root.calls()
        assert "deb-systemd-invoke stop wshost.service" in calls, f"not stopped: {calls}"
        assert not os.path.exists(root.path("usr/bin/wshost")), "dpkg -r left the binary"
        assert os.path.exists(root.path(SETTINGS)), "dpkg -r removed the settings"
        assert os.path.exists(root.path("var/lib/wshost/wshost.db")), "dpkg -r removed data"
        assert root.status().startswith("deinstall ok config-files"), root.status()

        # Purge: the settings go; users and queued messages are data and stay.
        r = root.dpkg("--purge", "wshost")
        assert r.returncode == 0, f"dpkg --purge: {r.stdout}{r.stderr}"
        assert not os.path.exists(root.path("etc/wshost")), os.listdir(root.path("etc/wshost"))
        assert os.path.exists(root.path("var/lib/wshost/wshost.db")), "purge removed the data"
        assert root.status() in ("", "unknown ok not-installed"), root.status()
        # Reinstalled over the kept data: the operator's folder mode is still theirs.
        r = root.dpkg("-i", deb)
        assert r.returncode == 0, f"reinstall: {r.stdout}{r.stderr}"
        assert mode_of(root.path("var/lib/wshost"))[0] == 0o700, "reinstall reset the mode"
        assert mode_of(root.path(SETTINGS)) == (0o640, 0, gid), "settings not made again"
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(5)
        after = machine_state()
        shutil.rmtree(root.dir, ignore_errors=True)
    changed = {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
               if before.get(k) != after.get(k)}
    assert not changed, f"the machine's own files changed: {changed}"


def test_upgrade_from_the_conffile_package():
    """From a package that shipped the settings as a world-readable conffile: the upgrade does
    not prompt (stdin closed), keeps the operator's lines, and gives the file root:wshost 0640
    once; a mode the operator chose is kept."""
    if os.geteuid() != 0:
        skip("dpkg --root needs root to give the files their owners")
    deb, _ = built()
    before = machine_state()
    root = Root(deb)
    try:
        for operator_mode in (None, 0o600):
            old = conffile_era_deb(deb, root.path("tmp"))
            r = root.dpkg("-i", old)
            assert r.returncode == 0, f"{r.stdout}{r.stderr}"
            assert mode_of(root.path(SETTINGS)) == (0o644, 0, 0)
            with open(root.path(SETTINGS), "a") as f:
                f.write("WSHOST_ADMIN_TOKEN=operator-secret\n")
            if operator_mode is not None:
                os.chmod(root.path(SETTINGS), operator_mode)
            r = root.dpkg("-i", deb)
            assert r.returncode == 0, f"the upgrade failed:\n{r.stdout}{r.stderr}"
            assert root.status().startswith("install ok installed"), root.status()
            assert "WSHOST_ADMIN_TOKEN=operator-secret" in open(root.path(SETTINGS)).read()
            gid = int(root.entry("group", "wshost")[2])
            want = (0o640, 0, gid) if operator_mode is None else (operator_mode, 0, 0)
            assert mode_of(root.path(SETTINGS)) == want, (oct(mode_of(root.path(SETTINGS))[0]),
                                                          want)
            r = root.dpkg("--purge", "wshost")
            assert r.returncode == 0, f"{r.stdout}{r.stderr}"
            assert not os.path.exists(root.path(SETTINGS)), "purge left the settings"
            root.calls()
    finally:
        after = machine_state()
        shutil.rmtree(root.dir, ignore_errors=True)
    changed = {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
               if before.get(k) != after.get(k)}
    assert not changed, f"the machine's own files changed: {changed}"


if __name__ == "__main__":
    try:
        run(globals())
    finally:
        if built.cache_info().currsize and not os.environ.get("WSHOST_TEST_DEB"):
            shutil.rmtree(built()[1], ignore_errors=True)
