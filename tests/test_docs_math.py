"""The documentation's formulas are typeset offline: MathJax ships with the
pages (docs/_static/mathjax/) and tools/check_docs_math.py checks them in a
headless browser without network.

The checker's reading of pages is tested on small synthetic pages; the
built docs are checked when they exist (docs/_build/html, after
``sphinx-build -b html docs docs/_build/html``) and Chromium is installed.
"""
import importlib.util
import re
from pathlib import Path

import pytest


def _root():
    here = Path(__file__).resolve().parent
    for folder in (here, *here.parents):
        if (folder / "tools" / "check_docs_math.py").is_file():
            return folder
    return None


ROOT = _root()
DOCS = ROOT / "docs" if ROOT else None
BUILT = DOCS / "_build" / "html" if ROOT else None

pytestmark = pytest.mark.skipif(
    ROOT is None, reason="the source tree is not beside the tests (an "
    "installed wheel's tests)")


@pytest.fixture(scope="module")
def check():
    path = ROOT / "tools" / "check_docs_math.py"
    spec = importlib.util.spec_from_file_location("check_docs_math", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILT_PAGE = """<html><head>
<script src="_static/jquery.js"></script>
<script defer="defer" src="_static/mathjax/tex-svg-full.js?v=1"></script>
</head><body><p>With <span class="math notranslate nohighlight">\\(x\\)</span>
and</p><div class="math notranslate nohighlight">\\[y = \\sum_i x_i\\]</div>
</body></html>"""

TYPESET = ('<mjx-container class="MathJax" jax="SVG"><svg><g '
           'data-mml-node="math"><use xlink:href="#MJX-1"/></g></svg>'
           '<mjx-assistive-mml><math><mi>x</mi></math></mjx-assistive-mml>'
           '</mjx-container>')


def _dom(first, second):
    return (f'<html><body><p>With <span class="math notranslate">{first}'
            f'</span> and</p><br><div class="math notranslate">{second}'
            f'</div></body></html>')


def test_a_built_page_is_read(check, tmp_path):
    formulas, scripts = check.read_page(BUILT_PAGE)
    assert len(formulas) == 2
    assert [f["typeset"] for f in formulas] == [False, False]
    assert formulas[1]["raw"] == "\\[y = \\sum_i x_i\\]"
    assert check.mathjax_scripts(scripts) == [
        "_static/mathjax/tex-svg-full.js?v=1"]


def test_mathjax_must_be_a_local_file_of_the_build(check, tmp_path):
    page = tmp_path / "page.html"
    assert check.static_problems(BUILT_PAGE, page, tmp_path) == [
        "MathJax script _static/mathjax/tex-svg-full.js?v=1 is not a file "
        "of the build"]
    (tmp_path / "_static" / "mathjax").mkdir(parents=True)
    (tmp_path / "_static" / "mathjax" / "tex-svg-full.js").write_text("")
    assert check.static_problems(BUILT_PAGE, page, tmp_path) == []
    cdn = BUILT_PAGE.replace(
        "_static/mathjax/tex-svg-full.js?v=1",
        "https://cdn.jsdelivr.net/npm/mathjax@4/tex-mml-chtml.js")
    assert check.static_problems(cdn, page, tmp_path) == [
        "MathJax is loaded from the network: "
        "https://cdn.jsdelivr.net/npm/mathjax@4/tex-mml-chtml.js"]
    nothing = BUILT_PAGE.replace("mathjax/tex-svg-full.js", "other.js")
    assert check.static_problems(nothing, page, tmp_path) == [
        "2 formulas but no MathJax script"]
    assert check.static_problems("<p>no math</p>", page, tmp_path) == []


def test_typeset_formulas_pass(check):
    assert check.dom_problems(_dom(TYPESET, TYPESET), 2) == []


def test_raw_tex_is_a_problem(check):
    # what a reader sees when MathJax did not load: the TeX source
    problems = check.dom_problems(_dom("\\(x\\)", "\\[y = \\sum_i x_i\\]"), 2)
    assert problems == ["formula 1 not typeset: \\(x\\)",
                        "formula 2 not typeset: \\[y = \\sum_i x_i\\]"]
    # one typeset, one left as source (unbalanced braces are skipped)
    problems = check.dom_problems(_dom(TYPESET, "\\[\\frac{a}{\\]"), 2)
    assert problems == ["formula 2 not typeset: \\[\\frac{a}{\\]"]
    assert check.dom_problems(_dom(TYPESET, TYPESET + " \\(z\\)"), 2) == [
        "formula 2 has raw TeX left: \\(z\\)"]


def test_mathjax_errors_and_lost_formulas_are_problems(check):
    error = TYPESET.replace(
        'data-mml-node="math"',
        'data-mml-node="merror" data-mjx-error="Double exponent"')
    undefined = TYPESET.replace(
        "<mi>x</mi>", '<mtext mathcolor="red">\\foo</mtext>')
    assert check.dom_problems(_dom(error, undefined), 2) == [
        "formula 1: MathJax error: Double exponent",
        "formula 2: MathJax error: undefined macro \\foo"]
    assert check.dom_problems(_dom(TYPESET, TYPESET), 3) == [
        "3 math elements in the page, 2 after its scripts ran"]


def test_pages_to_render(check):
    counts = {"math.html": 90, "auto_examples/seed_walkthrough.html": 30,
              "auto_examples/other.html": 40, "user_guide/a.html": 2,
              "user_guide/b.html": 5, "index.html": 1}
    assert check.choose(counts) == [
        "math.html", "auto_examples/seed_walkthrough.html",
        "auto_examples/other.html", "user_guide/b.html"]
    assert check.choose(counts, everything=True) == list(counts)


def test_the_docs_point_mathjax_at_the_shipped_copy():
    conf = (DOCS / "conf.py").read_text()
    path = re.search(r'^mathjax_path = "([^"]+)"', conf, re.M).group(1)
    assert "://" not in path
    script = DOCS / "_static" / path
    assert script.is_file() and script.stat().st_size > 1_000_000
    text = script.read_text(encoding="utf-8")
    assert text.startswith("(function(){") and 'VERSION="3.2.2"' in text
    licence = (script.parent / "LICENSE.txt").read_text()
    assert "Apache License" in licence and "Version 2.0" in licence
    credit = (DOCS / "_templates" / "mathjax-credit.html").read_text()
    assert "MathJax</a> 3.2.2" in credit and "LICENSE.txt" in credit
    assert '"mathjax-credit"' in conf


def test_built_docs_typeset_every_formula_offline(check):
    if not (BUILT / "math.html").is_file():
        pytest.skip(f"no built docs in {BUILT} (sphinx-build -b html docs "
                    f"docs/_build/html)")
    if check.find_browser() is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    assert check.main([str(BUILT)]) == 0
