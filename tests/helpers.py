"""Shared helpers of the test suite (``conftest.py`` puts this folder on
``sys.path``, so test modules ``import helpers`` under
``--import-mode=importlib``, in the source tree and from a copy of
``tests/`` run against an installed wheel).

* ``require``: an optional extra, skipped without it -- failed instead
  under ``CNNKIT_REQUIRE_EXTRAS=1``.
"""
import importlib
import os

import pytest

# ==========================================================================
# optional extras
# ==========================================================================
#: The modules the ``test`` extra of pyproject.toml installs (the
#: ``CNNKIT_REQUIRE_EXTRAS=1`` set).  Comparisons against other packages
#: (torch, safetensors, matplotlib, sphinx, onnxscript) stay optional: name
#: them in the variable to require them too, e.g.
#: ``CNNKIT_REQUIRE_EXTRAS=1,torch``, or use ``CNNKIT_REQUIRE_EXTRAS=all``.
TEST_EXTRA = frozenset({"threadpoolctl", "sklearn", "mpi4py", "dask",
                        "distributed", "joblib", "onnx", "onnxruntime"})


class MissingExtra(pytest.fail.Exception):
    """A required extra is missing: a test failure, and (raised while a
    test module is imported) one failing item for that module."""

    def __init__(self, message, module):
        super().__init__(message, pytrace=False)
        self.module = module


def extra_required(module):
    """Whether a missing ``module`` fails the tests (CNNKIT_REQUIRE_EXTRAS)
    instead of skipping them."""
    words = {w.strip() for w in
             os.environ.get("CNNKIT_REQUIRE_EXTRAS", "").split(",")}
    top = module.split(".")[0]
    return ("all" in words or top in words or
            ("1" in words and top in TEST_EXTRA))


def extra_missing(module, reason):
    """Skip the running test (or, at module level, the module) because
    ``module`` is not usable for ``reason``; fail instead where
    CNNKIT_REQUIRE_EXTRAS requires it."""
    __tracebackhide__ = True
    if module.split(".")[0] in TEST_EXTRA:
        reason += ": pip install \".[test]\" installs it"
    if extra_required(module):
        raise MissingExtra(f"CNNKIT_REQUIRE_EXTRAS is set and {reason}",
                           module)
    pytest.skip(reason, allow_module_level=True)


def require(module):
    """``module`` imported; when it is not installed, skip the test that
    asks (or the module, at module level) -- a failure instead under
    ``CNNKIT_REQUIRE_EXTRAS=1`` for the test extra's modules."""
    __tracebackhide__ = True
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        reason = f"{module} is not installed ({exc})"
    extra_missing(module, reason)
