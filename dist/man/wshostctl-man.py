#!/usr/bin/env python3
"""wshostctl-man.py: writes the man page wshostctl(8) from wshostctl's own argparse parser at
build time, so the page lists exactly the commands and options the tool has. Run as
    python3 wshostctl-man.py <tools/wshostctl> <wshostctl.8> <x.y.z>
It writes <wshostctl.8> and <wshostctl.8.gz> (gzip -9n: no name or time in the header)."""

import argparse
import gzip
import importlib.machinery
import importlib.util
import sys


def roff(text):
    """Escapes text for roff: backslash, minus, and a leading . or '."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def option_lines(actions, skip=()):
    out = []
    for a in actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if a.option_strings:
            if a.option_strings[0] in skip:
                continue
            name = ", ".join(a.option_strings)
            arg = "" if a.nargs == 0 else (a.metavar or a.dest.upper())
            head = f'.BI "{roff(name)} " {roff(arg)}' if arg else f".B {roff(name)}"
        else:
            head = f".I {roff(a.metavar or a.dest)}"
        try:
            help_text = (a.help or "") % {"default": a.default}
        except (KeyError, ValueError, TypeError):
            help_text = a.help or ""
        out += [".TP", head, roff(help_text)]
    return out


def main(tool, out, version):
    loader = importlib.machinery.SourceFileLoader("wshostctl", tool)
    spec = importlib.util.spec_from_loader("wshostctl", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    p = mod.parser()
    subs = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    common = [o for a in p._actions for o in a.option_strings if o not in ("-h", "--help")]
    helps = {c.dest: c.help for c in subs._choices_actions}
    lines = [
        '.\\" Generated from wshostctl\'s argument parser by dist/man/wshostctl-man.py.',
        f'.TH WSHOSTCTL 8 "" "wshost {version}" "System Administration"',
        ".SH NAME",
        "wshostctl \\- the operator's command for a wshost",
        ".SH SYNOPSIS",
        ".B wshostctl",
        "[\\fIoptions\\fR] \\fIcommand\\fR [\\fIarguments\\fR]",
        ".SH DESCRIPTION",
        roff(p.description or ""),
        ".PP",
        "Commands that read users read the SQLite database read-only (the host may be running",
        "or stopped); the others go through the host's admin API at \\fB\\-\\-url\\fR with the",
        "admin token.",
        ".SH OPTIONS",
        "Accepted before or after the command.",
    ]
    lines += option_lines(p._actions)
    lines.append(".SH COMMANDS")
    for name, sp in subs.choices.items():
        positional = " ".join(f"\\fI{roff(a.metavar or a.dest)}\\fR" for a in sp._actions
                              if not a.option_strings)
        lines += [".TP", f".B {roff(name)}" + (f" {positional}" if positional else ""),
                  roff(helps.get(name) or "")]
        own = option_lines([a for a in sp._actions if a.option_strings], skip=common + ["-h"])
        if own:
            lines += [".RS"] + own + [".RE"]
    lines += [
        ".SH ENVIRONMENT",
        ".TP",
        ".B WSHOST_DB",
        "the database file, when \\fB\\-\\-db\\fR is not given.",
        ".TP",
        ".B WSHOST_ADMIN_TOKEN",
        "the admin token, when \\fB\\-\\-token\\fR is not given; else the file",
        ".I admin-token",
        "next to the database (the host writes it there when it generates one).",
        ".SH FILES",
        ".TP",
        ".I /var/lib/wshost/wshost.db",
        "the database of the packaged service (\\fBwshostctl \\-\\-db /var/lib/wshost/wshost.db\\fR).",
        ".TP",
        ".I /etc/wshost/wshost.env",
        "the service's settings (port, admin token).",
        ".SH EXIT STATUS",
        "0 on success, 1 with a one-line reason on standard error, 2 on a usage error.",
        ".SH SEE ALSO",
        ".BR wshost (8)",
        "",
    ]
    text = "\n".join(lines)
    with open(out, "w") as f:
        f.write(text)
    with open(out + ".gz", "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as z:
            z.write(text.encode())


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
