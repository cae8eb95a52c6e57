"""Shared fixtures, and the test folder on ``sys.path``.

The suite runs with ``--import-mode=importlib``, which leaves ``sys.path``
alone; putting this folder on it lets every test module ``import helpers``,
in the source tree as from a copy of ``tests/`` run against an installed
wheel.

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


# Tolerances relative to the float64 reference, per result dtype.
RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}

# Memory layouts an input may arrive in; each keeps the values of ``a``
# except "broadcast", which repeats the first entry of axis 0.
LAYOUTS = ["C", "F", "strided", "transposed", "reversed", "readonly",
           "broadcast", "unaligned"]


def _check_close(actual, expected, dtype, n_terms=1):
    """``actual`` has ``dtype`` and the shape of ``expected`` (computed in
    float64), and equals it within the dtype's tolerance; ``n_terms`` is the
    length of the sums behind each element (scales the absolute tolerance)."""
    dtype = np.dtype(dtype)
    expected = np.asarray(expected, dtype=np.float64)
    assert isinstance(actual, np.ndarray), type(actual)
    assert actual.dtype == dtype, (actual.dtype, dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    rtol = RTOL[dtype]
    scale = float(np.max(np.abs(expected), initial=0.0))
    atol = rtol * scale * np.sqrt(n_terms)
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=rtol,
                               atol=atol)


def _numerical_gradient(f, a, eps=1e-6):
    """Central differences of the scalar function ``f`` at ``a`` (float64)."""
    a = np.array(a, dtype=np.float64)
    grad = np.zeros_like(a)
    for i in range(a.size):
        old = a.flat[i]
        a.flat[i] = old + eps
        plus = float(f(a))
        a.flat[i] = old - eps
        minus = float(f(a))
        a.flat[i] = old
        grad.flat[i] = (plus - minus) / (2 * eps)
    return grad


def _check_grad(numeric, analytic):
    analytic = np.asarray(analytic)
    assert analytic.shape == numeric.shape, (analytic.shape, numeric.shape)
    assert analytic.dtype == np.float64
    scale = max(1.0, float(np.max(np.abs(numeric), initial=0.0)))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6,
                               atol=1e-7 * scale)


def _to_layout(a, layout):
    """``a`` (an ndarray of ndim >= 1) in the memory layout ``layout``."""
    a = np.asarray(a)
    if layout == "C":
        out = np.ascontiguousarray(a)
        assert out.flags.c_contiguous
    elif layout == "F":
        out = np.asfortranarray(a)
    elif layout == "strided":
        big = np.zeros(tuple(2 * d + 1 for d in a.shape), dtype=a.dtype)
        big[tuple(slice(1, None, 2) for _ in a.shape)] = a
        out = big[tuple(slice(1, None, 2) for _ in a.shape)]
    elif layout == "transposed":
        perm = tuple(range(a.ndim))[::-1]
        out = np.ascontiguousarray(a.transpose(perm)).transpose(perm)
    elif layout == "reversed":
        flip = (slice(None, None, -1),) * a.ndim
        out = np.ascontiguousarray(a[flip])[flip]
    elif layout == "readonly":
        out = a.copy()
        out.flags.writeable = False
    elif layout == "broadcast":
        out = np.broadcast_to(a[:1], a.shape)
    elif layout == "unaligned":
        buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
        out = buf[1:].view(a.dtype).reshape(a.shape)
        out[...] = a
        assert a.dtype.itemsize == 1 or not out.flags.aligned
    else:
        raise ValueError(layout)
    assert out.shape == a.shape
    if (layout in ("strided", "reversed") and a.size > 1) or (
            layout in ("F", "transposed") and a.ndim >= 2
            and sorted(a.shape)[-2] > 1):
        assert not out.flags.c_contiguous
    if layout in ("readonly", "broadcast"):
        assert not out.flags.writeable
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


@pytest.fixture
def assert_close():
    """assert_close(actual, expected_f64, dtype, n_terms=1)."""
    return _check_close


@pytest.fixture
def numerical_gradient():
    """numerical_gradient(f, a, eps=1e-6): central differences in float64."""
    return _numerical_gradient


@pytest.fixture
def assert_grad_close():
    """assert_grad_close(numeric, analytic) for float64 gradients."""
    return _check_grad


@pytest.fixture
def to_layout():
    """to_layout(a, layout) with layout one of LAYOUTS."""
    return _to_layout


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture(params=LAYOUTS)
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
