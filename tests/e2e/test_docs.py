"""The documentation holds together: every relative link in README.md and docs/*.md names a
file (and heading) that exists, every path into the tree they write (host/..., sdk/...,
tests/..., tools/..., dist/..., docs/...) exists, the README stays a ten-minute read, and no
issue number or missing contract file is cited in the docs or the host's comments.
Needs no binary: it reads the source tree only."""

import glob
import os
import re

from harness import SOURCE_DIR, run

README_MAX_LINES = 300
# Folders whose paths the docs cite; a path is checked up to its first character that
# cannot be part of a file name (`<name>`, `*.c`, `{a,b}` stop it). Under host/ a path is one
# with an extension or a folder's trailing slash: "host/lws" is a ratio in a table.
TREE_PATH = re.compile(r"(?<![\w./-])((?:sdk|tests|tools|dist|docs)/[A-Za-z0-9_./-]*"
                       r"|host/(?:[A-Za-z0-9_-]+/)*(?:[A-Za-z0-9_-]+\.[a-z]+)?)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
ISSUE = re.compile(r"\bissues?\s*#?\s*[0-9]", re.I)
MISSING_CONTRACT = re.compile(r"\bDESIGN(\.md|\s*§|\s+[0-9])")


def doc_files(root=None):
    root = root or SOURCE_DIR
    return [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(path):
    seen, out, fence = {}, set(), False
    for line in open(path, encoding="utf-8"):
        if line.startswith("```"):
            fence = not fence
        if fence:
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        a = slug(m.group(1))
        n = seen.get(a, 0)
        seen[a] = n + 1
        out.add(a if n == 0 else f"{a}-{n}")
    return out


def strip_code_fences(text):
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def broken_links(root=None):
    """[(file, link, why)] for every relative link that does not resolve."""
    root = root or SOURCE_DIR
    bad = []
    for f in doc_files(root):
        text = strip_code_fences(open(f, encoding="utf-8").read())
        for target in LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path, _, frag = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(f), path)) if path else f
            rel = os.path.relpath(f, root)
            if not os.path.exists(dest):
                bad.append((rel, target, "no such file"))
            elif frag and dest.endswith(".md") and frag not in anchors(dest):
                bad.append((rel, target, "no such heading"))
    return bad


def missing_paths(root=None):
    """[(file, path)] for every tree path a doc names that is not in the tree."""
    root = root or SOURCE_DIR
    bad = []
    for f in doc_files(root):
        for p in TREE_PATH.findall(open(f, encoding="utf-8").read()):
            p = p.rstrip(".,:;-")
            if not os.path.exists(os.path.join(root, p)):
                bad.append((os.path.relpath(f, root), p))
    return bad


def test_relative_links_resolve():
    bad = broken_links()
    assert not bad, "broken links:\n" + "\n".join(f"  {f}: ({t}) {why}" for f, t, why in bad)


def test_tree_paths_exist():
    bad = missing_paths()
    assert not bad, "paths that are not in the tree:\n" + "\n".join(f"  {f}: {p}" for f, p in bad)


def test_readme_is_short():
    n = len(open(os.path.join(SOURCE_DIR, "README.md"), encoding="utf-8").read().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES})"


def test_no_issue_numbers_nor_missing_contract():
    """Say what a thing is, not which ticket made it; cite docs/CONTRACT.md, which exists."""
    files = doc_files()
    for folder in ("host", "sdk"):
        for dirpath, _, names in os.walk(os.path.join(SOURCE_DIR, folder)):
            files += [os.path.join(dirpath, n) for n in names if n.endswith((".c", ".h", ".js"))]
    bad = []
    for f in files:
        for i, line in enumerate(open(f, encoding="utf-8", errors="replace"), 1):
            if ISSUE.search(line) or MISSING_CONTRACT.search(line):
                bad.append(f"  {os.path.relpath(f, SOURCE_DIR)}:{i}: {line.strip()[:100]}")
    assert not bad, "issue numbers or DESIGN references:\n" + "\n".join(bad)


def test_checker_catches_a_broken_link_and_path():
    """The checks above can fail: a copy of the docs with one bad link, one bad heading and
    one bad path is caught on each."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        os.mkdir(os.path.join(d, "docs"))
        os.mkdir(os.path.join(d, "host"))
        open(os.path.join(d, "host", "real.c"), "w").close()
        open(os.path.join(d, "docs", "A.md"), "w").write("# A\n\n## Real heading\n")
        open(os.path.join(d, "README.md"), "w").write(
            "[ok](docs/A.md#real-heading) [gone](docs/B.md) [bad](docs/A.md#nope)\n"
            "`host/real.c` and `host/gone.c`\n")
        links = broken_links(d)
        assert ("README.md", "docs/B.md", "no such file") in links, links
        assert ("README.md", "docs/A.md#nope", "no such heading") in links, links
        assert not [l for l in links if l[1] == "docs/A.md#real-heading"], links
        paths = missing_paths(d)
        assert ("README.md", "host/gone.c") in paths and ("README.md", "host/real.c") not in paths, paths


if __name__ == "__main__":
    run(globals())
