"""Shared fixtures, and the test folder on ``sys.path``.

The suite runs with ``--import-mode=importlib``, which leaves ``sys.path``
alone; putting this folder on it lets every test module ``import helpers``
(and ``fuzzing``), in the source tree as from a copy of ``tests/`` run
against an installed wheel.

Optional extras: ``helpers.require(name)`` imports an extra, skipping the
test that asks for it when it is missing -- or failing it under
``CNNKIT_REQUIRE_EXTRAS=1`` (see ``helpers.TEST_EXTRA``).  Called at module
level, a missing extra skips the whole module, or, when required, turns it
into one failing test (``_ExtrasModule`` below) instead of a collection
error that would stop the run.
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import helpers  # noqa: E402


class _MissingExtraItem(pytest.Item):
    """Stands for a test module that needs a required extra it cannot
    import: fails with the reason."""

    def __init__(self, *, reason, **kwargs):
        super().__init__(**kwargs)
        self.reason = reason

    def runtest(self):
        pytest.fail(self.reason, pytrace=False)

    def reportinfo(self):
        return self.path, None, self.name


class _ExtrasModule(pytest.Module):
    def collect(self):
        try:
            return super().collect()
        except helpers.MissingExtra as exc:
            return [_MissingExtraItem.from_parent(
                self, name=f"requires[{exc.module}]", reason=exc.msg)]


def pytest_pycollect_makemodule(module_path, parent):
    return _ExtrasModule.from_parent(parent, path=module_path)


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


@pytest.fixture
def assert_close():
    """assert_close(actual, expected_f64, dtype, n_terms=1)."""
    return helpers.assert_close


@pytest.fixture
def numerical_gradient():
    """numerical_gradient(f, a, eps=1e-6): central differences in float64."""
    return helpers.numerical_gradient


@pytest.fixture
def assert_grad_close():
    """assert_grad_close(numeric, analytic) for float64 gradients."""
    return helpers.assert_grad_close


@pytest.fixture
def to_layout():
    """to_layout(a, layout) with layout one of helpers.LAYOUTS."""
    return helpers.to_layout


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture(params=helpers.LAYOUTS)
def layout(request):
    return request.param


def _assert_user_error(code, err, *words):
    """A command-line run ended as a user error: exit code 2 and a
    one-line message on stderr (no traceback) that contains ``words``."""
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture
def assert_user_error():
    """``_assert_user_error``, for the command-line tests."""
    return _assert_user_error


@pytest.fixture
def functions_by_value(request):
    """Worker processes (joblib's loky, Dask) get the test module's
    functions by value.

    They unpickle what they run with cloudpickle, which sends a
    module-level function by reference, to be imported there; under
    ``--import-mode=importlib`` a test file is not importable in another
    process, so its functions (such as an estimator's ``architecture``)
    travel as code instead, as a user's ``__main__`` functions do.
    """
    import importlib

    module = request.module
    registered = []
    for name in ("cloudpickle", "joblib.externals.cloudpickle"):
        try:
            pickler = importlib.import_module(name)
        except ImportError:
            continue
        pickler.register_pickle_by_value(module)
        registered.append(pickler)
    yield
    for pickler in registered:
        pickler.unregister_pickle_by_value(module)
