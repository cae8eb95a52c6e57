"""Sphinx configuration of the cnnkit documentation.

Build (warnings are errors), then run the docstring examples::

    sphinx-build -W --keep-going -b html docs docs/_build/html
    sphinx-build -W --keep-going -b doctest docs docs/_build/doctest

cnnkit must be installed (``pip install ".[docs,sklearn]"``): the API pages
import it, the gallery runs it.  Nothing is fetched from the network: the
intersphinx inventories of Python and NumPy are stored in ``_intersphinx/``.
"""
import doctest
import os
import re
import sys
from pathlib import Path

import cnnkit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))     # local extensions: benchchart

# -- Project -----------------------------------------------------------------
project = "cnnkit"
copyright = "the cnnkit developers, BSD 3-Clause"
author = "the cnnkit developers"
version = release = cnnkit.__version__

# -- General -----------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "benchchart",
]

templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "_intersphinx",
    "_templates",
    "examples",            # gallery sources; sphinx-gallery renders them
    "**.ipynb_checkpoints",
]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
default_role = "py:obj"
pygments_style = "sphinx"
nitpicky = False

# -- autodoc / autosummary / numpydoc ----------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"
autodoc_inherit_docstrings = True
add_module_names = False

numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = True
numpydoc_xref_ignore = "all"
numpydoc_xref_aliases = {
    "ndarray": "numpy.ndarray",
    "Generator": "numpy.random.Generator",
    "Sequential": "cnnkit.Sequential",
    "Layer": "cnnkit.layers.Layer",
    "Optimizer": "cnnkit.optim.Optimizer",
    "Schedule": "cnnkit.optim.Schedule",
    "Callback": "cnnkit.callbacks.Callback",
    "History": "cnnkit.callbacks.History",
    "CNNClassifier": "cnnkit.sklearn.CNNClassifier",
    "PathLike": "os.PathLike",
}

# -- intersphinx: offline inventories only -----------------------------------
intersphinx_mapping = {
    "python": ("https://docs.python.org/3",
               str(HERE / "_intersphinx" / "python-objects.inv")),
    "numpy": ("https://numpy.org/doc/stable",
              str(HERE / "_intersphinx" / "numpy-objects.inv")),
}
intersphinx_timeout = 1

# -- math: MathJax ships with the pages -------------------------------------
# The pages are read offline (classrooms, air-gapped machines), so MathJax is
# not loaded from a CDN: _static/mathjax/ holds MathJax 3.2.2's combined
# TeX-to-SVG component (every TeX extension built in; SVG output draws the
# glyphs as paths, so no font file is fetched, which file:// pages in
# subfolders could not do in every browser).  Its licence (Apache-2.0) and
# provenance are in _static/mathjax/; tools/check_docs_math.py checks in a
# headless browser without network that every formula is typeset.
mathjax_path = "mathjax/tex-svg-full.js"
mathjax3_config = {"svg": {"fontCache": "global"}}

# -- doctest -----------------------------------------------------------------
doctest_global_setup = """
import numpy as np
np.set_printoptions(legacy=False)
"""
doctest_default_flags = (doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
                         | doctest.DONT_ACCEPT_TRUE_FOR_1)
doctest_test_doctest_blocks = "default"

# -- sphinx-gallery ----------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": ["examples"],
    "gallery_dirs": ["auto_examples"],
    # run every script: the walk-through and every plot_* example
    "filename_pattern": r"/(plot_|seed_walkthrough)",
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "backreferences_dir": "generated/backreferences",
    "doc_module": ("cnnkit",),
    "reference_url": {"cnnkit": None},
    "show_memory": False,
    "min_reported_time": 1,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "capture_repr": (),          # show what the scripts print, nothing else
    "write_computation_times": True,
}

# -- HTML --------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"cnnkit {release}"
html_static_path = ["_static"]
html_css_files = ["cnnkit.css"]
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "secondary_sidebar_items": ["page-toc", "sourcelink"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "mathjax-credit"],
}
html_sidebars = {"index": [], "getting_started": []}
html_show_sourcelink = True
html_copy_source = True


# -- generated pages ---------------------------------------------------------
def _write_cli_help(app):
    """Write ``cnnkit --help`` and every command's ``--help`` to
    ``generated/cli/`` so that the command-line page quotes the parser
    itself."""
    from cnnkit import cli

    out = HERE / "generated" / "cli"
    out.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "79"
    try:
        parser = cli.build_parser()
        texts = {"cnnkit": parser.format_help()}
        subparsers = next(a for a in parser._actions
                          if a.__class__.__name__ == "_SubParsersAction")
        for name, sub in subparsers.choices.items():
            texts[name] = sub.format_help()
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    for name, text in texts.items():
        path = out / f"{name}.txt"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


_API_MODULES = {
    "cnnkit": "api/cnnkit.rst",
    "cnnkit.functional": "api/functional.rst",
    "cnnkit.reference": "api/reference.rst",
    "cnnkit.layers": "api/layers.rst",
    "cnnkit.optim": "api/optim.rst",
    "cnnkit.callbacks": "api/callbacks.rst",
    "cnnkit.trainer": "api/trainer.rst",
    "cnnkit.datasets": "api/datasets.rst",
    "cnnkit.sklearn": "api/sklearn.rst",
    "cnnkit.distributed": "api/distributed.rst",
    "cnnkit.onnx": "api/onnx.rst",
}


def _check_api_complete(app):
    """Warn (an error under -W) when a name in a module's ``__all__`` has no
    entry in the API reference, or an entry names nothing public."""
    import importlib

    from sphinx.util import logging

    logger = logging.getLogger("cnnkit.docs")
    for modname, page in _API_MODULES.items():
        module = importlib.import_module(modname)
        public = set(module.__all__)
        if modname == "cnnkit":      # submodules have pages of their own
            public = {n for n in public
                      if not hasattr(getattr(module, n), "__all__")}
        text = (HERE / page).read_text()
        listed = set()
        current = None
        for line in text.splitlines():
            m = re.match(r"\s*\.\. currentmodule:: (\S+)", line)
            if m:
                current = m.group(1)
                continue
            m = re.match(r"\s*\.\. data:: (\w+)", line)
            if m and current == modname:
                listed.add(m.group(1))
                continue
            m = re.match(r"^\s{3,}(~?[\w.]+)\s*$", line)
            if m and current == modname:
                listed.add(m.group(1).lstrip("~").split(".")[-1])
        for name in sorted(public - listed):
            logger.warning(f"API reference: {modname}.{name} is public "
                           f"(in __all__) but not listed in {page}")
        for name in sorted(listed - public):
            if not hasattr(module, name):
                logger.warning(f"API reference: {page} lists {modname}."
                               f"{name}, which does not exist")


def _skip_member(app, what, name, obj, skip, options):
    """Leave out scikit-learn's generated metadata-routing setters
    (``set_fit_request`` ...): they are scikit-learn's, documented there."""
    if re.fullmatch(r"set_\w+_request", name):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("builder-inited", _write_cli_help, priority=100)
    app.connect("builder-inited", _check_api_complete, priority=100)


# matplotlib in the gallery: no window, ever
os.environ.setdefault("MPLBACKEND", "Agg")
