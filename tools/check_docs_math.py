#!/usr/bin/env python3
"""Check that the built HTML documentation typesets its formulas offline.

Usage::

    python tools/check_docs_math.py [HTML_DIR] [--all] [--browser PATH]

``HTML_DIR`` is the output of ``sphinx-build -b html`` (default
``docs/_build/html``).  Two checks:

1. Every page with formulas (elements of class ``math``, as Sphinx writes
   them) loads MathJax from a file of the build itself: no ``http(s)``
   URL, and the file exists.  All pages, read as text (fast).
2. A headless Chromium with no network (every host name fails to resolve)
   opens pages from the disk, runs their scripts and prints the resulting
   DOM (``--dump-dom``).  Every math element must then hold a typeset
   formula (a ``mjx-container``), no raw TeX (``\\(...\\)``, ``\\[...\\]``)
   may be left in it, and no formula may be a MathJax error (a TeX error,
   or an undefined macro shown in red).  By default the pages checked are
   "The math", "CNNs step by step" and, from every other folder with
   formulas, its page with the most of them (so every relative path to
   ``_static`` is exercised); ``--all`` checks every page with formulas.

Chromium is Debian's ``chromium`` package (``apt-get install chromium``);
``--browser`` or the ``CHROMIUM`` environment variable names another
binary.  Exit status: 0 when every check passed, 1 when one failed (each
problem is printed), 2 when the folder or the browser is missing.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

# The pages that must be checked in every run (relative to HTML_DIR).
KEY_PAGES = ("math.html", "auto_examples/seed_walkthrough.html")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
        "meta", "param", "source", "track", "wbr"}


def _is_math(tag, attrs):
    classes = (dict(attrs).get("class") or "").split()
    return tag in ("span", "div") and "math" in classes


class _Page(HTMLParser):
    """Walks a page (as built, or as the browser left it) and records its
    math elements and its scripts."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []          # open non-void elements: (tag, is_math)
        self.formulas = []       # per math element: {"typeset", "raw", "errors"}
        self.scripts = []        # src of every <script src=...>
        self._mtext_red = 0      # depth inside <mtext mathcolor="red">
        self._mjx = 0            # depth inside <mjx-container>

    @property
    def _current(self):
        return self.formulas[-1] if self.formulas and any(
            m for _, m in self.stack) else None

    def handle_starttag(self, tag, attrs):
        self._open(tag, attrs)
        if tag not in VOID:
            self.stack.append((tag, _is_math(tag, attrs) and not any(
                m for _, m in self.stack)))
            if tag == "mjx-container":
                self._mjx += 1
            if tag == "mtext" and dict(attrs).get("mathcolor") == "red":
                self._mtext_red += 1

    def handle_startendtag(self, tag, attrs):
        self._open(tag, attrs)

    def _open(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"])
        if _is_math(tag, attrs) and not any(m for _, m in self.stack):
            self.formulas.append({"typeset": False, "raw": "", "errors": []})
        cur = self._current
        if cur is None:
            return
        if tag == "mjx-container":
            cur["typeset"] = True
        if a.get("data-mjx-error") and tag != "merror":
            cur["errors"].append(a["data-mjx-error"])

    def handle_endtag(self, tag):
        # pop to the matching element (the serialiser closes every one)
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                for t, _ in self.stack[i:]:
                    if t == "mjx-container":
                        self._mjx -= 1
                    if t == "mtext" and self._mtext_red:
                        self._mtext_red -= 1
                del self.stack[i:]
                break

    def handle_data(self, data):
        cur = self._current
        if cur is None:
            return
        if self._mjx == 0:
            cur["raw"] += data
        elif self._mtext_red and data.startswith("\\"):
            cur["errors"].append(f"undefined macro {data.strip()}")


def read_page(html):
    """(formulas, scripts) of an HTML text: one dict per math element
    (``typeset``: holds a mjx-container; ``raw``: its text outside one;
    ``errors``: MathJax's error messages) and the ``src`` of every
    script."""
    page = _Page()
    page.feed(html)
    page.close()
    return page.formulas, page.scripts


def mathjax_scripts(scripts):
    return [s for s in scripts if "mathjax" in s.lower()]


def static_problems(html, page_path, root):
    """What is wrong with a page as built: its formulas need a MathJax that
    is loaded from the network or missing from the build."""
    formulas, scripts = read_page(html)
    if not formulas:
        return []
    found = mathjax_scripts(scripts)
    if not found:
        return [f"{len(formulas)} formulas but no MathJax script"]
    problems = []
    for src in found:
        if "://" in src or src.startswith("//"):
            problems.append(f"MathJax is loaded from the network: {src}")
            continue
        target = (Path(page_path).parent / src.split("?")[0]).resolve()
        if not target.is_file() or Path(root).resolve() not in target.parents:
            problems.append(f"MathJax script {src} is not a file of the "
                            f"build")
    return problems


def dom_problems(dom, expected):
    """What is wrong with a page after its scripts ran: ``expected`` math
    elements (counted in the built page) must each hold a typeset formula
    with no raw TeX and no error."""
    formulas, _ = read_page(dom)
    problems = []
    if len(formulas) != expected:
        problems.append(f"{expected} math elements in the page, "
                        f"{len(formulas)} after its scripts ran")
    for i, f in enumerate(formulas):
        raw = " ".join(f["raw"].split())
        if not f["typeset"]:
            problems.append(f"formula {i + 1} not typeset: {raw[:70]}")
        elif raw:
            problems.append(f"formula {i + 1} has raw TeX left: {raw[:70]}")
        for err in f["errors"]:
            problems.append(f"formula {i + 1}: MathJax error: {err}")
    return problems


def find_browser(name=None):
    """The path of a Chromium binary, or None."""
    for cand in ([name] if name else
                 [os.environ.get("CHROMIUM")] + list(BROWSERS)):
        if cand:
            path = shutil.which(cand)
            if path:
                return path
    return None


def render(browser, page, timeout=90):
    """The DOM of ``page`` after a headless Chromium without network ran its
    scripts."""
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [browser, "--headless", "--disable-gpu", "--no-sandbox",
             "--no-first-run", "--disable-extensions",
             f"--user-data-dir={profile}",
             "--host-resolver-rules=MAP * ~NOTFOUND",   # no network
             "--virtual-time-budget=20000", "--dump-dom",
             Path(page).resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise RuntimeError(f"{browser} failed on {page} (status "
                           f"{proc.returncode}): {proc.stderr[-500:]}")
    return proc.stdout


def pages_with_math(root):
    """{relative path: number of math elements} of every page with
    formulas under ``root``."""
    out = {}
    for path in sorted(Path(root).rglob("*.html")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("_static/", "_sources/", "_modules/")):
            continue
        formulas, _ = read_page(path.read_text(encoding="utf-8"))
        if formulas:
            out[rel] = len(formulas)
    return out


def choose(counts, everything=False):
    """The pages to open in the browser: the key pages, and the page with
    the most formulas of every other folder (or every page)."""
    if everything:
        return list(counts)
    chosen = [p for p in KEY_PAGES if p in counts]
    best = {}
    for rel, n in counts.items():
        folder = rel.rpartition("/")[0]
        if n > counts.get(best.get(folder), 0):
            best[folder] = rel
    chosen += [p for p in best.values() if p not in chosen]
    return chosen


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html_dir", nargs="?", default="docs/_build/html")
    parser.add_argument("--all", action="store_true",
                        help="open every page with formulas in the browser")
    parser.add_argument("--browser", help="the Chromium binary")
    args = parser.parse_args(argv)
    root = Path(args.html_dir)
    if not (root / "index.html").is_file():
        print(f"check_docs_math: no built docs in {root} (run sphinx-build "
              f"-b html docs {root} first)", file=sys.stderr)
        return 2
    counts = pages_with_math(root)
    failures = 0
    for rel in counts:
        for p in static_problems((root / rel).read_text(encoding="utf-8"),
                                 root / rel, root):
            print(f"{rel}: {p}")
            failures += 1
    for rel in KEY_PAGES:
        if rel not in counts:
            print(f"{rel}: missing, or has no formulas")
            failures += 1
    browser = find_browser(args.browser)
    if browser is None:
        print("check_docs_math: no Chromium found (apt-get install chromium, "
              "or --browser PATH)", file=sys.stderr)
        return 2
    chosen = choose(counts, args.all)
    for rel in chosen:
        problems = dom_problems(render(browser, root / rel), counts[rel])
        for p in problems:
            print(f"{rel}: {p}")
        failures += len(problems)
        print(f"{rel}: {counts[rel]} formulas, "
              f"{'typeset' if not problems else 'NOT all typeset'}")
    print(f"check_docs_math: {sum(counts.values())} formulas in "
          f"{len(counts)} pages, {len(chosen)} of them rendered offline by "
          f"{Path(browser).name}: "
          f"{'ok' if not failures else f'{failures} problem(s)'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
