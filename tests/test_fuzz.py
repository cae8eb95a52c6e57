"""Property-based fuzzing of every ``cnnkit.functional`` entry point and of
every layer through a ``Sequential`` model.

The property, for every generated call: it either returns what
``cnnkit.reference`` computes (compared in float64 after casting the inputs
to the dtype cnnkit computes in; result shapes and dtypes exact) or raises
``ValueError`` / ``TypeError`` with a message -- never a crash, a hang, a
wrong shape, a wrong dtype, another exception type, or a write to an input.

Generated calls cover random shapes (zero-size batches and channels, 1x1
inputs, kernels as large as the input, the 2-D / 3-D convenience forms),
hyperparameters as ints, pairs, ``"same"`` / ``"valid"`` and extreme values
(0, negative, 10**9, 2**62, 2**63, 10**30, floats, bools, strings, None),
dtypes (float16/32/64, ints, uints, bool; complex, object, str, long double
and datetime, which must be refused with TypeError) and memory orders (C,
Fortran, strided, negative strides, broadcast, read-only, unaligned,
byte-swapped, nested lists), with values that are normal, small integers
(ties), large, or (outside the BLAS-backed conv2d/dense oracles) sprinkled
with NaN, +-inf and -0.0.  A case is built valid (about 60%: it must
succeed), extreme (one hyperparameter far out: a result, or ValueError /
MemoryError for an astronomically large result, without touching memory)
or invalid (one bad hyperparameter or one mutation: it must raise the
documented exception type).

Every property runs in a child Python process with a 3 GiB address-space
limit (under tools/sanitize.sh, a 3 GiB cap on single allocations), so that
a segfault, an abort or a runaway allocation fails one test instead of
killing the test run or the machine, and a hang is caught by a timeout.
Runs are derandomised (the same examples on every run) and use no example
database.  ``CNNKIT_FUZZ_EXAMPLES`` sets the number of examples per property
(default 150), ``CNNKIT_FUZZ_SEED`` selects another reproducible campaign,
and ``CNNKIT_FUZZ_INPROCESS=1`` runs the properties in the pytest process
(for debugging with pdb).
"""
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

import numpy as np
import pytest
import hypothesis
from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st

import cnnkit
from cnnkit import functional as F
from cnnkit import layers as L
from cnnkit import reference as R

EXAMPLES = int(os.environ.get("CNNKIT_FUZZ_EXAMPLES", "150"))
CHILD_MEMORY_LIMIT = 3 * 2**30          # bytes of address space per child
CHILD_TIMEOUT = float(os.environ.get("CNNKIT_FUZZ_TIMEOUT", "300"))

# A valid result may have at most this many elements (the NumPy reference is
# slow); a case whose result would have at least HUGE elements must be
# refused with ValueError or MemoryError.  Cases in between are not drawn:
# they would really allocate gigabytes.
SMALL = 4096
HUGE = 2**40
MAX_SIZE = 2**62                         # cnnkit's documented index limit

# CNNKIT_FUZZ_SEED=<int> runs a different (still reproducible) campaign,
# e.g. for a nightly job with more examples.
SEED = os.environ.get("CNNKIT_FUZZ_SEED")
_SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                     derandomize=SEED is None, database=None,
                     print_blob=False,
                     suppress_health_check=list(HealthCheck))


def FUZZ(test):
    test = _SETTINGS(test)
    return test if SEED is None else hypothesis.seed(int(SEED))(test)


def _property(fn, cases):
    """A property: ``fn`` on every case that the strategy ``cases`` draws
    gives the case's expected outcome (see ``check``)."""
    def prop(case):
        check(fn, case)
    prop.__name__ = prop.__qualname__ = f"prop_{fn.__name__}"
    return FUZZ(given(cases)(prop))

VALID_DTYPES = ["float32", "float64", "float16", "int8", "int32", "int64",
                "uint8", "bool"]
BAD_DTYPES = ["complex64", "complex128", "object", "str", "datetime64"]
if np.dtype(np.longdouble).itemsize > 8:
    BAD_DTYPES.append("longdouble")
LAYOUTS = ["C", "C", "F", "strided", "negative", "broadcast", "readonly",
           "unaligned", "swapped", "list"]


# --------------------------------------------------------------------------
# building inputs
# --------------------------------------------------------------------------
def _values(rng, shape, dtype, kind):
    """Random values of ``dtype``: normal, small integers (ties) or with
    NaN, +-inf and -0.0 sprinkled in (float dtypes only)."""
    dt = np.dtype(dtype)
    size = math.prod(shape)
    return _flat_values(rng, size, dt, kind).reshape(shape)


def _flat_values(rng, size, dt, kind):
    shape = (size,)
    if dt.kind == "b":
        return np.asarray(rng.integers(0, 2, shape)).astype(bool)
    if dt.kind == "u":
        return np.asarray(rng.integers(0, 7, shape)).astype(dt)
    if dt.kind == "i":
        return np.asarray(rng.integers(-3, 4, shape)).astype(dt)
    if kind == "int":
        v = np.asarray(rng.integers(-3, 4, shape), dtype=np.float64)
    else:
        v = np.asarray(rng.standard_normal(shape)) * (
            1e3 if kind == "large" else 1.0)
        if kind == "special" and size:
            mask = rng.random(shape) < 0.15
            v[mask] = rng.choice([np.nan, np.inf, -np.inf, -0.0],
                                 int(mask.sum()))
    return v.astype(dt)


def _bad_values(shape, name):
    if name == "object":
        return np.full(shape, 1.0, dtype=object)
    if name == "str":
        return np.full(shape, "1.5")
    if name == "datetime64":
        return np.zeros(shape, "datetime64[s]")
    return np.ones(shape, np.dtype(name))


def _in_layout(a, layout):
    """``a`` (C-contiguous) passed in memory layout ``layout``; the values
    may change only for "broadcast" (repeats the first entry of axis 0)."""
    if a.ndim == 0 or a.dtype.kind in "OUM":
        if layout == "readonly":
            a = a.copy()
            a.flags.writeable = False
        return a
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.zeros(tuple(2 * d + 1 for d in a.shape), dtype=a.dtype)
        idx = tuple(slice(1, None, 2) for _ in a.shape)
        big[idx] = a
        return big[idx]
    if layout == "negative":
        flip = (slice(None, None, -1),) * a.ndim
        return np.ascontiguousarray(a[flip])[flip]
    if layout == "broadcast":
        return np.broadcast_to(a[:1], a.shape) if a.shape[0] else a
    if layout == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    if layout == "unaligned":
        buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
        out = buf[1:].view(a.dtype).reshape(a.shape)
        out[...] = a
        return out
    if layout == "swapped":
        return a.astype(a.dtype.newbyteorder()) if a.dtype.itemsize > 1 \
            else a
    if layout == "list":
        return a.tolist() if a.size else a
    return a


# Values for the ops whose oracle goes through BLAS (conv2d, dense): a BLAS
# may skip a product with an exact zero, so 0 * NaN there is not always NaN
# in the reference; NaN/Inf propagation of those ops is compared with
# PyTorch in test_reliability.py instead.
FINITE = ("normal", "int", "large")


@st.composite
def arrays(draw, shape, dtypes=VALID_DTYPES, kinds=("normal", "int",
                                                    "special", "large")):
    """A numeric array of ``shape`` in a random valid dtype and layout."""
    dtype = draw(st.sampled_from(dtypes))
    kind = draw(st.sampled_from(kinds))
    seed = draw(st.integers(0, 2**32 - 1))
    layout = draw(st.sampled_from(LAYOUTS))
    a = _values(np.random.default_rng(seed), shape, dtype, kind)
    return _in_layout(a, layout)


def bad_array(draw, shape):
    return _bad_values(shape, draw(st.sampled_from(BAD_DTYPES)))


def _desc(v):
    if isinstance(v, np.ndarray):
        flags = "C" if v.flags.c_contiguous else (
            "F" if v.flags.f_contiguous else "strided")
        if not v.flags.writeable:
            flags += ",ro"
        if not v.flags.aligned:
            flags += ",unaligned"
        if not v.dtype.isnative:
            flags += ",swapped"
        return f"array{v.shape}:{v.dtype}[{flags}]"
    if isinstance(v, list):
        try:
            return f"list{np.shape(v)}"
        except ValueError:
            return f"ragged list {v!r}"
    return repr(v)


@dataclass
class Case:
    """One generated call.

    expect: "ok" (must return the oracle's result), "error" (must raise one
    of ``errors``), "huge" (must raise ValueError or MemoryError) or
    "either" (may raise ValueError / TypeError or return the oracle's
    result)."""
    args: tuple
    kwargs: dict = field(default_factory=dict)
    expect: str = "ok"
    errors: tuple = (ValueError, TypeError)
    why: str = ""
    oracle: object = None

    def __repr__(self):
        args = ", ".join(_desc(a) for a in self.args)
        kw = ", ".join(f"{k}={_desc(v)}" for k, v in self.kwargs.items())
        return (f"Case({args}; {kw}; expect={self.expect}"
                f"{' (' + self.why + ')' if self.why else ''})")


# --------------------------------------------------------------------------
# the property
# --------------------------------------------------------------------------
def _snapshot(args, kwargs):
    snap = []
    for v in list(args) + list(kwargs.values()):
        if isinstance(v, np.ndarray) and v.dtype.kind in "biuf":
            snap.append((v, v.copy()))
    return snap


def check(fn, case):
    """Run ``fn`` on ``case`` and assert the property."""
    note(repr(case))
    event(f"expect {case.expect}")
    snap = _snapshot(case.args, case.kwargs)
    try:
        result = fn(*case.args, **case.kwargs)
    except (ValueError, TypeError, MemoryError) as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
        if case.expect == "ok":
            raise AssertionError(
                f"a valid call raised {type(exc).__name__}: {exc}") from exc
        if case.expect == "huge":
            assert isinstance(exc, (ValueError, MemoryError)), exc
        elif isinstance(exc, MemoryError):
            raise AssertionError(f"MemoryError for a small case: {exc}") \
                from exc
        elif case.expect == "error":
            assert isinstance(exc, case.errors), (
                f"expected {[e.__name__ for e in case.errors]} "
                f"({case.why}), got {type(exc).__name__}: {exc}")
    else:
        assert case.expect in ("ok", "either"), (
            f"an invalid call ({case.why}) returned instead of raising")
        case.oracle(result)
    for arr, copy in snap:
        assert np.array_equal(arr, copy, equal_nan=arr.dtype.kind == "f"), \
            "an input array was modified"


def design_dtype(*arrays):
    """The dtype cnnkit computes in (DESIGN.md): ints and bools count as
    float64, floats promote as in NumPy, float16 computes in float32."""
    dts = [np.dtype(np.float64) if a.dtype.kind in "biu"
           else a.dtype.newbyteorder("=") for a in arrays if a is not None]
    dt = np.result_type(*dts)
    return np.dtype(np.float32) if dt == np.float16 else np.dtype(dt)


def f64(a, dt):
    """Values of ``a`` as cnnkit sees them (cast to ``dt``), in float64."""
    return None if a is None else np.asarray(a).astype(dt).astype(np.float64)


def assert_result(actual, expected, dtype, bound=None, n_terms=1,
                  exact=False):
    """``actual`` has ``dtype`` and the shape of the float64 ``expected``;
    exact, or NaN/inf in the same places and finite values within
    (n_terms + 4) * eps(dtype) * bound (bound: the same computation on
    absolute values, i.e. the sum of |terms| behind each element)."""
    assert isinstance(actual, np.ndarray), type(actual)
    assert actual.dtype == dtype, (actual.dtype, dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    a = actual.astype(np.float64)
    if exact:
        np.testing.assert_array_equal(a, expected)
        return
    np.testing.assert_array_equal(np.isnan(a), np.isnan(expected),
                                  err_msg="NaN in different places")
    np.testing.assert_array_equal(np.where(np.isinf(a), a, 0),
                                  np.where(np.isinf(expected), expected, 0),
                                  err_msg="inf in different places")
    fin = np.isfinite(expected)
    if bound is None:
        bound = np.abs(expected)
    eps = np.finfo(dtype).eps
    tol = (np.asarray(n_terms) + 4) * eps * np.broadcast_to(
        bound, expected.shape)[fin] + np.finfo(dtype).tiny
    err = np.abs(a[fin] - expected[fin])
    assert np.all(err <= tol), (
        f"max error {err.max()} above tolerance (worst ratio "
        f"{np.max(err / tol)})")


# --------------------------------------------------------------------------
# hyperparameters: (value, normalised pair or None, category)
#   ok: valid; big: valid, far from the common range; too_big: above
#   2**62 (cnnkit may refuse it); bad_value: ValueError; bad_type: TypeError
# --------------------------------------------------------------------------
def _int_forms(v):
    return st.sampled_from([v, (v, v), [v, v], np.int64(v),
                            np.array([v, v])])


@st.composite
def positive_hp(draw, cats=("ok",), small=(1, 2, 3)):
    cat = draw(st.sampled_from(cats))
    if cat == "ok":
        if draw(st.booleans()):
            v = draw(st.sampled_from(small))
            return draw(_int_forms(v)), (v, v), cat
        a, b = draw(st.sampled_from(small)), draw(st.sampled_from(small))
        return draw(st.sampled_from([(a, b), [a, b]])), (a, b), cat
    if cat == "big":
        v = draw(st.sampled_from([10**9, 2**62, 2**31 + 1]))
        form = draw(st.integers(0, 2))
        pair = [(v, v), (1, v), (v, 1)][form]
        return (v if form == 0 else pair), pair, cat
    if cat == "too_big":
        v = draw(st.sampled_from([2**62 + 1, 2**63, 2**64 + 1, 10**30]))
        return v, (v, v), cat
    if cat == "bad_value":
        return draw(st.sampled_from([0, -1, -2**63, (0, 1), (1, -1),
                                     (1, 2, 3), (), [1]])), None, cat
    return draw(st.sampled_from([1.5, 2.0, True, False, "2", None, (1.0, 2),
                                 [True, 1], np.float64(1), 1j])), None, cat


@st.composite
def conv_padding_hp(draw, cats=("ok", "ok", "mode")):
    """(value, (top, bottom, left, right) or a mode string, category)."""
    cat = draw(st.sampled_from(cats))
    if cat == "ok":
        a, b = draw(st.integers(0, 3)), draw(st.integers(0, 3))
        v = draw(st.sampled_from([a, (a, b), [a, b], np.int64(a)]))
        pair = (a, a) if np.ndim(v) == 0 else (a, b)
        return v, (pair[0], pair[0], pair[1], pair[1]), cat
    if cat == "mode":
        v = draw(st.sampled_from(["same", "valid", "SAME", "Valid"]))
        return v, v.lower(), "ok"
    if cat == "big":
        v = draw(st.sampled_from([2**40, (0, 2**40), (2**40, 1)]))
        pair = (v, v) if np.ndim(v) == 0 else v
        return v, (pair[0], pair[0], pair[1], pair[1]), cat
    if cat == "too_big":
        v = draw(st.sampled_from([2**62, 2**63, 10**30, (0, 2**62 + 1)]))
        pair = (v, v) if np.ndim(v) == 0 else v
        return v, (pair[0], pair[0], pair[1], pair[1]), cat
    if cat == "bad_value":
        return draw(st.sampled_from([-1, (0, -1), "full", "", (1, 2, 3),
                                     -2**70])), None, cat
    return draw(st.sampled_from([1.5, None, True, (1.5, 0), b"same",
                                 {"a": 1}])), None, cat


@st.composite
def mode_and_cats(draw, names):
    """A case's mode -- "valid" (60%), "extreme" (15%: one hyperparameter
    far out of the common range) or "invalid" (25%: one bad hyperparameter,
    or a mutation the caller makes) -- and the category each hyperparameter
    in ``names`` is drawn from."""
    mode = draw(st.sampled_from(["valid"] * 12 + ["extreme"] * 3 +
                                ["invalid"] * 5))
    cats = {name: ("ok",) for name in names}
    if mode == "extreme":
        cats[draw(st.sampled_from(names))] = ("big", "big", "too_big")
    elif mode == "invalid" and draw(st.booleans()):
        cats[draw(st.sampled_from(names))] = ("bad_value", "bad_type")
        mode = "bad_hp"
    return mode, cats


def _hp_expectation(cats):
    """(expect, errors, why) for hyperparameter categories: a wrong type is
    a TypeError, a bad value a ValueError; both at once may give either."""
    bad = {c for c in cats if c in ("bad_type", "bad_value")}
    if not bad:
        return "ok", (ValueError, TypeError), ""
    errors = tuple(sorted({TypeError if c == "bad_type" else ValueError
                           for c in bad}, key=lambda e: e.__name__))
    return "error", errors, "bad hyperparameter: " + "+".join(sorted(bad))


# --------------------------------------------------------------------------
# conv2d and conv2d_backward
# --------------------------------------------------------------------------
def _conv_direct(x, w, stride, pads, dil, out_hw):
    """conv2d that never materialises the padding (for padding of 10**9)."""
    n, c, h, wd = x.shape
    k, _, r_, s_ = w.shape
    y = np.zeros((n, k) + out_hw)
    for i in range(out_hw[0]):
        for j in range(out_hw[1]):
            for r in range(r_):
                ih = i * stride[0] - pads[0] + r * dil[0]
                if not 0 <= ih < h:
                    continue
                for s in range(s_):
                    iw = j * stride[1] - pads[2] + s * dil[1]
                    if 0 <= iw < wd:
                        y[:, :, i, j] += x[:, :, ih, iw] @ w[:, :, r, s].T
    return y


def _conv_direct_backward(g, x, w, stride, pads, dil):
    n, c, h, wd = x.shape
    k, _, r_, s_ = w.shape
    gx, gw = np.zeros(x.shape), np.zeros(w.shape)
    for i in range(g.shape[2]):
        for j in range(g.shape[3]):
            for r in range(r_):
                ih = i * stride[0] - pads[0] + r * dil[0]
                if not 0 <= ih < h:
                    continue
                for s in range(s_):
                    iw = j * stride[1] - pads[2] + s * dil[1]
                    if 0 <= iw < wd:
                        gx[:, :, ih, iw] += g[:, :, i, j] @ w[:, :, r, s]
                        gw[:, :, r, s] += g[:, :, i, j].T @ x[:, :, ih, iw]
    return gx, gw, g.sum(axis=(0, 2, 3))


def _conv_geometry(h, w, r, s, stride, pad, dil):
    """(pads4, extent, padded, out_hw) or raise ValueError, in Python ints."""
    if isinstance(pad, str):
        if pad == "valid":
            pads = (0, 0, 0, 0)
        else:
            if tuple(stride) != (1, 1):
                raise ValueError("same needs stride 1")
            th, tw = dil[0] * (r - 1), dil[1] * (s - 1)
            pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    else:
        pads = pad
    eh, ew = dil[0] * (r - 1) + 1, dil[1] * (s - 1) + 1
    ph, pw = h + pads[0] + pads[1], w + pads[2] + pads[3]
    if eh > ph or ew > pw:
        raise ValueError("kernel does not fit")
    out = ((ph - eh) // stride[0] + 1, (pw - ew) // stride[1] + 1)
    return pads, max(eh, ew), max(ph, pw), out


@st.composite
def conv_cases(draw, backward=False):
    form = draw(st.sampled_from(["4d", "4d", "4d", "3d", "2d"]))
    if form == "2d":
        n = c = k = 1
    else:
        n, c, k = (draw(st.integers(0, 3)) for _ in range(3))
    r, s = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    mode, hp_cats = draw(mode_and_cats(["stride", "dilation", "padding"]))
    stride, stride_p, stride_cat = draw(positive_hp(hp_cats["stride"]))
    dil, dil_p, dil_cat = draw(positive_hp(hp_cats["dilation"]))
    pcats = hp_cats["padding"]
    pad, pad_p, pad_cat = draw(conv_padding_hp(
        ("ok", "ok", "mode") if pcats == ("ok",) else pcats))
    if pad_p in ("same",) and mode == "valid":
        stride, stride_p = 1, (1, 1)
    cats = {stride_cat, dil_cat, pad_cat}
    expect, errors, why = _hp_expectation(cats)

    # input size: fitting the kernel, except in invalid mode now and then
    h = w = 0
    if expect != "error":
        if isinstance(pad_p, str):
            pads = (0,) * 4 if pad_p == "valid" else \
                (dil_p[0] * (r - 1), 0, dil_p[1] * (s - 1), 0)
        else:
            pads = pad_p
        need_h = max(0, dil_p[0] * (r - 1) + 1 - pads[0] - pads[1])
        need_w = max(0, dil_p[1] * (s - 1) + 1 - pads[2] - pads[3])
        short = mode == "invalid" and draw(st.integers(0, 2)) == 0
        # (a kernel dilated past 64 rows gets a small input: no fit)
        h = draw(st.integers(max(0, need_h - 2), need_h - 1)) \
            if short and need_h > 0 else \
            draw(st.integers(need_h if need_h < 64 else 0,
                             need_h + 5 if need_h < 64 else 5))
        w = draw(st.integers(need_w if need_w < 64 else 0,
                             need_w + 5 if need_w < 64 else 5))
    geometry = None
    if expect != "error":
        try:
            geometry = _conv_geometry(h, w, r, s, stride_p, pad_p, dil_p)
        except ValueError as exc:
            expect, why, errors = "error", str(exc), (ValueError,)
    if geometry is not None:
        pads, extent, padded, (oh, ow) = geometry
        out = n * k * oh * ow
        lowered = c * r * s * oh * ow
        # an empty result of astronomical extent: unspecified (cnnkit may
        # still size a workspace by OH*OW), not drawn
        assume(out > 0 or max(lowered, padded) < HUGE)
        if max(out, lowered) >= HUGE:
            expect, why = "huge", f"{out} output elements"
        elif max(padded, extent, max(stride_p), max(dil_p)) > MAX_SIZE \
                or "too_big" in cats:
            expect, why = "either", "a size above 2**62"
        assume(expect == "huge" or out <= SMALL)

    xshape = {"4d": (n, c, h, w), "3d": (c, h, w), "2d": (h, w)}[form]
    wshape = (r, s) if form == "2d" else (k, c, r, s)
    x = draw(arrays(xshape, kinds=FINITE))
    wt = draw(arrays(wshape, kinds=FINITE))
    with_bias = draw(st.booleans())
    bias = None
    if not backward and with_bias:
        bias = draw(arrays(draw(st.sampled_from([(), (1,)])) if form == "2d"
                           else (k,)))
    g = None
    if backward:
        if expect in ("ok", "either"):
            gshape = {"4d": (n, k) + geometry[3], "3d": (k,) + geometry[3],
                      "2d": geometry[3]}[form]
            g = draw(arrays(gshape, kinds=FINITE))
        else:
            g = np.zeros({"4d": (n, k, 1, 1), "3d": (k, 1, 1),
                          "2d": (1, 1)}[form])
    bias_flag = draw(st.sampled_from([True, False, np.bool_(True)]))

    # in invalid mode, one mutation that makes the valid case invalid
    mutation = None
    if mode == "invalid" and expect != "error":
        mutation = draw(st.sampled_from([
            "x_dtype", "w_dtype", "x_ndim", "w_ndim", "channels", "other",
            "x_none", "ragged", "same_stride"]))
    if mutation == "channels" and form == "2d":
        mutation = None                     # no channels to mismatch
    if expect in ("ok", "either") and mutation is not None:
        expect, errors, why = "error", (ValueError,), mutation
        if mutation == "x_dtype":
            x, errors = bad_array(draw, np.shape(x)), (TypeError,)
        elif mutation == "w_dtype":
            wt, errors = bad_array(draw, np.shape(wt)), (TypeError,)
        elif mutation == "x_ndim":
            x = np.zeros(draw(st.sampled_from([(3,), (1, 1, 1, 3, 3)])))
        elif mutation == "w_ndim":
            wt = np.zeros((1, 1, 2) if form != "2d" else (1, 1, 2, 2, 2))
        elif mutation == "channels" and form != "2d":
            wt = np.zeros((k, c + 1, r, s))
        elif mutation == "x_none":
            x, errors = None, (TypeError,)
        elif mutation == "ragged":
            x, errors = [[1.0, 2.0], [3.0]], (TypeError,)
        elif mutation == "same_stride":
            pad, stride = "same", (1, 2)
        elif backward:      # "other": bias flag or grad_out shape
            if draw(st.booleans()):
                bias_flag, errors = draw(st.sampled_from(
                    [1, None, "yes", np.array(True)])), (TypeError,)
            else:
                g = np.zeros(np.shape(g)[:-1] + (np.shape(g)[-1] + 1,))
        elif form != "2d" and not draw(st.booleans()):
            bias = np.zeros(draw(st.sampled_from([(k + 1,), (k, 1)])))
        else:
            bias, errors = bad_array(draw, (k,)), (TypeError,)
    kwargs = {"stride": stride, "padding": pad, "dilation": dil}
    if backward:
        kwargs["bias"] = bias_flag
        args = (g, x, wt)
    else:
        args = (x, wt, bias)

    def to4(a, lead):
        return None if a is None else a.reshape((1,) * lead + a.shape)

    def oracle(result):
        lead = {"4d": 0, "3d": 1, "2d": 2}[form]
        xa, wa = np.asarray(x), np.asarray(wt)
        pads, _, padded, out_hw = geometry
        if backward:
            ga = np.asarray(g)
            dt = design_dtype(xa, wa, ga)
            g4, x4, w4 = to4(f64(ga, dt), lead), to4(f64(xa, dt), lead), \
                w_form(f64(wa, dt))
            if padded > 64:
                exp = _conv_direct_backward(g4, x4, w4, stride_p, pads, dil_p)
                bnd = _conv_direct_backward(abs(g4), abs(x4), abs(w4),
                                            stride_p, pads, dil_p)
            else:
                args_ = (stride_p, pad_p if isinstance(pad_p, str)
                         else (pads[0], pads[2]), dil_p)
                exp = R.conv2d_backward(g4, x4, w4, *args_)
                bnd = R.conv2d_backward(abs(g4), abs(x4), abs(w4), *args_)
            gx, gw, gb = result
            assert_result(gx, exp[0].reshape(xa.shape), dt,
                          bnd[0].reshape(xa.shape), k * r * s)
            assert_result(gw, exp[1].reshape(wa.shape), dt,
                          bnd[1].reshape(wa.shape), n * out_hw[0] * out_hw[1])
            if bias_flag:
                assert_result(gb, exp[2], dt, bnd[2],
                              n * out_hw[0] * out_hw[1])
            else:
                assert gb is None
            return
        ba = None if bias is None else np.asarray(bias)
        dt = design_dtype(xa, wa, ba)
        x4, w4 = to4(f64(xa, dt), lead), w_form(f64(wa, dt))
        b4 = None if ba is None else f64(ba, dt).reshape(-1)
        if padded > 64:
            exp = _conv_direct(x4, w4, stride_p, pads, dil_p, out_hw)
            bnd = _conv_direct(abs(x4), abs(w4), stride_p, pads, dil_p,
                               out_hw)
            if b4 is not None:
                exp, bnd = exp + b4[:, None, None], bnd + abs(b4)[:, None,
                                                                  None]
        else:
            args_ = (stride_p, pad_p if isinstance(pad_p, str)
                     else (pads[0], pads[2]), dil_p)
            exp = R.conv2d(x4, w4, b4, *args_)
            bnd = R.conv2d(abs(x4), abs(w4), None if b4 is None
                           else abs(b4), *args_)
        shape = exp.shape[lead:]
        assert_result(result, exp.reshape(shape), dt, bnd.reshape(shape),
                      c * r * s + 1)

    def w_form(a):
        return a.reshape(1, 1, *a.shape) if form == "2d" else a

    return Case(args, kwargs, expect, errors, why, oracle)


prop_conv2d = _property(F.conv2d, conv_cases())


prop_conv2d_backward = _property(F.conv2d_backward, conv_cases(backward=True))


# --------------------------------------------------------------------------
# relu
# --------------------------------------------------------------------------
@st.composite
def relu_cases(draw, backward=False):
    ndim = draw(st.integers(0, 5))
    shape = tuple(draw(st.integers(0, 4)) for _ in range(ndim))
    x = draw(arrays(shape))
    g = draw(arrays(shape)) if backward else None
    expect, errors, why = "ok", (), ""
    mutation = draw(st.sampled_from([None] * 4 + ["dtype", "none", "shape",
                                                  "ragged"]))
    if mutation == "dtype":
        expect, errors, why = "error", (TypeError,), "bad dtype"
        if backward and draw(st.booleans()):
            g = bad_array(draw, shape)
        else:
            x = bad_array(draw, shape)
    elif mutation == "none":
        expect, errors, why, x = "error", (TypeError,), "None", None
    elif mutation == "ragged":
        expect, errors, why, x = "error", (TypeError,), "ragged", [[1], []]
    elif mutation == "shape" and backward:
        expect, errors, why = "error", (ValueError,), "shape mismatch"
        g = np.zeros(shape + (2,))

    def oracle(result):
        xa = np.asarray(x)
        if backward:
            ga = np.asarray(g)
            dt = design_dtype(ga, xa)
            exp = R.relu_backward(f64(ga, dt), f64(xa, dt))
        else:
            dt = design_dtype(xa)
            exp = R.relu(f64(xa, dt))
        assert_result(result, exp, dt, exact=True)

    args = (g, x) if backward else (x,)
    return Case(args, {}, expect, errors, why, oracle)


prop_relu = _property(F.relu, relu_cases())


prop_relu_backward = _property(F.relu_backward, relu_cases(backward=True))


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------
@st.composite
def pool_hps(draw, mode, cats):
    """kernel, stride, padding values; their pairs; expectation."""
    kernel, kernel_p, kcat = draw(positive_hp(cats["kernel"],
                                              small=(1, 2, 3, 4)))
    if cats["stride"] == ("ok",) and draw(st.booleans()):
        stride, stride_p, scat = None, kernel_p, kcat
    else:
        stride, stride_p, scat = draw(positive_hp(cats["stride"]))
        if stride is None:                  # the default: stride = kernel
            stride_p, scat = kernel_p, kcat
    pcat = draw(st.sampled_from(cats["padding"]))
    if pcat == "ok":
        half = (1, 1) if kernel_p is None else (kernel_p[0] // 2,
                                                kernel_p[1] // 2)
        if mode == "invalid" and draw(st.integers(0, 3)) == 0:
            half = (half[0] + 2, half[1] + 2)   # padding above kernel / 2
        a = draw(st.integers(0, min(half[0], 3)))
        b = draw(st.integers(0, min(half[1], 3)))
        padding = draw(st.sampled_from([a, (a, b), [a, b]]))
        pad_p = (a, a) if np.ndim(padding) == 0 else (a, b)
    elif pcat == "bad_value":
        padding, pad_p = draw(st.sampled_from([-1, (0, -1), (1, 2, 3)])), None
    elif pcat == "bad_type":
        padding, pad_p = draw(st.sampled_from([0.5, None, "same", True])), \
            None
    else:           # big / too_big
        padding, pad_p = draw(st.sampled_from([2**40, 2**62, 2**63,
                                               10**30])), None
        pcat = "too_big"
    expect, errors, why = _hp_expectation({kcat, scat, pcat})
    if expect == "error":
        pass
    elif pcat == "too_big":
        expect, errors, why = "error", (ValueError,), "padding too large"
    elif 2 * pad_p[0] > kernel_p[0] or 2 * pad_p[1] > kernel_p[1]:
        expect, errors, why = "error", (ValueError,), "padding > kernel / 2"
    elif "too_big" in {kcat, scat}:
        expect, why = "either", "size above 2**62"
    return (kernel, stride, padding), (kernel_p, stride_p, pad_p), \
        (expect, errors, why)


def _pool_out(h, w, kernel_p, stride_p, pad_p):
    if kernel_p[0] > h + 2 * pad_p[0] or kernel_p[1] > w + 2 * pad_p[1]:
        raise ValueError("kernel larger than the padded input")
    return ((h + 2 * pad_p[0] - kernel_p[0]) // stride_p[0] + 1,
            (w + 2 * pad_p[1] - kernel_p[1]) // stride_p[1] + 1)


@st.composite
def pool_cases(draw, op):
    ndim = draw(st.sampled_from([4, 4, 3, 2]))
    n, c = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    mode, cats = draw(mode_and_cats(["kernel", "stride", "padding"]))
    (kernel, stride, padding), (kernel_p, stride_p, pad_p), \
        (expect, errors, why) = draw(pool_hps(mode, cats))
    if expect == "error":
        h, w = draw(st.integers(0, 7)), draw(st.integers(0, 7))
    else:
        need = [max(0, kernel_p[i] - 2 * pad_p[i]) for i in (0, 1)]
        h, w = (draw(st.integers(need[i], need[i] + 5)) if need[i] < 64
                else 0 for i in (0, 1))
        if mode == "invalid" and need[0] > 0 and draw(st.booleans()):
            h = need[0] - 1                       # kernel does not fit
    shape = (n, c, h, w)[4 - ndim:]
    shape4 = (1,) * (4 - ndim) + shape
    out_hw = None
    if expect in ("ok", "either"):
        try:
            out_hw = _pool_out(h, w, kernel_p, stride_p, pad_p)
        except ValueError as exc:
            expect, errors, why = "error", (ValueError,), str(exc)
    cip = draw(st.sampled_from([True, False, 1, 0]))
    if out_hw is not None and h * w == 0 and op == "avg_backward":
        expect, why = "either", "gradient of an empty plane"
    elif out_hw is not None and h * w == 0:
        # Windows of a kernel twice the padding over an empty plane hold
        # padding only: no input position for max pooling to return, an
        # empty average unless the padding counts.
        if math.prod(shape4[:2]) and (op == "max" or not cip):
            expect, errors, why = "error", (ValueError,), \
                "windows of padding only"
        else:
            expect, why = "either", "windows of zero padding only"
    x = draw(arrays(shape))
    g = None
    if op == "avg_backward":
        g = draw(arrays(shape[:-2] + out_hw)) if out_hw else np.zeros(
            shape[:-2] + (1, 1))
    mutation = None
    if mode == "invalid" and expect != "error":
        mutation = draw(st.sampled_from(["dtype", "ndim", "none", "shape"]))
    input_shape = shape
    prior = expect, errors, why
    if expect in ("ok", "either") and mutation is not None:
        expect, errors, why = "error", (ValueError,), mutation
        if mutation == "dtype":
            errors = (TypeError,)
            if op == "avg_backward":
                g = bad_array(draw, np.shape(g))
            else:
                x = bad_array(draw, shape)
        elif mutation == "ndim":
            bad = draw(st.sampled_from([(5,), (1, 1, 1, 4, 4)]))
            if op == "avg_backward":
                g, input_shape = np.zeros(bad), bad
            else:
                x = np.zeros(bad)
        elif mutation == "none":
            errors = (TypeError,)
            if op == "avg_backward":
                input_shape = draw(st.sampled_from([None, (1.5,) * ndim,
                                                    "abcd"[:ndim]]))
            else:
                x = None
        elif op == "avg_backward":          # "shape"
            g = np.zeros(np.shape(g)[:-1] + (np.shape(g)[-1] + 1,))
        else:
            expect, errors, why = prior
    if op == "max":
        args, kwargs = (x, kernel), {"stride": stride, "padding": padding}
    elif op == "avg":
        args = (x, kernel)
        kwargs = {"stride": stride, "padding": padding,
                  "count_include_pad": cip}
    else:
        args = (g, input_shape, kernel)
        kwargs = {"stride": stride, "padding": padding,
                  "count_include_pad": cip}

    def oracle(result):
        hyper = (kernel_p, stride_p, pad_p)
        if op == "max":
            xa = np.asarray(x)
            dt = design_dtype(xa)
            if shape4[0] * shape4[1] == 0:   # the reference needs a plane
                ey = np.zeros(shape4[:2] + out_hw)
                ei = ey.astype(np.int64)
            else:
                ey, ei = R.max_pool2d(f64(xa, dt).reshape(shape4), *hyper)
            y, idx = result
            assert_result(y, ey.reshape(shape[:-2] + ey.shape[2:]), dt,
                          exact=True)
            assert idx.dtype == np.int64
            np.testing.assert_array_equal(idx, ei.reshape(y.shape))
        elif op == "avg":
            xa = np.asarray(x)
            dt = design_dtype(xa)
            x4 = f64(xa, dt).reshape(shape4)
            if x4.size == 0:
                ey = eb = np.zeros(shape4[:2] + out_hw)
            else:
                ey = R.avg_pool2d(x4, *hyper, bool(cip))
                eb = R.avg_pool2d(abs(x4), *hyper, bool(cip))
            oshape = shape[:-2] + ey.shape[2:]
            assert_result(result, ey.reshape(oshape), dt, eb.reshape(oshape),
                          kernel_p[0] * kernel_p[1])
        else:
            ga = np.asarray(g)
            dt = design_dtype(ga)
            g4 = f64(ga, dt).reshape(shape4[:2] + ga.shape[-2:])
            ex = R.avg_pool2d_backward(g4, shape4, *hyper, bool(cip))
            eb = R.avg_pool2d_backward(abs(g4), shape4, *hyper, bool(cip))
            assert_result(result, ex.reshape(shape), dt, eb.reshape(shape),
                          g4.shape[2] * g4.shape[3])

    return Case(args, kwargs, expect, errors, why, oracle)


prop_max_pool2d = _property(F.max_pool2d, pool_cases("max"))


prop_avg_pool2d = _property(F.avg_pool2d, pool_cases("avg"))


prop_avg_pool2d_backward = _property(
    F.avg_pool2d_backward, pool_cases("avg_backward"))


@st.composite
def max_pool_backward_cases(draw):
    ndim = draw(st.sampled_from([4, 4, 3, 2]))
    n, c = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    oh, ow = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    shape = (n, c, h, w)[4 - ndim:]
    gshape = (n, c, oh, ow)[4 - ndim:]
    g = draw(arrays(gshape))
    seed = draw(st.integers(0, 2**32 - 1))
    ind = np.random.default_rng(seed).integers(0, h * w, gshape)
    ind = _in_layout(ind.astype(draw(st.sampled_from(
        ["int64", "int32", "int16", "uint8", "uint64"]))), draw(
        st.sampled_from(LAYOUTS)))
    assume(h * w <= 255 or np.asarray(ind).dtype != np.uint8)
    input_shape = draw(st.sampled_from([shape, list(shape),
                                        tuple(np.int64(d) for d in shape)]))
    expect, errors, why = "ok", (), ""
    mutation = draw(st.sampled_from([None] * 4 + [
        "index_low", "index_high", "index_dtype", "index_shape", "rank",
        "nc", "negative", "float_shape", "huge_shape", "grad_dtype"]))
    if mutation is not None:
        expect, errors, why = "error", (ValueError,), mutation
        size = int(np.prod(gshape))
        if mutation == "index_low" and size:
            ind = np.array(ind, dtype=np.int64)
            ind.flat[draw(st.integers(0, size - 1))] = draw(
                st.sampled_from([-1, -2**63]))
        elif mutation == "index_high" and size:
            ind = np.array(ind, dtype=draw(st.sampled_from(["int64",
                                                            "uint64"])))
            ind.flat[draw(st.integers(0, size - 1))] = draw(
                st.sampled_from([h * w, 2**63 - 1]))
        elif mutation == "index_dtype":
            ind, errors = np.asarray(ind).astype(draw(st.sampled_from(
                ["float64", "bool", "complex128", "object"]))), (TypeError,)
        elif mutation == "index_shape":
            ind = np.zeros(gshape + (1,), dtype=np.int64)
        elif mutation == "rank":
            input_shape = tuple(shape) + (1,)
        elif mutation == "nc" and ndim >= 3:
            input_shape = (shape[0] + 1,) + tuple(shape[1:])
        elif mutation == "negative":
            input_shape = tuple(shape[:-1]) + (-1,)
        elif mutation == "float_shape":
            input_shape, errors = tuple(shape[:-1]) + (float(w),), \
                (TypeError,)
        elif mutation == "huge_shape" and math.prod(shape[:-2]) > 0:
            expect = "huge"
            input_shape = tuple(shape[:-2]) + draw(st.sampled_from(
                [(2**31, 2**31), (2**62, 2), (2**70, 1), (2**20, 2**20)]))
        elif mutation == "grad_dtype":
            g, errors = bad_array(draw, gshape), (TypeError,)
        else:
            expect, errors, why = "ok", (), ""

    def oracle(result):
        ga = np.asarray(g)
        dt = design_dtype(ga)
        shape4 = (1,) * (4 - ndim) + tuple(shape)
        g4 = f64(ga, dt).reshape(shape4[:2] + (oh, ow))
        i4 = np.asarray(ind).astype(np.int64).reshape(g4.shape)
        if shape4[0] * shape4[1] == 0:      # the reference needs a plane
            ex = eb = np.zeros(shape4)
        else:
            ex = R.max_pool2d_backward(g4, i4, shape4)
            eb = R.max_pool2d_backward(abs(g4), i4, shape4)
        assert_result(result, ex.reshape(shape), dt, eb.reshape(shape),
                      oh * ow)

    return Case((g, ind, input_shape), {}, expect, errors, why, oracle)


prop_max_pool2d_backward = _property(
    F.max_pool2d_backward, max_pool_backward_cases())


@st.composite
def global_pool_cases(draw, backward=False):
    n, c = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    x = draw(arrays((n, c, h, w)))
    g = draw(arrays((n, c)))
    input_shape = (n, c, h, w)
    expect, errors, why = "ok", (), ""
    mutation = draw(st.sampled_from([None] * 3 + ["empty_plane", "ndim",
                                                  "dtype", "mismatch"]))
    if mutation == "empty_plane":
        expect, errors, why = "error", (ValueError,), mutation
        input_shape = (n, c, 0, w)
        x = np.zeros(input_shape)
    elif mutation == "ndim":
        expect, errors, why = "error", (ValueError,), mutation
        x, g = np.zeros((c, h, w)), np.zeros((n, c, 1))
    elif mutation == "dtype":
        expect, errors, why = "error", (TypeError,), mutation
        x, g = bad_array(draw, (n, c, h, w)), bad_array(draw, (n, c))
    elif mutation == "mismatch" and backward:
        expect, errors, why = "error", (ValueError,), mutation
        g = np.zeros((n, c + 1))

    def oracle(result):
        if backward:
            ga = np.asarray(g)
            dt = design_dtype(ga)
            ex = R.global_avg_pool2d_backward(f64(ga, dt), input_shape)
            eb = R.global_avg_pool2d_backward(abs(f64(ga, dt)), input_shape)
            assert_result(result, ex, dt, eb, 1)
        else:
            xa = np.asarray(x)
            dt = design_dtype(xa)
            ex = R.global_avg_pool2d(f64(xa, dt))
            eb = R.global_avg_pool2d(abs(f64(xa, dt)))
            assert_result(result, ex, dt, eb, h * w)

    args = (g, input_shape) if backward else (x,)
    return Case(args, {}, expect, errors, why, oracle)


prop_global_avg_pool2d = _property(F.global_avg_pool2d, global_pool_cases())


prop_global_avg_pool2d_backward = _property(
    F.global_avg_pool2d_backward, global_pool_cases(backward=True))


# --------------------------------------------------------------------------
# dense
# --------------------------------------------------------------------------
@st.composite
def dense_cases(draw, backward=False):
    x_nd, w_nd = draw(st.sampled_from([2, 2, 1])), draw(st.sampled_from(
        [2, 2, 1]))
    n, f, o = (draw(st.integers(0, 5)) for _ in range(3))
    if x_nd == 1:
        n = 1
    if w_nd == 1:
        o = 1
    xshape = (n, f) if x_nd == 2 else (f,)
    wshape = (o, f) if w_nd == 2 else (f,)
    out_shape = ((n,) if x_nd == 2 else ()) + ((o,) if w_nd == 2 else ())
    x = draw(arrays(xshape, kinds=FINITE))
    wt = draw(arrays(wshape, kinds=FINITE))
    bias = None
    if not backward and draw(st.booleans()):
        bias = draw(arrays((o,) if w_nd == 2 else
                           draw(st.sampled_from([(), (1,)]))))
    g = draw(arrays(out_shape, kinds=FINITE)) if backward else None
    bias_flag = draw(st.sampled_from([True, False, np.bool_(False)]))
    expect, errors, why = "ok", (), ""
    mutation = draw(st.sampled_from([None] * 5 + [
        "features", "ndim", "dtype", "bias", "grad_shape", "flag", "none"]))
    if mutation is not None:
        expect, errors, why = "error", (ValueError,), mutation
        if mutation == "features":
            wt = np.zeros(wshape[:-1] + (f + 1,))
        elif mutation == "ndim":
            x = np.zeros((1,) + xshape + (1,))
        elif mutation == "dtype":
            errors = (TypeError,)
            which = draw(st.integers(0, 2))
            if which == 0:
                x = bad_array(draw, xshape)
            elif which == 1:
                wt = bad_array(draw, wshape)
            elif backward:
                g = bad_array(draw, out_shape)
            else:
                bias = bad_array(draw, (o,))
        elif mutation == "bias" and not backward:
            bias = np.zeros((o + 1,))
        elif mutation == "grad_shape" and backward:
            g = np.zeros(out_shape + (1,))
        elif mutation == "flag" and backward:
            bias_flag, errors = draw(st.sampled_from([1, None, "no"])), \
                (TypeError,)
        elif mutation == "none":
            x, errors = None, (TypeError,)
        else:
            expect, errors, why = "ok", (), ""

    def oracle(result):
        xa, wa = np.asarray(x), np.asarray(wt)
        x2, w2 = xa.reshape(n, f), wa.reshape(o, f)
        if backward:
            ga = np.asarray(g)
            dt = design_dtype(xa, wa, ga)
            g2 = f64(ga, dt).reshape(n, o)
            ex = R.dense_backward(g2, f64(x2, dt), f64(w2, dt))
            eb = R.dense_backward(abs(g2), abs(f64(x2, dt)), abs(f64(w2, dt)))
            gx, gw, gb = result
            assert_result(gx, ex[0].reshape(xa.shape), dt,
                          eb[0].reshape(xa.shape), o)
            assert_result(gw, ex[1].reshape(wa.shape), dt,
                          eb[1].reshape(wa.shape), n)
            if bias_flag:
                bshape = (o,) if w_nd == 2 else ()
                assert_result(gb, ex[2].reshape(bshape), dt,
                              eb[2].reshape(bshape), n)
            else:
                assert gb is None
            return
        ba = None if bias is None else np.asarray(bias)
        dt = design_dtype(xa, wa, ba)
        b1 = None if ba is None else f64(ba, dt).reshape(o)
        ey = R.dense(f64(x2, dt), f64(w2, dt), b1)
        eb = R.dense(abs(f64(x2, dt)), abs(f64(w2, dt)),
                     None if b1 is None else abs(b1))
        assert_result(result, ey.reshape(out_shape), dt,
                      eb.reshape(out_shape), f + 1)

    args = (g, x, wt) if backward else (x, wt, bias)
    kwargs = {"bias": bias_flag} if backward else {}
    return Case(args, kwargs, expect, errors, why, oracle)


prop_dense = _property(F.dense, dense_cases())


prop_dense_backward = _property(F.dense_backward, dense_cases(backward=True))


# --------------------------------------------------------------------------
# softmax and cross-entropy
# --------------------------------------------------------------------------
def _softmax_tol(p, c, dt):
    return (c + 8) * np.finfo(dt).eps * p


@st.composite
def softmax_cases(draw):
    nd = draw(st.sampled_from([2, 2, 1]))
    n, c = draw(st.integers(0, 5)), draw(st.integers(1, 6))
    shape = (n, c) if nd == 2 else (c,)
    z = draw(arrays(shape))
    expect, errors, why = "ok", (), ""
    mutation = draw(st.sampled_from([None] * 4 + ["no_class", "ndim",
                                                  "dtype"]))
    if mutation == "no_class":
        expect, errors, why, z = "error", (ValueError,), mutation, \
            np.zeros(shape[:-1] + (0,))
    elif mutation == "ndim":
        expect, errors, why = "error", (ValueError,), mutation
        z = np.zeros(draw(st.sampled_from([(), (1, 2, 3)])))
    elif mutation == "dtype":
        expect, errors, why, z = "error", (TypeError,), mutation, \
            bad_array(draw, shape)

    def oracle(result):
        za = np.asarray(z)
        dt = design_dtype(za)
        ep = R.softmax(f64(za, dt).reshape(-1, c)).reshape(shape)
        assert_result(result, ep, dt, ep, c + 4)

    return Case((z,), {}, expect, errors, why, oracle)


prop_softmax = _property(F.softmax, softmax_cases())


@st.composite
def xent_cases(draw):
    n, c = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    z = draw(arrays((n, c)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n).astype(draw(st.sampled_from(
        ["int64", "int32", "int8", "uint8", "uint64"])))
    labels = _in_layout(labels, draw(st.sampled_from(LAYOUTS)))
    sw = None
    if draw(st.booleans()):
        sw = draw(arrays((n,), kinds=("int", "normal")))
        sw = np.abs(np.asarray(sw)) if np.asarray(sw).dtype.kind in "fi" \
            else sw
    expect, errors, why = "ok", (), ""
    mutation = draw(st.sampled_from([None] * 5 + [
        "label_low", "label_high", "label_dtype", "label_shape", "empty",
        "logits_ndim", "weight_value", "weight_shape", "weight_dtype"]))
    if mutation is not None:
        expect, errors, why = "error", (ValueError,), mutation
        if mutation == "label_low":
            labels = np.array(labels, dtype=np.int64)
            labels[draw(st.integers(0, n - 1))] = draw(st.sampled_from(
                [-1, -2**63]))
        elif mutation == "label_high":
            labels = np.array(labels, dtype=draw(st.sampled_from(
                ["int64", "uint64"])))
            labels[draw(st.integers(0, n - 1))] = draw(st.sampled_from(
                [c, 2**63 - 1]))
        elif mutation == "label_dtype":
            labels, errors = np.asarray(labels).astype(draw(st.sampled_from(
                ["float64", "bool", "complex128", "object", "str"]))), \
                (TypeError,)
        elif mutation == "label_shape":
            labels = np.zeros(draw(st.sampled_from([(n + 1,), (n, 1), ()])),
                              dtype=np.int64)
        elif mutation == "empty":
            z, labels = np.zeros((0, c)), np.zeros(0, dtype=np.int64)
        elif mutation == "logits_ndim":
            z = np.zeros((n, c, 1))
        elif mutation == "weight_value":
            sw = np.ones(n)
            sw[draw(st.integers(0, n - 1))] = draw(st.sampled_from(
                [-1.0, np.nan, np.inf, -np.inf]))
        elif mutation == "weight_shape":
            sw = np.ones(draw(st.sampled_from([(n + 1,), (n, 1)])))
        else:
            sw, errors = _bad_values((n,), draw(st.sampled_from(
                [d for d in BAD_DTYPES if d != "longdouble"]))), (TypeError,)

    def oracle(result):
        za = np.asarray(z)
        dt = design_dtype(za)
        lab = np.asarray(labels).astype(np.int64)
        w = None if sw is None else np.asarray(sw).astype(np.float64)
        z64 = f64(za, dt)
        eloss, egrad = R.softmax_cross_entropy(z64, lab, w)
        loss, grad = result
        assert isinstance(loss, np.floating) and loss.dtype == dt, \
            (type(loss), dt)
        with np.errstate(invalid="ignore"):
            shifted = z64 - z64.max(axis=1, keepdims=True)
        finite = np.abs(shifted[np.isfinite(shifted)])
        bound = finite.max(initial=0) + np.log(c) + 1
        assert_result(np.asarray(loss), np.asarray(eloss, np.float64), dt,
                      bound, c + n)
        if w is None:
            scale = np.full(n, 1.0 / n)
        else:
            scale = w / w.sum() if w.sum() > 0 else np.zeros(n)
        assert_result(grad, egrad, dt, np.abs(egrad) + scale[:, None], c)

    return Case((z, labels), {"sample_weight": sw}, expect, errors, why,
                oracle)


prop_softmax_cross_entropy = _property(F.softmax_cross_entropy, xent_cases())


# --------------------------------------------------------------------------
# layers through a Sequential model
# --------------------------------------------------------------------------
@st.composite
def layer_specs(draw):
    """(class name, kwargs, hyperparameters valid?)."""
    kind = draw(st.sampled_from(["Conv2D", "Conv2D", "ReLU", "MaxPool2D",
                                 "AvgPool2D", "GlobalAvgPool2D", "Flatten",
                                 "Dense", "Dense", "Dropout"]))
    bad = draw(st.integers(0, 9)) == 0
    if kind == "Conv2D":
        kw = {"filters": draw(st.integers(1, 3)),
              "kernel_size": draw(st.sampled_from([1, 2, 3, (1, 3)])),
              "stride": draw(st.sampled_from([1, 1, 2, (1, 2), 10**9])),
              "padding": draw(st.sampled_from([0, 1, (0, 1), "same",
                                               "valid"])),
              "dilation": draw(st.sampled_from([1, 1, 2, 10**9])),
              "use_bias": draw(st.booleans())}
        if kw["padding"] == "same":
            # stride 1 only; the NumPy reference materialises the padding
            kw["stride"], kw["dilation"] = 1, min(kw["dilation"], 2)
        if bad:
            key = draw(st.sampled_from(["filters", "kernel_size", "stride",
                                        "dilation", "padding"]))
            kw[key] = draw(st.sampled_from([0, -1, 1.5, True, None, "x",
                                            (1, 2, 3)] if key != "padding"
                                           else [-1, "full", 1.5, None]))
    elif kind in ("MaxPool2D", "AvgPool2D"):
        size = draw(st.sampled_from([1, 2, 3, (2, 1)]))
        kw = {"pool_size": size,
              "stride": draw(st.sampled_from([None, 1, 2, 10**9])),
              "padding": draw(st.sampled_from([0, 0, 1]))}
        if kw["padding"] and (np.min(size) < 2):
            kw["padding"] = 0
        if kind == "AvgPool2D":
            kw["count_include_pad"] = draw(st.booleans())
        if bad:
            key = draw(st.sampled_from(["pool_size", "stride", "padding"]))
            kw[key] = draw(st.sampled_from([0, -1, 2.5, False, "2",
                                            (1, 2, 3)]))
            if key == "padding":
                kw[key] = draw(st.sampled_from([-1, 5, 0.5]))
    elif kind == "Dense":
        kw = {"units": draw(st.integers(1, 4)),
              "use_bias": draw(st.booleans())}
        if bad:
            kw["units"] = draw(st.sampled_from([0, -3, 2.0, True, None]))
    elif kind == "Dropout":
        kw = {"rate": draw(st.sampled_from([0.0, 0.25, 0.5]))}
        if bad:
            kw["rate"] = draw(st.sampled_from([1.0, -0.1, math.nan, "0.5",
                                               None, True]))
    else:
        kw, bad = {}, False
    return kind, kw, not bad


def _spec_shapes(input_shape, specs):
    """Per-layer output shapes in Python ints (no overflow), or raise
    ValueError where a layer cannot take its input."""
    shape = tuple(input_shape)
    if len(shape) == 2:
        shape = (1,) + shape
    shapes = []
    for kind, kw, _ in specs:
        if kind == "Conv2D":
            if len(shape) != 3:
                raise ValueError("Conv2D needs (C, H, W)")
            pair = lambda v: (v, v) if np.ndim(v) == 0 else tuple(v)
            ks, st_, dl = pair(kw["kernel_size"]), pair(kw["stride"]), \
                pair(kw["dilation"])
            pad = kw["padding"]
            pad = pad if isinstance(pad, str) else (pair(pad)[0],) * 2 + \
                (pair(pad)[1],) * 2
            _, _, _, out = _conv_geometry(shape[1], shape[2], ks[0], ks[1],
                                          st_, pad, dl)
            shape = (kw["filters"],) + out
        elif kind in ("MaxPool2D", "AvgPool2D"):
            if len(shape) != 3:
                raise ValueError("pooling needs (C, H, W)")
            pair = lambda v: (v, v) if np.ndim(v) == 0 else tuple(v)
            k = pair(kw["pool_size"])
            s = k if kw["stride"] is None else pair(kw["stride"])
            shape = (shape[0],) + _pool_out(shape[1], shape[2], k, s,
                                            pair(kw["padding"]))
        elif kind == "GlobalAvgPool2D":
            if len(shape) != 3:
                raise ValueError("GlobalAvgPool2D needs (C, H, W)")
            shape = shape[:1]
        elif kind == "Flatten":
            shape = (math.prod(shape),)
        elif kind == "Dense":
            if len(shape) != 1:
                raise ValueError("Dense needs (F,)")
            shape = (kw["units"],)
        shapes.append(shape)
    return shapes


def _ref_forward(model, x, training_masks=None):
    """The model's forward pass with cnnkit.reference, in float64, keeping
    what the backward pass needs."""
    a, caches = x.astype(np.float64), []
    for layer in model.layers:
        p = {k: v.astype(np.float64) for k, v in layer.params.items()}
        caches.append(a)
        if isinstance(layer, L.Conv2D):
            a = R.conv2d(a, p["weight"], p.get("bias"), layer.stride,
                         layer.padding, layer.dilation)
        elif isinstance(layer, L.ReLU):
            a = R.relu(a)
        elif isinstance(layer, L.AvgPool2D):
            a = R.avg_pool2d(a, layer.pool_size, layer.stride, layer.padding,
                             layer.count_include_pad)
        elif isinstance(layer, L.MaxPool2D):
            a, idx = R.max_pool2d(a, layer.pool_size, layer.stride,
                                  layer.padding)
            caches[-1] = (caches[-1], idx)
        elif isinstance(layer, L.GlobalAvgPool2D):
            a = R.global_avg_pool2d(a)
        elif isinstance(layer, L.Flatten):
            a = a.reshape(a.shape[0], -1)
        elif isinstance(layer, L.Dense):
            a = R.dense(a, p["weight"], p.get("bias"))
        elif isinstance(layer, L.Dropout):
            if training_masks is not None and layer._mask is not None:
                a = a * layer._mask.astype(np.float64)
    return a, caches


def _ref_backward(model, g, caches):
    grads = {}
    for i in reversed(range(len(model.layers))):
        layer, a = model.layers[i], caches[i]
        p = {k: v.astype(np.float64) for k, v in layer.params.items()}
        if isinstance(layer, L.Conv2D):
            g, gw, gb = R.conv2d_backward(g, a, p["weight"], layer.stride,
                                          layer.padding, layer.dilation,
                                          bias=layer.use_bias)
            grads[(i, "weight")], grads[(i, "bias")] = gw, gb
        elif isinstance(layer, L.ReLU):
            g = R.relu_backward(g, a)
        elif isinstance(layer, L.AvgPool2D):
            g = R.avg_pool2d_backward(g, a.shape, layer.pool_size,
                                      layer.stride, layer.padding,
                                      layer.count_include_pad)
        elif isinstance(layer, L.MaxPool2D):
            a, idx = a
            g = R.max_pool2d_backward(g, idx, a.shape)
        elif isinstance(layer, L.GlobalAvgPool2D):
            g = R.global_avg_pool2d_backward(g, a.shape)
        elif isinstance(layer, L.Flatten):
            g = g.reshape(a.shape)
        elif isinstance(layer, L.Dense):
            g, gw, gb = R.dense_backward(g, a, p["weight"],
                                         bias=layer.use_bias)
            grads[(i, "weight")], grads[(i, "bias")] = gw, gb
        elif isinstance(layer, L.Dropout) and layer._mask is not None:
            g = g * layer._mask.astype(np.float64)
    return g, grads


def _close(actual, expected, dtype, what):
    assert actual.shape == expected.shape, (what, actual.shape,
                                            expected.shape)
    scale = 1.0 + float(np.max(np.abs(expected), initial=0.0))
    rtol = 1e-9 if dtype == np.float64 else 1e-3
    np.testing.assert_allclose(actual.astype(np.float64), expected,
                               rtol=rtol, atol=rtol * scale, err_msg=what)


@st.composite
def model_cases(draw):
    specs = draw(st.lists(layer_specs(), min_size=1, max_size=5))
    shape_cat = draw(st.sampled_from(["ok"] * 8 + ["2d", "bad", "huge"]))
    if shape_cat == "ok":
        input_shape = (draw(st.integers(1, 3)), draw(st.integers(1, 7)),
                       draw(st.integers(1, 7)))
    elif shape_cat == "2d":
        input_shape = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    elif shape_cat == "bad":
        input_shape = draw(st.sampled_from([(0, 4, 4), (1, -1, 4),
                                            (True, 4, 4), (1, 4.0, 4), ()]))
    else:
        input_shape = draw(st.sampled_from([(1, 2**32, 2**32),
                                            (2**31, 2**31, 4),
                                            (1, 2**62, 2**62)]))
    dtype = draw(st.sampled_from(["float64", "float64", "float32"]))
    n = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    return specs, input_shape, shape_cat, dtype, n, seed


@FUZZ
@given(model_cases())
def prop_sequential(case):
    """Building fails with ValueError/TypeError exactly when a layer's
    hyperparameters or the input shape are invalid or a layer cannot take
    its input; a built model has the layer shapes of the spec (computed in
    Python ints), forward and backward passes equal to cnnkit.reference's
    chained through the layers, and can take a training step."""
    specs, input_shape, shape_cat, dtype, n, seed = case
    note(f"specs={specs} input_shape={input_shape} dtype={dtype}")
    hp_ok = all(ok for _, _, ok in specs)
    layers = []
    try:
        for kind, kw, _ in specs:
            layers.append(getattr(L, kind)(**kw))
    except (ValueError, TypeError):
        assert not hp_ok, "valid layer hyperparameters were refused"
        return
    assert hp_ok, f"invalid hyperparameters accepted: {specs}"
    event("layers built")
    try:
        expected = _spec_shapes(input_shape, specs) \
            if shape_cat != "bad" else None
    except ValueError:
        expected = None
    try:
        model = cnnkit.Sequential(layers, input_shape=input_shape, seed=seed,
                                  dtype=dtype)
    except (ValueError, TypeError, MemoryError) as exc:
        assert str(exc)
        if isinstance(exc, MemoryError) or expected is not None:
            params = _spec_params(expected, specs, input_shape) \
                if expected is not None else 0
            assert params >= HUGE // 8 or shape_cat == "huge", (
                f"valid model refused: {type(exc).__name__}: {exc}")
        return
    assert expected is not None, (
        f"model with impossible shapes built: "
        f"{[lay.output_shape for lay in model.layers]}")
    assert [tuple(lay.output_shape) for lay in model.layers] == \
        [tuple(s) for s in expected]
    assert model.output_shape == tuple(expected[-1])
    if shape_cat == "huge" or math.prod(model.input_shape) > 10**4:
        return
    event("forward compared" + (" + backward" if dtype == "float64" else ""))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + model.input_shape).astype(dtype)
    y = model(x)
    assert y.dtype == np.dtype(dtype) and y.shape == (n,) + model.output_shape
    ey, _ = _ref_forward(model, x)
    _close(y, ey, model.dtype, "forward")
    if dtype == "float64":
        yt = model.forward(x, training=True)
        eyt, caches = _ref_forward(model, x, training_masks=True)
        _close(yt, eyt, model.dtype, "training forward")
        g = rng.standard_normal(yt.shape)
        gx = model.backward(g)
        egx, egrads = _ref_backward(model, g, caches)
        _close(gx, egx, model.dtype, "input gradient")
        for i, layer in enumerate(model.layers):
            for name, grad in layer.grads.items():
                _close(grad, egrads[(i, name)], model.dtype,
                       f"layer {i} {name} gradient")
    labels = rng.integers(0, model.output_shape[-1], n)
    if len(model.output_shape) == 1:
        hist = model.fit(x, labels, epochs=1, batch_size=n, verbose=0)
        assert hist.epoch == [0]
        assert model.predict(x).shape == (n,)
    else:
        try:
            model.fit(x, labels, epochs=1, batch_size=n, verbose=0)
        except (ValueError, TypeError) as exc:
            assert str(exc)
        else:
            raise AssertionError("fit accepted a model whose output is not "
                                 "(classes,)")
    for bad, exc in [(x.astype(np.complex128), TypeError),
                     (x[..., :0], ValueError),
                     (np.full_like(x, np.nan), ValueError)]:
        with pytest.raises(exc):
            model.predict(bad)


def _spec_params(shapes, specs, input_shape):
    shape = tuple(input_shape) if len(input_shape) == 3 else \
        (1,) + tuple(input_shape)
    total = 0
    for (kind, kw, _), out in zip(specs, shapes):
        if kind == "Conv2D":
            k = kw["kernel_size"]
            k = (k, k) if np.ndim(k) == 0 else k
            total += kw["filters"] * shape[0] * k[0] * k[1]
        elif kind == "Dense":
            total += kw["units"] * shape[0]
        shape = out
    return total


# --------------------------------------------------------------------------
# a fixed list of extreme calls
# --------------------------------------------------------------------------
def _z(*shape, dtype=np.float64):
    return np.zeros(shape, dtype=dtype)


def _bcast(shape, dtype=np.float32):
    return np.broadcast_to(np.ones((), dtype), shape)


# (name, call, allowed outcomes); outcomes: "ok" or exception class names
EXTREME = [
    ("conv 1x1 input, 1x1 kernel", lambda: F.conv2d(_z(1, 1, 1, 1),
                                                    _z(1, 1, 1, 1)), {"ok"}),
    ("conv kernel equal to the input", lambda: F.conv2d(
        np.ones((2, 3, 5, 4)), np.ones((2, 3, 5, 4))), {"ok"}),
    ("conv kernel one larger than the input", lambda: F.conv2d(
        _z(1, 1, 5, 4), _z(1, 1, 6, 4)), {"ValueError"}),
    ("conv empty batch", lambda: F.conv2d(_z(0, 3, 4, 4), _z(2, 3, 3, 3)),
     {"ok"}),
    ("conv zero channels", lambda: F.conv2d(_z(2, 0, 4, 4), _z(2, 0, 3, 3),
                                            np.ones(2)), {"ok"}),
    ("conv zero filters", lambda: F.conv2d(_z(2, 3, 4, 4), _z(0, 3, 3, 3)),
     {"ok"}),
    ("conv zero-size kernel", lambda: F.conv2d(_z(1, 1, 4, 4),
                                               _z(1, 1, 0, 3)),
     {"ValueError"}),
    ("conv empty image, padding", lambda: F.conv2d(_z(1, 1, 0, 0),
                                                   _z(1, 1, 1, 1),
                                                   padding=1), {"ok"}),
    ("conv stride 10**9", lambda: F.conv2d(_z(1, 2, 9, 9), _z(3, 2, 3, 3),
                                           stride=10**9), {"ok"}),
    ("conv stride 2**62", lambda: F.conv2d(_z(1, 2, 9, 9), _z(3, 2, 3, 3),
                                           stride=2**62), {"ok"}),
    ("conv stride 2**63", lambda: F.conv2d(_z(1, 2, 9, 9), _z(3, 2, 3, 3),
                                           stride=2**63), {"ValueError"}),
    ("conv stride -2**63", lambda: F.conv2d(_z(1, 1, 3, 3), _z(1, 1, 1, 1),
                                            stride=-2**63), {"ValueError"}),
    ("conv dilation 2**62", lambda: F.conv2d(_z(1, 1, 3, 3), _z(1, 1, 2, 2),
                                             dilation=2**62),
     {"ValueError"}),
    ("conv same padding, dilation 10**9", lambda: F.conv2d(
        np.ones((1, 1, 3, 3)), np.ones((1, 1, 3, 3)), padding="same",
        dilation=10**9), {"ok"}),
    ("conv padding 2**31 (output > 2**62)", lambda: F.conv2d(
        _z(1, 1, 1, 1), _z(1, 1, 1, 1), padding=2**31), {"ValueError"}),
    ("conv padding 2**62", lambda: F.conv2d(_z(1, 1, 1, 1), _z(1, 1, 1, 1),
                                            padding=2**62), {"ValueError"}),
    ("conv padding 10**30", lambda: F.conv2d(_z(1, 1, 1, 1), _z(1, 1, 1, 1),
                                             padding=10**30),
     {"ValueError"}),
    ("conv padding (0, 2**40)", lambda: F.conv2d(
        _z(1, 1, 1, 1), _z(1, 1, 1, 1), padding=(0, 2**40)),
     {"ValueError", "MemoryError"}),
    ("conv backward padding 2**31", lambda: F.conv2d_backward(
        _z(1, 1, 1, 1), _z(1, 1, 1, 1), _z(1, 1, 1, 1), padding=2**31),
     {"ValueError"}),
    ("conv broadcast input of 2**32 elements", lambda: F.conv2d(
        _bcast((1, 1, 2**16, 2**16)), _z(1, 1, 1, 1, dtype=np.float32)),
     {"ValueError", "MemoryError"}),
    ("conv empty array", lambda: F.conv2d(np.array([]), np.array([])),
     {"ValueError"}),
    ("conv scalars", lambda: F.conv2d(1.0, 2.0), {"ValueError"}),
    ("relu 0-d", lambda: F.relu(np.float32(-1)), {"ok"}),
    ("relu empty 5-d", lambda: F.relu(_z(0, 0, 0, 0, 0)), {"ok"}),
    ("relu broadcast 2**60 elements", lambda: F.relu(
        _bcast((2**30, 2**30))), {"ValueError", "MemoryError"}),
    ("relu float64 extremes", lambda: F.relu(np.array(
        [np.finfo(np.float64).max, -np.finfo(np.float64).max, 5e-324])),
     {"ok"}),
    ("max pool kernel 10**9", lambda: F.max_pool2d(_z(1, 1, 4, 4), 10**9),
     {"ValueError"}),
    ("max pool kernel 2**63", lambda: F.max_pool2d(_z(1, 1, 4, 4), 2**63),
     {"ValueError"}),
    ("max pool stride 10**9", lambda: F.max_pool2d(_z(1, 1, 4, 4), 2,
                                                   stride=10**9), {"ok"}),
    ("max pool kernel equal to the input", lambda: F.max_pool2d(
        _z(2, 2, 3, 5), (3, 5)), {"ok"}),
    ("max pool 1x1", lambda: F.max_pool2d(_z(1, 1, 1, 1), 1), {"ok"}),
    ("max pool of empty planes, kernel = 2 x padding", lambda: F.max_pool2d(
        _z(2, 3, 0, 0), 4, padding=2), {"ValueError"}),
    ("max pool of an empty row, kernel = 2 x padding", lambda: F.max_pool2d(
        _z(1, 1, 0, 5), (2, 1), padding=(1, 0)), {"ValueError"}),
    ("avg pool of empty planes, padding not counted", lambda: F.avg_pool2d(
        _z(2, 3, 0, 0), 4, padding=2, count_include_pad=False),
     {"ValueError"}),
    ("max pool padding 2**62", lambda: F.max_pool2d(_z(1, 1, 4, 4), 2,
                                                    padding=2**62),
     {"ValueError"}),
    ("max pool backward index -2**63", lambda: F.max_pool2d_backward(
        _z(1, 1, 1, 1), np.full((1, 1, 1, 1), -2**63), (1, 1, 2, 2)),
     {"ValueError"}),
    ("max pool backward index 2**64-1", lambda: F.max_pool2d_backward(
        _z(1, 1, 1, 1), np.full((1, 1, 1, 1), 2**64 - 1, np.uint64),
        (1, 1, 2, 2)), {"ValueError"}),
    ("max pool backward input 2**31 x 2**31", lambda: F.max_pool2d_backward(
        _z(1, 1, 1, 1), np.zeros((1, 1, 1, 1), np.int64),
        (1, 1, 2**31, 2**31)), {"ValueError", "MemoryError"}),
    ("max pool backward input 2**40 x 2**40", lambda: F.max_pool2d_backward(
        _z(1, 1, 1, 1), np.zeros((1, 1, 1, 1), np.int64),
        (1, 1, 2**40, 2**40)), {"ValueError"}),
    ("max pool backward input dim 2**70", lambda: F.max_pool2d_backward(
        _z(1, 1, 1, 1), np.zeros((1, 1, 1, 1), np.int64),
        (1, 1, 2**70, 1)), {"ValueError"}),
    ("avg pool backward input 2**62 x 2", lambda: F.avg_pool2d_backward(
        _z(1, 1, 1, 1), (1, 1, 2**62, 2), 2, stride=2**62),
     {"ValueError", "MemoryError"}),
    ("avg pool backward input 2**20 x 2**20", lambda: F.avg_pool2d_backward(
        _z(1, 1, 1, 1), (1, 1, 2**20, 2**20), 2**20),
     {"ValueError", "MemoryError"}),
    ("global avg pool 1x1", lambda: F.global_avg_pool2d(_z(3, 2, 1, 1)),
     {"ok"}),
    ("dense no features", lambda: F.dense(_z(3, 0), _z(2, 0), np.ones(2)),
     {"ok"}),
    ("dense no outputs", lambda: F.dense(_z(3, 4), _z(0, 4)), {"ok"}),
    ("dense backward no features, bias", lambda: F.dense_backward(
        _z(3, 2), _z(3, 0), _z(2, 0)), {"ok"}),
    ("dense backward empty batch", lambda: F.dense_backward(
        _z(0, 2), _z(0, 3), np.ones((2, 3))), {"ok"}),
    ("dense broadcast 2**31 rows", lambda: F.dense(
        _bcast((2**31, 2)), _z(3, 2, dtype=np.float32)),
     {"ValueError", "MemoryError"}),
    ("softmax float64 max", lambda: F.softmax(np.array(
        [[np.finfo(np.float64).max, -np.finfo(np.float64).max, 0.0]])),
     {"ok"}),
    ("softmax 1 class", lambda: F.softmax(_z(4, 1)), {"ok"}),
    ("xent label 2**63-1", lambda: F.softmax_cross_entropy(
        _z(1, 3), np.array([2**63 - 1])), {"ValueError"}),
    ("xent label -2**63", lambda: F.softmax_cross_entropy(
        _z(1, 3), np.array([-2**63])), {"ValueError"}),
    ("xent uint64 label 2**64-1", lambda: F.softmax_cross_entropy(
        _z(1, 3), np.array([2**64 - 1], np.uint64)), {"ValueError"}),
    ("xent Python int label 2**70", lambda: F.softmax_cross_entropy(
        _z(1, 3), [2**70]), {"ValueError", "TypeError"}),
    ("xent empty", lambda: F.softmax_cross_entropy(_z(0, 3), _z(
        0, dtype=np.int64)), {"ValueError"}),
    ("xent broadcast 2**31 rows", lambda: F.softmax_cross_entropy(
        _bcast((2**31, 2)), np.broadcast_to(np.int8(0), (2**31,))),
     {"ValueError", "MemoryError"}),
]


def run_extreme_cases():
    """Run EXTREME; print one JSON object {name: outcome}."""
    outcomes = {}
    for name, call, _ in EXTREME:
        try:
            call()
            outcomes[name] = "ok"
        except Exception as exc:   # noqa: BLE001 - reported to the parent
            outcomes[name] = type(exc).__name__ if not isinstance(
                exc, MemoryError) else "MemoryError"
    print("EXTREME-RESULTS " + json.dumps(outcomes), flush=True)


# --------------------------------------------------------------------------
# running the properties in child processes
# --------------------------------------------------------------------------
_CHILD = r"""
import faulthandler, os, resource, runpy, sys
faulthandler.enable()
limit = int(sys.argv[3])
if not os.environ.get("CNNKIT_SANITIZER"):
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
ns = runpy.run_path(sys.argv[1], run_name="cnnkit_fuzz_child")
ns[sys.argv[2]]()
print("CHILD-DONE", flush=True)
"""


HYPOTHESIS_HOME = os.path.join(tempfile.gettempdir(), "cnnkit-hypothesis")


def child_env(memory_limit):
    """Environment of a child process.  Under AddressSanitizer
    (CNNKIT_SANITIZER set, see tools/sanitize.sh) an address-space limit is
    impossible (ASan reserves terabytes of shadow memory), so single
    allocations are capped with ASan's max_allocation_size_mb instead."""
    env = dict(os.environ)
    # Hypothesis caches constants it collects; keep that out of the repo
    env.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", HYPOTHESIS_HOME)
    if os.environ.get("CNNKIT_SANITIZER"):
        env["ASAN_OPTIONS"] = ":".join(filter(None, [
            env.get("ASAN_OPTIONS", ""), "allocator_may_return_null=1",
            f"max_allocation_size_mb={int(memory_limit) >> 20}"]))
    return env


def run_in_child(name, timeout=CHILD_TIMEOUT):
    """Run the module-level function ``name`` in a fresh interpreter with a
    memory limit; return its stdout.  A crash, a hang, an uncaught exception
    or a failed property fails the calling test with the child's output."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, os.path.abspath(__file__), name,
             str(CHILD_MEMORY_LIMIT)],
            capture_output=True, text=True, timeout=timeout,
            env=child_env(CHILD_MEMORY_LIMIT))
    except subprocess.TimeoutExpired as exc:
        out, err = (v.decode(errors="replace") if isinstance(v, bytes)
                    else v or "" for v in (exc.stdout, exc.stderr))
        pytest.fail(f"{name} did not finish within {timeout} s (a hang?)\n"
                    f"{out[-3000:]}\n{err[-6000:]}")
    out = proc.stdout + proc.stderr
    assert "Fatal Python error" not in out, out[-8000:]
    assert proc.returncode == 0 and "CHILD-DONE" in proc.stdout, (
        f"{name} failed (exit code {proc.returncode}):\n{out[-8000:]}")
    return proc.stdout


# Every property of this module, in definition order.
PROPERTIES = [name for name in list(globals()) if name.startswith("prop_")]


@pytest.mark.parametrize("name", PROPERTIES)
def test_property(name):
    if os.environ.get("CNNKIT_FUZZ_INPROCESS") == "1":
        hypothesis.configuration.set_hypothesis_home_dir(HYPOTHESIS_HOME)
        globals()[name]()
    else:
        run_in_child(name)


def test_extreme_cases_in_a_child_process():
    """Extreme calls run in a child: each gives its allowed outcome (a
    result, or the named exception) and the interpreter survives them all."""
    out = run_in_child("run_extreme_cases", timeout=120)
    line = next(s for s in out.splitlines()
                if s.startswith("EXTREME-RESULTS "))
    outcomes = json.loads(line.split(" ", 1)[1])
    wrong = {name: (outcomes.get(name), sorted(allowed))
             for name, _, allowed in EXTREME
             if outcomes.get(name) not in allowed}
    assert not wrong, f"unexpected outcomes (got, allowed): {wrong}"
