"""Property-based fuzzing of the ``cnnkit.functional`` entry points: the
property, the input generators and the runner (each op family's test module
defines its own properties and extreme calls with these).

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

A test module defines ``prop_<name> = fuzz_property(fn, strategy)`` (or a
``@FUZZ @given(...)`` function named ``prop_*``) and runs each with
``run_property(globals(), name)``; a list of extreme calls ``[(name, call,
allowed outcomes)]`` runs with ``check_extreme(globals(), "EXTREME")``.
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
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

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


def fuzz_property(fn, cases):
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


def bad_values(shape, name):
    if name == "object":
        return np.full(shape, 1.0, dtype=object)
    if name == "str":
        return np.full(shape, "1.5")
    if name == "datetime64":
        return np.zeros(shape, "datetime64[s]")
    return np.ones(shape, np.dtype(name))


def in_layout(a, layout):
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
    return in_layout(a, layout)


def bad_array(draw, shape):
    return bad_values(shape, draw(st.sampled_from(BAD_DTYPES)))


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


def hp_expectation(cats):
    """(expect, errors, why) for hyperparameter categories: a wrong type is
    a TypeError, a bad value a ValueError; both at once may give either."""
    bad = {c for c in cats if c in ("bad_type", "bad_value")}
    if not bad:
        return "ok", (ValueError, TypeError), ""
    errors = tuple(sorted({TypeError if c == "bad_type" else ValueError
                           for c in bad}, key=lambda e: e.__name__))
    return "error", errors, "bad hyperparameter: " + "+".join(sorted(bad))


def conv_geometry(h, w, r, s, stride, pad, dil):
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


def pool_out(h, w, kernel_p, stride_p, pad_p, ceil_mode=False):
    if ceil_mode:
        # rounded up, less a last window starting in the bottom (right)
        # padding (PyTorch's rule)
        out = []
        for i, k, s, p in zip((h, w), kernel_p, stride_p, pad_p):
            o = (i + 2 * p - k + s - 1) // s + 1
            if o >= 1 and (o - 1) * s >= i + p:
                o -= 1
            if o < 1:
                raise ValueError("kernel leaves no window in the padded "
                                 "input")
            out.append(o)
        return tuple(out)
    if kernel_p[0] > h + 2 * pad_p[0] or kernel_p[1] > w + 2 * pad_p[1]:
        raise ValueError("kernel larger than the padded input")
    return ((h + 2 * pad_p[0] - kernel_p[0]) // stride_p[0] + 1,
            (w + 2 * pad_p[1] - kernel_p[1]) // stride_p[1] + 1)


# --------------------------------------------------------------------------
# running the properties in child processes
# --------------------------------------------------------------------------
_CHILD = r"""
import faulthandler, os, resource, runpy, sys
faulthandler.enable()
path, name, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, os.path.dirname(path))
if not os.environ.get("CNNKIT_SANITIZER"):
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
ns = runpy.run_path(path, run_name="cnnkit_fuzz_child")
target = ns[name]
if callable(target):
    target()
else:
    import fuzzing
    fuzzing.report_outcomes(target)
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


def run_in_child(path, name, timeout=CHILD_TIMEOUT):
    """Run the test module ``path`` in a fresh interpreter with a memory
    limit, then its global ``name``: a property is called, a list of extreme
    calls is run by ``report_outcomes``; return the child's stdout.  A
    crash, a hang, an uncaught exception or a failed property fails the
    calling test with the child's output."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, os.path.abspath(path), name,
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


def properties(namespace):
    """The names of the properties (``prop_*``) of a module's globals, in
    definition order."""
    return [name for name in list(namespace) if name.startswith("prop_")]


def run_property(namespace, name):
    """Run the property ``name`` of the test module whose globals are
    ``namespace``: in a child (see ``run_in_child``), or in this process
    under CNNKIT_FUZZ_INPROCESS=1."""
    if os.environ.get("CNNKIT_FUZZ_INPROCESS") == "1":
        hypothesis.configuration.set_hypothesis_home_dir(HYPOTHESIS_HOME)
        namespace[name]()
    else:
        run_in_child(namespace["__file__"], name)


def report_outcomes(cases):
    """Run the extreme calls ``[(name, call, allowed)]``; print one JSON
    object {name: outcome}, the outcome "ok" or the exception's class
    name."""
    outcomes = {}
    for name, call, _ in cases:
        try:
            call()
            outcomes[name] = "ok"
        except Exception as exc:   # noqa: BLE001 - reported to the parent
            outcomes[name] = type(exc).__name__ if not isinstance(
                exc, MemoryError) else "MemoryError"
    print("EXTREME-RESULTS " + json.dumps(outcomes), flush=True)


def check_extreme(namespace, name="EXTREME"):
    """The extreme calls ``namespace[name]`` run in a child: each gives its
    allowed outcome (a result, or the named exception) and the interpreter
    survives them all."""
    out = run_in_child(namespace["__file__"], name, timeout=120)
    line = next(s for s in out.splitlines()
                if s.startswith("EXTREME-RESULTS "))
    outcomes = json.loads(line.split(" ", 1)[1])
    wrong = {case: (outcomes.get(case), sorted(allowed))
             for case, _, allowed in namespace[name]
             if outcomes.get(case) not in allowed}
    assert not wrong, f"unexpected outcomes (got, allowed): {wrong}"


def family_tests(namespace, extreme="EXTREME"):
    """The fuzz tests of a test module: one per property (``prop_*``, each
    in a child process) and one of its extreme calls; the module assigns
    them to ``test_property`` and ``test_extreme_cases_in_a_child_process``.
    Without extreme calls the second is None."""
    @pytest.mark.parametrize("name", properties(namespace))
    def test_property(name):
        run_property(namespace, name)

    def test_extreme_cases_in_a_child_process():
        check_extreme(namespace, extreme)

    return (test_property,
            test_extreme_cases_in_a_child_process if extreme in namespace
            else None)


def zeros(*shape, dtype=np.float64):
    """Zeros of ``shape`` (the extreme calls' small arrays)."""
    return np.zeros(shape, dtype=dtype)


def broadcast_ones(shape, dtype=np.float32):
    """A read-only view of ``shape`` over one element: huge shapes for no
    memory."""
    return np.broadcast_to(np.ones((), dtype), shape)
