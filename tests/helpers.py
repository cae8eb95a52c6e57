"""Shared helpers of the test suite (``conftest.py`` puts this folder on
``sys.path``, so test modules ``import helpers`` under
``--import-mode=importlib``, in the source tree and from a copy of
``tests/`` run against an installed wheel).

* ``check_op``: one op of ``cnnkit.functional``, forward and backward,
  held to its twin in ``cnnkit.reference`` over dtypes x thread counts x
  memory layouts, with bit-identical results for every thread count and
  layout and inputs that are never written.
* ``check_gradients``: an op's backward against central finite differences
  of its forward, in float64.
* ``require``: an optional extra, skipped without it -- failed instead
  under ``CNNKIT_REQUIRE_EXTRAS=1``.
* tolerances (``assert_close``), layouts (``to_layout``), thread counts
  (``num_threads``) and child interpreters (``run_python``).
"""
import contextlib
import importlib
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from typing import Callable, Optional

import pathlib
import re

import numpy as np
import pytest

import cnnkit
from cnnkit import functional as F
from cnnkit import reference as R

GiB = 2**30

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


# ==========================================================================
# tolerances, gradients, layouts
# ==========================================================================
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: Tolerance relative to the float64 reference, per result dtype.
RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}

#: Memory layouts an input may arrive in; each keeps the values of the
#: array except "broadcast", which repeats the first entry of axis 0.
LAYOUTS = ("C", "F", "strided", "transposed", "reversed", "readonly",
           "broadcast", "unaligned")
#: The layouts ``check_op`` runs by default.
DEFAULT_LAYOUTS = ("C", "F", "strided")
#: The thread counts ``check_op`` runs by default.
THREADS = (1, 2, 3)


def f64(*arrays):
    """The arrays as float64 (None stays None)."""
    return [None if a is None else np.asarray(a, dtype=np.float64)
            for a in arrays]


def assert_close(actual, expected, dtype, n_terms=1):
    """``actual`` has ``dtype`` and the shape of ``expected`` (computed in
    float64), and equals it within the dtype's tolerance; ``n_terms`` is the
    length of the sums behind each element (scales the absolute tolerance)."""
    dtype = np.dtype(dtype)
    expected = np.asarray(expected, dtype=np.float64)
    assert isinstance(actual, np.ndarray), type(actual)
    assert actual.dtype == dtype, (actual.dtype, dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    rtol = RTOL[dtype]
    scale = float(np.max(np.abs(expected[np.isfinite(expected)]),
                         initial=0.0))
    atol = rtol * scale * np.sqrt(n_terms)
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=rtol,
                               atol=atol)


def numerical_gradient(f, a, eps=1e-6):
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


def assert_grad_close(numeric, analytic, atol=1e-7):
    """A float64 gradient equals central differences: relative 1e-6,
    absolute ``atol`` times the larger of 1 and the gradient's magnitude."""
    analytic = np.asarray(analytic)
    assert analytic.shape == numeric.shape, (analytic.shape, numeric.shape)
    assert analytic.dtype == np.float64
    scale = max(1.0, float(np.max(np.abs(numeric), initial=0.0)))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6,
                               atol=atol * scale)


def to_layout(a, layout):
    """``a`` (an ndarray) in the memory layout ``layout`` (one of
    LAYOUTS); a 0-d array is returned as it is, except "readonly"."""
    a = np.asarray(a)
    if a.ndim == 0:
        if layout == "readonly":
            a = a.copy()
            a.flags.writeable = False
        return a
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
        assert a.dtype.itemsize == 1 or a.size == 0 or not out.flags.aligned
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


def each_argument(layouts, n):
    """Layout tuples for ``check_op`` that pass one of ``n`` arrays (the
    inputs, then the output gradient) at a time in each of ``layouts``,
    the others C-contiguous."""
    return [("C",) * i + (layout,) + ("C",) * (n - i - 1)
            for i in range(n) for layout in layouts]


@contextlib.contextmanager
def num_threads(n):
    """``cnnkit.set_num_threads(n)`` for the block; afterwards the count in
    effect before (the default when it was the default)."""
    fixed = cnnkit._ops.thread_policy()["fixed_by"] == "set_num_threads"
    before = cnnkit.get_num_threads()
    cnnkit.set_num_threads(n)
    try:
        yield
    finally:
        cnnkit.set_num_threads(before if fixed else 0)


# ==========================================================================
# input values
# ==========================================================================
def normal_values(rng, shape):
    """Standard normal values; the first of several is -0.0, so that a
    write to an input shows even in its sign bit."""
    a = rng.standard_normal(shape)
    if a.size > 1:
        a.flat[0] = -0.0
    return a


def int_values(rng, shape):
    """Small integers in [-3, 3): many ties."""
    return rng.integers(-3, 3, size=shape).astype(np.float64)


def distinct_values(rng, shape):
    """Distinct values 0.01 apart (no ties: max pooling is differentiable
    at every input, and no value is near ReLU's kink at 0)."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.01 - n * 0.005 + 0.0025).reshape(shape)


VALUES = {"normal": normal_values, "int": int_values,
          "distinct": distinct_values}


# ==========================================================================
# the ops
# ==========================================================================
def _pair(v):
    return (v, v) if np.ndim(v) == 0 else (int(v[0]), int(v[1]))


def _conv_ref(x, w, b=None, **hp):
    lead = 4 - x.ndim
    w4 = w.reshape((1,) * (4 - w.ndim) + w.shape)
    y = R.conv2d(x.reshape((1,) * lead + x.shape), w4, b, **hp)
    return y.reshape(y.shape[lead:])


def _conv_backward(g, ins, outs, **hp):
    return F.conv2d_backward(g, ins[0], ins[1], bias=len(ins) > 2, **hp)


def _conv_ref_backward(g, ins, outs, **hp):
    x, w = ins[0], ins[1]
    lead = 4 - x.ndim
    gx, gw, gb = R.conv2d_backward(
        g.reshape((1,) * lead + g.shape), x.reshape((1,) * lead + x.shape),
        w.reshape((1,) * (4 - w.ndim) + w.shape), bias=len(ins) > 2, **hp)
    return gx.reshape(x.shape), gw.reshape(w.shape), gb


def _conv_terms(shapes, out_shape, hp):
    x = (1,) * (4 - len(shapes[0])) + tuple(shapes[0])
    w = (1,) * (4 - len(shapes[1])) + tuple(shapes[1])
    pixels = x[0] * out_shape[-2] * out_shape[-1]
    k_group = w[0] // hp.get("groups", 1)    # filters that see a channel
    return (w[1] * w[2] * w[3] + 1,), (k_group * w[2] * w[3], pixels, pixels)


def _pool_ref(fn):
    def ref(x, *args, **hp):
        lead = 4 - x.ndim
        out = fn(x.reshape((1,) * lead + x.shape), *args, **hp)
        if isinstance(out, tuple):
            return tuple(o.reshape(o.shape[lead:]) for o in out)
        return out.reshape(out.shape[lead:])
    return ref


def _max_pool_backward(g, ins, outs, **hp):
    return (F.max_pool2d_backward(g, outs[1], ins[0].shape),)


def _max_pool_ref_backward(g, ins, outs, **hp):
    x = ins[0]
    lead = 4 - x.ndim
    shape4 = (1,) * lead + x.shape
    gx = R.max_pool2d_backward(g.reshape((1,) * lead + g.shape),
                               outs[1].reshape((1,) * lead + outs[1].shape),
                               shape4)
    return (gx.reshape(x.shape),)


def _pool_terms(shapes, out_shape, hp):
    kh, kw = _pair(hp.get("kernel_size", 1))
    return (kh * kw,), (kh * kw,)


def _avg_pool_backward(g, ins, outs, **hp):
    return (F.avg_pool2d_backward(g, ins[0].shape, **hp),)


def _avg_pool_ref_backward(g, ins, outs, **hp):
    x = ins[0]
    lead = 4 - x.ndim
    gx = R.avg_pool2d_backward(g.reshape((1,) * lead + g.shape),
                               (1,) * lead + x.shape, **hp)
    return (gx.reshape(x.shape),)


def _dense_ref(x, w, b=None):
    y = R.dense(x.reshape(-1, x.shape[-1]), w.reshape(-1, w.shape[-1]),
                None if b is None else b.reshape(-1))
    shape = x.shape[:-1] + w.shape[:-1]
    return y.reshape(shape)


def _dense_backward(g, ins, outs, **hp):
    return F.dense_backward(g, ins[0], ins[1], bias=len(ins) > 2)


def _dense_ref_backward(g, ins, outs, **hp):
    x, w = ins[0], ins[1]
    n, o = int(np.prod(x.shape[:-1])), int(np.prod(w.shape[:-1]))
    gx, gw, gb = R.dense_backward(g.reshape(n, o), x.reshape(n, -1),
                                  w.reshape(o, -1), bias=len(ins) > 2)
    if gb is not None:
        gb = gb.reshape(w.shape[:-1])
    return gx.reshape(x.shape), gw.reshape(w.shape), gb


def _dense_terms(shapes, out_shape, hp):
    x, w = shapes[0], shapes[1]
    n = int(np.prod(x[:-1]))
    o = int(np.prod(w[:-1]))
    return (x[-1] + 1,), (o, n, n)


@dataclass(frozen=True)
class Op:
    """An op of ``cnnkit.functional`` with its ``cnnkit.reference`` twin.

    forward, reference: ``f(*inputs, **hyper)``; each returns an array or a
    tuple (e.g. max pooling's values and indices).
    backward, reference_backward: ``f(grad_out, inputs, outputs, **hyper)``
    -> tuple of gradients (None where there is none), ``outputs`` being
    the same implementation's forward result as a tuple; None for ops
    without a backward.
    terms: ``f(input_shapes, output_shape, hyper)`` -> (terms per forward
    output, terms per gradient): the length of the sums behind each element,
    which scales the tolerance.
    exact: forward outputs compared bit for bit (NaN equal NaN) instead of
    within the tolerance; exact_backward likewise for the gradients.
    """
    forward: Callable
    reference: Callable
    backward: Optional[Callable] = None
    reference_backward: Optional[Callable] = None
    terms: Callable = lambda shapes, out, hp: ((1,), (1,))
    exact: bool = False
    exact_backward: bool = False


def _relu_backward(g, ins, outs, **hp):
    return (F.relu_backward(g, ins[0]),)


def _relu_ref_backward(g, ins, outs, **hp):
    return (R.relu_backward(g, ins[0]),)


def _gap_backward(g, ins, outs, **hp):
    return (F.global_avg_pool2d_backward(g, ins[0].shape),)


def _gap_ref_backward(g, ins, outs, **hp):
    return (R.global_avg_pool2d_backward(g, ins[0].shape),)


OPS = {
    "conv2d": Op(F.conv2d, _conv_ref, _conv_backward, _conv_ref_backward,
                 _conv_terms),
    "relu": Op(F.relu, R.relu, _relu_backward, _relu_ref_backward,
               exact=True, exact_backward=True),
    "max_pool2d": Op(F.max_pool2d, _pool_ref(R.max_pool2d),
                     _max_pool_backward, _max_pool_ref_backward, _pool_terms,
                     exact=True),
    "avg_pool2d": Op(F.avg_pool2d, _pool_ref(R.avg_pool2d),
                     _avg_pool_backward, _avg_pool_ref_backward, _pool_terms),
    "global_avg_pool2d": Op(
        F.global_avg_pool2d, R.global_avg_pool2d, _gap_backward,
        _gap_ref_backward,
        lambda shapes, out, hp: ((shapes[0][2] * shapes[0][3],), (1,))),
    "dense": Op(F.dense, _dense_ref, _dense_backward, _dense_ref_backward,
                _dense_terms),
    "softmax": Op(F.softmax, R.softmax,
                  terms=lambda shapes, out, hp: ((shapes[0][-1],), ())),
    # the forward returns the loss and its gradient with respect to the
    # logits; the loss is a NumPy scalar of the logits' dtype
    "softmax_cross_entropy": Op(
        F.softmax_cross_entropy, R.softmax_cross_entropy,
        terms=lambda shapes, out, hp: ((shapes[0][-1],) * 2, ())),
}


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def _arrays_in(values):
    return [v for v in values if isinstance(v, np.ndarray)]


def _snapshot(arrays):
    return [(a, a.dtype, a.shape, a.tobytes()) for a in arrays]


def _assert_unwritten(snapshot, what):
    for a, dt, shape, data in snapshot:
        assert a.dtype == dt and a.shape == shape, what
        assert a.tobytes() == data, f"{what} wrote to an input"


def _bits(results):
    return [None if r is None else (np.asarray(r).dtype, np.shape(r),
                                    np.asarray(r).tobytes())
            for r in results]


def _compare(actual, expected, dtype, n_terms, exact, what):
    if expected is None:
        assert actual is None, what
        return
    expected = np.asarray(expected)
    if expected.dtype.kind in "iu":                  # indices
        assert isinstance(actual, np.ndarray), what
        assert actual.dtype == np.int64, (what, actual.dtype)
        np.testing.assert_array_equal(actual, expected, err_msg=what)
        return
    if expected.ndim == 0:
        # a scalar result: a NumPy scalar (or 0-d array) of the dtype
        assert np.asarray(actual).dtype == dtype, (what, type(actual))
        if not isinstance(actual, np.ndarray):
            assert type(actual) is dtype.type, (what, type(actual))
        actual, expected = np.asarray(actual)[None], expected[None]
    if exact:
        assert isinstance(actual, np.ndarray), (what, type(actual))
        assert actual.dtype == dtype, (what, actual.dtype, dtype)
        assert actual.shape == expected.shape, (what, actual.shape,
                                                expected.shape)
        np.testing.assert_array_equal(actual.astype(np.float64), expected,
                                      err_msg=what)
    else:
        try:
            assert_close(actual, expected, dtype, n_terms)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None


def _assert_fresh(outputs, inputs, what):
    """Outputs are new, writeable, C-contiguous arrays that share no memory
    with an input."""
    for o in outputs:
        if not isinstance(o, np.ndarray) or o.ndim == 0:
            continue
        assert o.flags.c_contiguous and o.flags.writeable, what
        for a in inputs:
            assert not np.may_share_memory(o, a), f"{what}: output is a view"


def _draw_inputs(values, seed, shapes, inputs):
    """(generator, float64 inputs): ``inputs`` as given, or drawn of
    ``shapes`` by ``values`` (a name of :data:`VALUES` or a function)."""
    rng = np.random.default_rng(seed)
    if inputs is not None:
        return rng, [np.array(a, dtype=np.float64) for a in inputs]
    draw = VALUES[values] if isinstance(values, str) else values
    return rng, [draw(rng, tuple(s)) for s in shapes]


def check_op(op, shapes=(), *, inputs=None, values="normal", seed=0,
             dtypes=DTYPES, threads=THREADS, layouts=DEFAULT_LAYOUTS,
             backward=True, grad_out=None, **hyper):
    """Hold ``cnnkit.functional``'s op to ``cnnkit.reference``.

    Parameters
    ----------
    op : str or Op
        A name in ``OPS`` ("conv2d", "relu", "max_pool2d", "avg_pool2d",
        "global_avg_pool2d", "dense", "softmax", "softmax_cross_entropy"),
        or an ``Op`` pairing a functional forward/backward with its
        reference twins.
    shapes : sequence of tuple
        The shapes of the array inputs, in call order (e.g. x, weight[,
        bias]); their values come from ``values``.
    inputs : sequence of ndarray, optional
        The array inputs themselves, instead of ``shapes``.
    values : "normal", "int", "distinct" or callable(rng, shape)
        How the inputs are drawn, in float64.
    seed : int
        Seed of the draws.
    dtypes : sequence of dtype
        Each run casts the inputs to one of them; results must have that
        dtype and equal the float64 reference on the cast values within
        ``RTOL[dtype]`` (scaled by the op's sum lengths), or exactly for
        the ops that are exact.
    threads : sequence of int
        Thread counts (``cnnkit.set_num_threads``, restored afterwards);
        results must be bit-identical for all of them.
    layouts : sequence of str or of tuples of str
        Memory layouts (see ``LAYOUTS``) every array input and the output
        gradient are passed in -- or, for a tuple, the layout of each of
        them in turn (see ``each_argument``); results must be
        bit-identical for all of them, except where "broadcast" changes the
        values (compared with the reference on their own values).
    backward : bool
        Also run the op's backward on a standard normal output gradient
        (or ``grad_out``, float64, of the forward output's shape).
    **hyper
        Keyword arguments of both forward functions (and backward ones):
        stride, padding, labels, ...; arrays among them are checked to be
        left unwritten too.

    Every call must leave its inputs' bytes unchanged and return new,
    writeable, C-contiguous arrays.
    """
    spec = OPS[op] if isinstance(op, str) else op
    rng, base = _draw_inputs(values, seed, shapes, inputs)
    shapes = [a.shape for a in base]
    hyper_arrays = _arrays_in(hyper.values())
    first = _as_tuple(spec.reference(*base, **hyper))
    run_backward = backward and spec.backward is not None
    if run_backward:
        g64 = (normal_values(rng, first[0].shape) if grad_out is None
               else np.asarray(grad_out, dtype=np.float64))
    fwd_terms, bwd_terms = spec.terms(shapes, first[0].shape, hyper)
    name = getattr(spec.forward, "__name__", str(op))

    for dt in dtypes:
        dt = np.dtype(dt)
        cast = [a.astype(dt) for a in base]
        g_cast = g64.astype(dt) if run_backward else None
        refs = {}
        same_values = None          # results of the layouts keeping values
        for layout in layouts:
            per = (tuple(layout) if isinstance(layout, (tuple, list))
                   else (layout,) * (len(cast) + 1))
            args = [to_layout(a, per[i]) for i, a in enumerate(cast)]
            g = to_layout(g_cast, per[len(cast)]) if run_backward else None
            what = f"{name} {dt.name} {'/'.join(dict.fromkeys(per))}"
            key = b"".join(np.ascontiguousarray(a).tobytes()
                           for a in args + ([g] if run_backward else []))
            if key not in refs:
                vals = f64(*args)
                ref_out = _as_tuple(spec.reference(*vals, **hyper))
                ref_grads = ()
                if run_backward:
                    ref_grads = _as_tuple(spec.reference_backward(
                        np.asarray(g, dtype=np.float64), vals, ref_out,
                        **hyper))
                refs[key] = ref_out, ref_grads
            ref_out, ref_grads = refs[key]
            runs = []
            for n in threads:
                with num_threads(n):
                    watched = args + hyper_arrays + ([g] if run_backward
                                                     else [])
                    snap = _snapshot(_arrays_in(watched))
                    out = _as_tuple(spec.forward(*args, **hyper))
                    _assert_unwritten(snap, f"{what} forward")
                    grads = ()
                    if run_backward:
                        grads = _as_tuple(spec.backward(g, args, out,
                                                        **hyper))
                        _assert_unwritten(snap, f"{what} backward")
                _assert_fresh(out + grads, watched, what)
                for earlier in runs:
                    for a in _arrays_in(out + grads):
                        for b in _arrays_in(earlier):
                            if a.ndim and b.ndim:
                                assert not np.may_share_memory(a, b), (
                                    f"{what}: a second call returned the "
                                    f"first call's buffer")
                runs.append(out + grads)
            for n, run in zip(threads[1:], runs[1:]):
                assert _bits(run) == _bits(runs[0]), (
                    f"{what}: {n} threads differ from {threads[0]}")
            out, grads = runs[0][:len(out)], runs[0][len(out):]
            assert len(out) == len(ref_out), what
            for i, (a, e) in enumerate(zip(out, ref_out)):
                _compare(a, e, dt, fwd_terms[min(i, len(fwd_terms) - 1)],
                         spec.exact, f"{what} output {i}")
            assert len(grads) == len(ref_grads), what
            for i, (a, e) in enumerate(zip(grads, ref_grads)):
                _compare(a, e, dt, bwd_terms[min(i, len(bwd_terms) - 1)],
                         spec.exact_backward, f"{what} gradient {i}")
            if "broadcast" not in per:
                if same_values is None:
                    same_values = layout, _bits(runs[0])
                else:
                    assert _bits(runs[0]) == same_values[1], (
                        f"{what}: results differ from layout "
                        f"{same_values[0]}")


def check_gradients(op, shapes=(), *, inputs=None, values="normal", seed=0,
                    reference=False, eps=1e-6, atol=1e-7, **hyper):
    """The op's backward (``cnnkit.functional``'s, or with ``reference``
    ``cnnkit.reference``'s) against central finite differences of the same
    implementation's forward, in float64: d sum(forward * g) / d input for
    every array input (drawn from ``values``), g standard normal."""
    spec = OPS[op] if isinstance(op, str) else op
    forward = spec.reference if reference else spec.forward
    backward = spec.reference_backward if reference else spec.backward
    rng, base = _draw_inputs(values, seed, shapes, inputs)
    out = _as_tuple(forward(*base, **hyper))
    g = rng.standard_normal(out[0].shape)
    grads = _as_tuple(backward(g, base, out, **hyper))
    assert len(grads) >= len(base)
    for i in range(len(base)):
        def loss(a, i=i):
            args = list(base)
            args[i] = a
            return np.sum(_as_tuple(forward(*args, **hyper))[0] * g)
        num = numerical_gradient(loss, base[i], eps)
        assert grads[i].shape == base[i].shape
        assert_grad_close(num, grads[i], atol)


# ==========================================================================
# NaN and infinities
# ==========================================================================
def special_values(rng, shape, dt, frac=0.1):
    """Standard normal values of dtype ``dt`` with about ``frac`` of them
    NaN, +inf or -inf."""
    a = rng.standard_normal(shape)
    mask = rng.random(shape) < frac
    a[mask] = rng.choice([np.nan, np.inf, -np.inf], int(mask.sum()))
    return a.astype(dt)


def assert_same_specials(ours, theirs, rtol, what):
    """NaN and +-inf in the same places (infinities of the same sign), the
    finite values within ``rtol``."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs,
                                                            np.float64)
    assert ours.shape == theirs.shape, what
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs),
                                  err_msg=f"{what}: NaN positions")
    inf = np.isinf(theirs)
    np.testing.assert_array_equal(np.isinf(ours), inf,
                                  err_msg=f"{what}: inf positions")
    np.testing.assert_array_equal(ours[inf], theirs[inf],
                                  err_msg=f"{what}: inf signs")
    fin = np.isfinite(theirs)
    np.testing.assert_allclose(ours[fin], theirs[fin], rtol=rtol,
                               atol=rtol, err_msg=what)


# ==========================================================================
# documented errors
# ==========================================================================
#: dtypes every entry point refuses with a TypeError naming the dtype:
#: (dtype, the name the message gives)
BAD_DTYPES = [
    pytest.param(np.complex128, "complex128", id="complex"),
    pytest.param(np.complex64, "complex64", id="complex64"),
    pytest.param(object, "object", id="object"),
    pytest.param("U1", "<U1", id="str"),
    pytest.param("S1", "S1", id="bytes"),
    pytest.param(np.longdouble, str(np.dtype(np.longdouble)),
                 id="longdouble", marks=pytest.mark.skipif(
                     np.dtype(np.longdouble).itemsize <= 8,
                     reason="long double is double here")),
    pytest.param("datetime64[s]", "datetime64", id="datetime"),
]


def bad_dtype_array(a, dt):
    """An array of ``a``'s shape in the refused dtype ``dt``."""
    if np.dtype(dt).kind == "M":
        return np.zeros(a.shape, dtype=dt)
    if np.dtype(dt).kind in "US":
        return np.full(a.shape, "a", dtype=dt)
    return np.zeros(a.shape).astype(dt)


def bad_dtype_test(array_args):
    """The test that every array argument of ``array_args`` -- entries
    ``(function, positional arguments, index of the argument made bad, its
    name)`` -- in each refused dtype of :data:`BAD_DTYPES` is a TypeError
    naming the argument and the dtype.  A family's test file assigns it to
    a ``test_...`` name."""
    @pytest.mark.parametrize("dt,dt_name", BAD_DTYPES)
    @pytest.mark.parametrize("fn,args,pos,name", array_args,
                             ids=[f"{f.__name__}-{n}"
                                  for f, _, _, n in array_args])
    def test(fn, args, pos, name, dt, dt_name):
        args = list(args)
        args[pos] = bad_dtype_array(args[pos], dt)
        with pytest.raises(TypeError, match=re.escape(dt_name)) as info:
            fn(*args)
        assert re.search(rf"\b{name}\b", str(info.value)), str(info.value)
    return test


def check_kernel_out(fn, name, shape, call, bad):
    """A compiled kernel's ``out=`` array (``name``, float32 of ``shape``)
    of the unsuitable kind ``bad`` is refused before any work; a suitable
    one is written and returned."""
    if bad == "shape":
        out = np.zeros(shape[:-1] + (shape[-1] + 1,), np.float32)
    elif bad == "dtype":
        out = np.zeros(shape, np.float64)
    elif bad == "strided":
        out = np.zeros(shape[:-1] + (2 * shape[-1],), np.float32)[..., ::2]
    elif bad == "readonly":
        out = np.zeros(shape, np.float32)
        out.flags.writeable = False
    else:
        out = np.zeros(shape, np.float32).tolist()
    with pytest.raises(ValueError, match=rf"^{fn}: {name} must be a "
                                         rf"writeable C-contiguous float32"):
        call(out)
    good = np.full(shape, np.nan, np.float32)
    res = call(good)
    assert good is res or any(good is r for r in res)
    assert not np.isnan(good).any()


OUT_ARRAY_FAULTS = ["shape", "dtype", "strided", "readonly", "list"]


# ==========================================================================
# child interpreters
# ==========================================================================
SANITIZER = bool(os.environ.get("CNNKIT_SANITIZER"))


def run_python(code, timeout=120, memory_limit=None):
    """Run ``code`` in a fresh interpreter (optionally with an address-space
    limit in bytes); fail on a crash or a hang; return the finished process.
    Under AddressSanitizer (CNNKIT_SANITIZER set by tools/sanitize.sh) the
    limit caps single allocations (max_allocation_size_mb) instead, since
    ASan cannot run with an address-space limit."""
    prelude = "import faulthandler; faulthandler.enable()\n"
    env = dict(os.environ)
    if memory_limit and SANITIZER:
        env["ASAN_OPTIONS"] = ":".join(filter(None, [
            env.get("ASAN_OPTIONS", ""), "allocator_may_return_null=1",
            f"max_allocation_size_mb={int(memory_limit) >> 20}"]))
    elif memory_limit:
        prelude += ("import resource; resource.setrlimit(resource.RLIMIT_AS, "
                    f"({int(memory_limit)}, {int(memory_limit)}))\n")
    try:
        proc = subprocess.run([sys.executable, "-c",
                               prelude + textwrap.dedent(code)],
                              capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        out, err = (v.decode(errors="replace") if isinstance(v, bytes)
                    else v or "" for v in (exc.stdout, exc.stderr))
        pytest.fail(f"child did not finish in {timeout} s:\n{out}\n{err}")
    out = proc.stdout + proc.stderr
    assert "Fatal Python error" not in out, out[-6000:]
    assert proc.returncode >= 0, (
        f"child killed by signal {-proc.returncode}:\n{out[-6000:]}")
    return proc


def child_json(proc):
    """The last line of the child's stdout that starts with RESULT, as
    JSON."""
    lines = [s for s in proc.stdout.splitlines() if s.startswith("RESULT ")]
    assert lines and proc.returncode == 0, (
        f"child failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
        f"{proc.stderr[-6000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# ==========================================================================
# the SIMD paths of the GEMM engine
# ==========================================================================
SIMD_PATHS = cnnkit._kernels.build_info()["simd_paths_supported"]

#: Runs before a family's checker in a child with CNNKIT_SIMD set: close()
#: compares with the reference and records failures; the checker appends to
#: ``variant`` what depends on the thread count or the batch, and prints
#: the result with report().
SIMD_PRELUDE = r'''
import json
import numpy as np
import cnnkit
from cnnkit import functional as F
from cnnkit import reference as R

RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
failures = []
variant = []
checked = 0
extra = {}


def close(name, actual, expected, dtype, n_terms):
    global checked
    checked += 1
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.dtype != dtype or actual.shape != expected.shape:
        failures.append(f"{name}: dtype/shape {actual.dtype} {actual.shape}")
        return
    rtol = RTOL[np.dtype(dtype)]
    scale = float(np.max(np.abs(expected), initial=0.0))
    atol = rtol * scale * np.sqrt(n_terms)
    err = np.abs(actual.astype(np.float64) - expected)
    bad = err > atol + rtol * np.abs(expected)
    if bad.any() or not np.isfinite(actual).all():
        failures.append(f"{name}: max error {err.max():.3g} > {atol:.3g}")


def report():
    print(json.dumps({"info": cnnkit._kernels.build_info(),
                      "checked": checked, "failures": failures,
                      "variant": variant, **extra}))


rng = np.random.default_rng(7)
'''

_simd_results = {}


def run_simd(path, checker, timeout=300):
    """The JSON report of ``SIMD_PRELUDE + checker`` run in a child with
    ``CNNKIT_SIMD=path`` (None: unset); each (path, checker) runs once."""
    key = (path, checker)
    if key not in _simd_results:
        env = dict(os.environ)
        env.pop("CNNKIT_SIMD", None)
        if path is not None:
            env["CNNKIT_SIMD"] = path
        code = SIMD_PRELUDE + checker + "\nreport()\n"
        out = subprocess.run([sys.executable, "-c", code], env=env,
                             capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, out.stderr[-3000:]
        _simd_results[key] = json.loads(out.stdout.strip().splitlines()[-1])
    return _simd_results[key]


# ==========================================================================
# the source tree beside the tests
# ==========================================================================
def source_root():
    """The folder holding pyproject.toml above the tests, or None (the
    tests were copied next to an installed wheel)."""
    here = pathlib.Path(__file__).resolve().parent
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    return None


def readme_python_block(heading):
    """The first ```python block of the README's section ``heading``, or a
    skip when the README is not beside the tests."""
    root = source_root()
    if root is None or not (root / "README.md").exists():
        pytest.skip("the README is not beside the tests (a wheel's copy)")
    text = (root / "README.md").read_text(encoding="utf-8")
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)
