"""Losses: softmax and softmax_cross_entropy (with sample weights and label
smoothing) -- cnnkit.functional against cnnkit.reference (over dtypes,
thread counts and memory layouts), finite differences, the conventions
(logits of any magnitude, label dtypes, dtype promotion), the reference
against hand formulas and PyTorch, the documented errors, and fuzzing."""
import math
import re

import numpy as np
import pytest
from hypothesis import strategies as st

from cnnkit import functional as F
from cnnkit import reference as ref

import fuzzing
from fuzzing import broadcast_ones as _bcast, zeros as _z
import helpers
from fuzzing import (BAD_DTYPES as FUZZ_BAD_DTYPES, LAYOUTS as FUZZ_LAYOUTS,
                     Case, arrays, bad_array, bad_values, design_dtype, f64,
                     assert_result, fuzz_property, in_layout)
from helpers import (LAYOUTS, OUT_ARRAY_FAULTS, assert_same_specials,
                     check_kernel_out, check_op, numerical_gradient, require,
                     special_values)


def _f64(*arrays):
    return [None if a is None else np.asarray(a, dtype=np.float64)
            for a in arrays]


def _scaled(scale):
    """Standard normal values times ``scale`` (logits far from 0)."""
    def draw(rng, shape):
        return rng.standard_normal(shape) * scale
    return draw


# ==========================================================================
# softmax against the reference
# ==========================================================================
SOFTMAX_SHAPES = [(1, 1), (1, 5), (4, 3), (7, 10), (3, 257), (6,)]


@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=str)
def test_softmax_matches_reference(shape):
    check_op("softmax", [shape], values=_scaled(5))


@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=str)
def test_softmax_rows_sum_to_one(rng, dtype, shape):
    z = (rng.standard_normal(shape) * 5).astype(dtype)
    p = F.softmax(z)
    np.testing.assert_allclose(p.astype(np.float64).sum(axis=-1), 1.0,
                               rtol=0, atol=10 * np.finfo(dtype).eps)
    assert np.all(p >= 0)


def test_softmax_in_every_layout():
    check_op("softmax", [(5, 4)], values=_scaled(3), layouts=LAYOUTS)
    check_op("softmax", [(5,)], values=_scaled(3), layouts=LAYOUTS)


def test_softmax_parallel_size_matches_reference():
    check_op("softmax", [(300, 70)], values=_scaled(5), layouts=["C"])


def test_softmax_dtype_promotion(rng, assert_close):
    zi = rng.integers(-3, 4, (3, 4))
    assert_close(F.softmax(zi), ref.softmax(*_f64(zi)), np.float64)
    assert_close(F.softmax(zi.astype(np.float16)), ref.softmax(*_f64(zi)),
                 np.float32, n_terms=100)


def test_softmax_large_logits(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, 1e4]],
                 dtype=dtype)
    p = F.softmax(z)
    assert np.all(np.isfinite(p))
    np.testing.assert_array_equal(p[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(p[1:], 1 / 3, rtol=4 * np.finfo(dtype).eps)


# ==========================================================================
# softmax cross-entropy against the reference
# ==========================================================================
XENT_CASES = [(1, 1), (1, 4), (5, 3), (8, 10), (3, 300)]


@pytest.mark.parametrize("N,C", XENT_CASES)
def test_softmax_cross_entropy_matches_reference(N, C):
    labels = np.random.default_rng(N * C).integers(0, C, N)
    check_op("softmax_cross_entropy", [(N, C)], values=_scaled(4),
             labels=labels)


@pytest.mark.parametrize("N,C", XENT_CASES)
def test_softmax_cross_entropy_gradient_is_softmax_minus_onehot(
        rng, dtype, assert_close, N, C):
    z = (rng.standard_normal((N, C)) * 4).astype(dtype)
    labels = rng.integers(0, C, N)
    _, grad = F.softmax_cross_entropy(z, labels)
    # (softmax - onehot) / N, rows sum to 0
    onehot = np.eye(C)[labels]
    assert_close(grad, (ref.softmax(z.astype(np.float64)) - onehot) / N,
                 dtype, n_terms=C)


def test_softmax_cross_entropy_in_every_layout():
    labels = np.array([0, 3, 1, 1, 2, 0])
    check_op("softmax_cross_entropy", [(6, 4)], values=_scaled(2),
             layouts=LAYOUTS, labels=labels)
    check_op("softmax_cross_entropy", [(6, 4)], values=_scaled(2),
             layouts=LAYOUTS, labels=labels,
             sample_weight=np.array([1.0, 0.5, 0.0, 2.0, 1.0, 3.0]))


def test_softmax_cross_entropy_parallel_size_matches_reference():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 70, 300)
    check_op("softmax_cross_entropy", [(300, 70)], values=_scaled(4),
             layouts=["C"], labels=labels)
    check_op("softmax_cross_entropy", [(300, 70)], values=_scaled(4),
             layouts=["C"], labels=labels, sample_weight=rng.random(300))


def test_softmax_cross_entropy_layouts_and_label_dtypes(rng, dtype, to_layout,
                                                        layout, assert_close):
    z = to_layout((rng.standard_normal((6, 4)) * 2).astype(dtype), layout)
    labels = to_layout(rng.integers(0, 4, 6), layout)
    eloss, egrad = ref.softmax_cross_entropy(*_f64(z), np.array(labels))
    for lab in (labels, np.array(labels, dtype=np.uint8),
                np.array(labels, dtype=np.int32), list(np.array(labels))):
        loss, grad = F.softmax_cross_entropy(z, lab)
        assert type(loss) is dtype.type
        assert_close(np.asarray(loss)[None], [eloss], dtype, n_terms=4)
        assert_close(grad, egrad, dtype, n_terms=4)


def test_softmax_cross_entropy_integer_logits_give_float64():
    z = np.array([[2, 1, 0], [0, 3, -1]])
    loss, grad = F.softmax_cross_entropy(z, [0, 2])
    assert type(loss) is np.float64 and grad.dtype == np.float64
    eloss, egrad = ref.softmax_cross_entropy(z.astype(np.float64), [0, 2])
    np.testing.assert_allclose(loss, eloss, rtol=1e-14)
    np.testing.assert_allclose(grad, egrad, rtol=1e-13, atol=1e-16)


def test_softmax_cross_entropy_extreme_logits(dtype):
    z = np.array([[1e4, -1e4, 0.0],
                  [1e4, -1e4, 0.0],
                  [-1e4, -1e4, -1e4],
                  [-1e4, -1e4 + 1.0, -1e4 - 1.0]], dtype=dtype)
    labels = np.array([0, 1, 2, 1])
    loss, grad = F.softmax_cross_entropy(z, labels)
    assert type(loss) is dtype.type and grad.dtype == dtype
    assert np.isfinite(loss) and np.all(np.isfinite(grad))

    def lse(row):  # by hand, around the row maximum
        m = max(row)
        return m + math.log(sum(math.exp(v - m) for v in row))

    rows = [[float(v) for v in r] for r in z]
    expected = sum(lse(r) - r[y] for r, y in zip(rows, labels)) / 4
    assert expected == pytest.approx((0.0 + 2e4 + math.log(3.0) + math.log(
        1.0 + math.exp(-1.0) + math.exp(-2.0))) / 4, rel=1e-15)
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(float(loss), expected, rtol=rtol)

    # softmax(z) - onehot, with each softmax formed from z - max(z), which
    # is exact here; float64 allows a few hundred ulps at most
    rtol = 1e-6 if dtype == np.float32 else 1e-13

    e = np.exp([-1.0, 0.0, -2.0])
    expected_grad = np.array([[0.0, 0.0, 0.0],
                              [1.0, -1.0, 0.0],
                              [1 / 3, 1 / 3, -2 / 3],
                              e / e.sum() - [0.0, 1.0, 0.0]]) / 4
    np.testing.assert_allclose(grad, expected_grad, rtol=rtol,
                               atol=rtol * 1e-2)


@pytest.mark.parametrize("shift", [0.0, 1e4, -1e4])
@pytest.mark.parametrize("label", [0, 1, 2])
def test_softmax_cross_entropy_exact_for_shifted_logits(dtype, shift, label):
    # logits of magnitude 1e4 whose differences are small integers (exactly
    # representable): loss and gradient are those of the unshifted logits
    base = [0.0, -1.0, -2.0]
    z = (np.array([base]) + shift).astype(dtype)
    assert np.array_equal(z.astype(np.float64) - shift, [base])
    lse = math.log(1.0 + math.exp(-1.0) + math.exp(-2.0))  # by hand
    expected = lse - base[label]
    loss, grad = F.softmax_cross_entropy(z, [label])
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    assert type(loss) is dtype.type
    np.testing.assert_allclose(float(loss), expected, rtol=rtol)
    p = np.exp(np.array(base) - lse)
    np.testing.assert_allclose(grad[0], p - np.eye(3)[label], rtol=rtol)
    np.testing.assert_allclose(F.softmax(z)[0], p, rtol=rtol)


def test_softmax_cross_entropy_perfect_prediction_is_zero(dtype):
    z = np.array([[50.0, -50.0], [-50.0, 50.0]], dtype=dtype)
    loss, grad = F.softmax_cross_entropy(z, [0, 1])
    assert loss == 0 or abs(loss) < 1e-30
    assert np.all(np.abs(grad) < 1e-30)


def test_softmax_cross_entropy_finite_differences(rng, numerical_gradient,
                                                  assert_grad_close):
    z = rng.standard_normal((5, 4)) * 3
    labels = rng.integers(0, 4, 5)
    _, grad = F.softmax_cross_entropy(z, labels)
    num = numerical_gradient(
        lambda a: F.softmax_cross_entropy(a, labels)[0], z, 1e-5)
    assert_grad_close(num, grad)


def test_softmax_cross_entropy_sample_weight_matches_reference(rng):
    z = rng.standard_normal((9, 5))
    y = rng.integers(0, 5, 9)
    w = rng.random(9) * 3
    w[2] = 0.0
    loss, grad = F.softmax_cross_entropy(z, y, w)
    ref_loss, ref_grad = ref.softmax_cross_entropy(z, y, w)
    assert loss == pytest.approx(ref_loss, rel=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-15)
    assert not grad[2].any()
    # weights as repetitions
    reps = np.array([1, 2, 0, 1, 3, 1, 1, 2, 1])
    rl, _ = F.softmax_cross_entropy(np.repeat(z, reps, 0), np.repeat(y, reps))
    assert F.softmax_cross_entropy(z, y, reps)[0] == pytest.approx(rl, rel=1e-14)
    # all-zero weights give zero loss and gradient
    loss0, grad0 = F.softmax_cross_entropy(z, y, np.zeros(9))
    assert loss0 == 0 and not grad0.any()
    with pytest.raises(ValueError, match="sample_weight"):
        F.softmax_cross_entropy(z, y, -w)
    with pytest.raises(ValueError, match="sample_weight"):
        F.softmax_cross_entropy(z, y, w[:-1])


def test_softmax_cross_entropy_exact_for_logits_of_1e4_and_1e30():
    """float64: loss and gradient are exact for logits of 1e4, -1e4 and
    -1e30 (log-sum-exp around the row maximum), and match PyTorch."""
    z = np.array([[0.0, -1e30], [1e4, 0.0], [-1e30, -1e30],
                  [-1e4, -1e4], [1e4, -1e4]])
    labels = np.array([1, 1, 0, 1, 0])
    loss, grad = F.softmax_cross_entropy(z, labels)
    per_row = [1e30, 1e4, math.log(2.0), math.log(2.0), 0.0]
    assert loss == pytest.approx(sum(per_row) / 5, rel=2**-52)
    expected = np.array([[1.0, -1.0], [1.0, -1.0], [-0.5, 0.5],
                         [0.5, -0.5], [0.0, 0.0]]) / 5
    np.testing.assert_array_equal(grad, expected)
    for row, lab, value in zip(z, labels, per_row):
        l1, g1 = F.softmax_cross_entropy(row[None], [lab])
        assert l1 == value
    l32, g32 = F.softmax_cross_entropy(np.float32([[0.0, -1e30]]), [1])
    assert l32 == np.float32(-1e30) * -1 and g32.tolist() == [[1.0, -1.0]]
    try:
        import torch
    except ImportError:
        return
    tl = torch.nn.functional.cross_entropy(torch.from_numpy(z),
                                           torch.from_numpy(labels))
    assert float(tl) == pytest.approx(float(loss), rel=1e-15)


# ==========================================================================
# empty batches, batches
# ==========================================================================
def test_softmax_zero_size_batch(dtype):
    assert F.softmax(np.zeros((0, 3), dtype)).shape == (0, 3)


@pytest.mark.parametrize("N", [2, 9])
def test_softmax_does_not_depend_on_batch(rng, dtype, N):
    z = (rng.standard_normal((N * 300, 70)) * 4).astype(dtype)
    s = F.softmax(z)
    for i in sorted({0, N // 2, N - 1}):
        j = i * 300
        assert np.array_equal(F.softmax(z[j:j + 1]), s[j:j + 1])
        assert np.array_equal(F.softmax(z[j]), s[j])


# ==========================================================================
# cnnkit.reference against hand formulas
# ==========================================================================
def test_reference_softmax_cross_entropy_gradient_finite_differences():
    rng = np.random.default_rng(15)
    z = rng.standard_normal((5, 4)) * 3
    labels = rng.integers(0, 4, size=5)
    loss, grad = ref.softmax_cross_entropy(z, labels)
    num = numerical_gradient(
        lambda a: float(ref.softmax_cross_entropy(a, labels)[0]), z, 1e-5)
    scale = max(1.0, float(np.abs(num).max()))
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8 * scale)


def test_reference_softmax_rows_sum_to_one():
    rng = np.random.default_rng(16)
    z = rng.standard_normal((6, 5)) * 10
    p = ref.softmax(z)
    assert p.shape == z.shape
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(p, np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(ref.log_softmax(z), np.log(p), rtol=1e-12, atol=1e-12)
    p32 = ref.softmax(z.astype(np.float32))
    assert p32.dtype == np.float32
    np.testing.assert_allclose(p32.sum(axis=1), 1.0, rtol=1e-6)


def test_reference_softmax_large_logits():
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
    p = ref.softmax(z)
    assert np.all(np.isfinite(p))
    np.testing.assert_array_equal(p[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(p[1], [1 / 3] * 3, rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reference_softmax_cross_entropy_extreme_logits(dtype):
    z = np.array(
        [[1e4, -1e4, 0.0],
         [1e4, -1e4, 0.0],
         [-1e4, -1e4, -1e4],
         [-1e4, -1e4 + 1.0, -1e4 - 1.0]],
        dtype=dtype,
    )
    labels = np.array([0, 1, 2, 1])
    loss, grad = ref.softmax_cross_entropy(z, labels)
    assert isinstance(loss, dtype)
    assert grad.dtype == dtype
    assert np.isfinite(loss) and np.all(np.isfinite(grad))

    # hand formula per row: logsumexp(z) - z[y]
    row0 = 0.0
    row1 = 2e4
    row2 = math.log(3.0)
    row3 = math.log(math.exp(-1.0) + 1.0 + math.exp(-2.0))
    expected = (row0 + row1 + row2 + row3) / 4
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(loss, expected, rtol=rtol)

    expected_grad = np.zeros((4, 3))
    expected_grad[0] = [0.0, 0.0, 0.0]
    expected_grad[1] = [1.0, -1.0, 0.0]
    expected_grad[2] = [1 / 3, 1 / 3, -2 / 3]
    e = np.exp([-1.0, 0.0, -2.0])
    expected_grad[3] = e / e.sum() - [0.0, 1.0, 0.0]
    np.testing.assert_allclose(grad, expected_grad / 4, rtol=rtol, atol=rtol * 1e-2)


def test_reference_softmax_cross_entropy_values():
    z = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]])
    labels = [0, 2]
    loss, grad = ref.softmax_cross_entropy(z, labels)
    lse = np.log(np.exp(z).sum(axis=1))
    expected = np.mean(lse - z[[0, 1], labels])
    np.testing.assert_allclose(loss, expected, rtol=1e-14)
    p = np.exp(z - lse[:, None])
    onehot = np.eye(3)[labels]
    np.testing.assert_allclose(grad, (p - onehot) / 2, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-15)
    assert ref.softmax_cross_entropy(z.astype(np.int64), labels)[0].dtype == np.float64


def test_reference_softmax_inputs_are_not_modified():
    rng = np.random.default_rng(17)
    fx = rng.standard_normal((3, 5))
    fg = rng.standard_normal((3, 2))
    labels = np.array([1, 0, 1])
    arrays = [fx, fg, labels]
    copies = [a.copy() for a in arrays]
    ref.softmax(fx)
    ref.log_softmax(fx)
    ref.softmax_cross_entropy(fg, labels)
    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c)


# ==========================================================================
# documented errors
# ==========================================================================
Z = np.zeros((2, 3))
LAB = np.array([0, 2])

# (function, positional arguments, index of the argument made bad, its name)
ARRAY_ARGS = [
    (F.softmax, (Z,), 0, "logits"),
    (F.softmax_cross_entropy, (Z, LAB), 0, "logits"),
]


test_bad_dtype_is_type_error_naming_argument_and_dtype = \
    helpers.bad_dtype_test(ARRAY_ARGS)


@pytest.mark.parametrize("z", [np.zeros((2, 3, 4)), np.zeros(())])
def test_softmax_wrong_ndim(z):
    with pytest.raises(ValueError, match=r"\blogits must be"):
        F.softmax(z)


@pytest.mark.parametrize("z", [np.zeros((2, 0)), np.zeros(0)])
def test_softmax_needs_a_class(z):
    with pytest.raises(ValueError, match=r"\blogits\b"):
        F.softmax(z)


@pytest.mark.parametrize("labels,bad", [([0, 3], "3"), ([-1, 0], "-1"),
                                        ([0, 100], "100"),
                                        (np.array([0, 255], np.uint8), "255"),
                                        (np.array([0, 2 ** 63 + 5], np.uint64),
                                         str(2 ** 63 + 5))])
def test_softmax_cross_entropy_labels_out_of_range(labels, bad):
    with pytest.raises(ValueError,
                       match=rf"labels must lie in \[0, 3\).*got {bad}$"):
        F.softmax_cross_entropy(Z, labels)


@pytest.mark.parametrize("labels,dt", [
    (np.array([0.0, 2.0]), "float64"),
    (np.array([0.5, 1.0]), "float64"),
    (np.array([0.0, 1.0], np.float32), "float32"),
    (np.array([True, False]), "bool"),
    (np.array(["0", "1"]), "<U1"),
    (np.array([0, 1], dtype=object), "object"),
    (np.array([0, 1], dtype=np.complex128), "complex128"),
])
def test_softmax_cross_entropy_non_integer_labels(labels, dt):
    with pytest.raises(TypeError,
                       match=rf"labels must be integer class indices, got "
                             rf"dtype {re.escape(dt)}"):
        F.softmax_cross_entropy(Z, labels)


@pytest.mark.parametrize("labels,shape", [([0, 1, 2], r"\(3,\)"),
                                          ([[0, 1]], r"\(1, 2\)"),
                                          (1, r"\(\)"),
                                          ([[0], [1]], r"\(2, 1\)"),
                                          (np.zeros(0, int), r"\(0,\)")])
def test_softmax_cross_entropy_labels_of_wrong_shape(labels, shape):
    with pytest.raises(ValueError,
                       match=rf"labels must have shape \(2,\) for logits "
                             rf"shape \(2, 3\), got {shape}"):
        F.softmax_cross_entropy(Z, labels)


@pytest.mark.parametrize("z", [np.zeros(3), np.zeros((2, 3, 1))])
def test_softmax_cross_entropy_logits_wrong_ndim(z):
    with pytest.raises(ValueError, match=r"\blogits must be \(N, C\)"):
        F.softmax_cross_entropy(z, [0, 1])


@pytest.mark.parametrize("z,labels", [(np.zeros((0, 3)), np.zeros(0, int)),
                                      (np.zeros((2, 0)), [0, 0])])
def test_softmax_cross_entropy_needs_a_row_and_a_class(z, labels):
    with pytest.raises(ValueError, match=r"\blogits need at least one row"):
        F.softmax_cross_entropy(z, labels)


# The compiled kernels write into arrays the layers keep between training
# steps (``out=``); an unsuitable one is refused before any work.
@pytest.mark.parametrize("bad", OUT_ARRAY_FAULTS)
def test_kernel_out_arrays_are_checked(bad):
    from cnnkit import _kernels as K
    check_kernel_out("softmax_cross_entropy", "grad_out", (2, 3),
                     lambda o: K.softmax_cross_entropy(Z.astype(np.float32),
                                                       LAB, grad_out=o), bad)


# ==========================================================================
# NaN and Inf as in PyTorch
# ==========================================================================
@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
def test_softmax_nan_and_inf_propagate_as_in_pytorch(dt):
    torch = require("torch")
    rtol = 1e-4 if dt == np.float32 else 1e-10
    z = special_values(np.random.default_rng(7), (12, 4), dt, frac=0.2)
    assert_same_specials(F.softmax(z), torch.softmax(torch.from_numpy(z),
                                                     1).numpy(), rtol,
                         "softmax")


# ==========================================================================
# label smoothing
# ==========================================================================
SMOOTHING = [0.0, 0.1, 0.5, 1.0]


@pytest.mark.parametrize("eps", SMOOTHING)
@pytest.mark.parametrize("N,C", XENT_CASES)
def test_label_smoothing_matches_reference(N, C, eps):
    rng = np.random.default_rng(N * C)
    labels = rng.integers(0, C, N)
    check_op("softmax_cross_entropy", [(N, C)], values=_scaled(4),
             labels=labels, label_smoothing=eps)
    check_op("softmax_cross_entropy", [(N, C)], values=_scaled(4),
             labels=labels, label_smoothing=eps,
             sample_weight=rng.random(N) * 2)


def test_label_smoothing_in_every_layout_and_in_parallel():
    labels = np.array([0, 3, 1, 1, 2, 0])
    check_op("softmax_cross_entropy", [(6, 4)], values=_scaled(2),
             layouts=LAYOUTS, labels=labels, label_smoothing=0.2,
             sample_weight=np.array([1.0, 0.5, 0.0, 2.0, 1.0, 3.0]))
    rng = np.random.default_rng(1)
    check_op("softmax_cross_entropy", [(300, 70)], values=_scaled(4),
             layouts=["C"], labels=rng.integers(0, 70, 300),
             label_smoothing=0.3, sample_weight=rng.random(300))


@pytest.mark.parametrize("eps", [0.1, 0.7, 1.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_label_smoothing_finite_differences(eps, weighted):
    rng = np.random.default_rng(5)
    z = rng.standard_normal((5, 4)) * 3
    labels = rng.integers(0, 4, 5)
    w = rng.random(5) if weighted else None
    for mod in (F, ref):
        _, grad = mod.softmax_cross_entropy(z, labels, w, label_smoothing=eps)
        num = numerical_gradient(lambda a: mod.softmax_cross_entropy(
            a, labels, w, label_smoothing=eps)[0], z, 1e-5)
        np.testing.assert_allclose(grad, num, atol=1e-8)


def test_label_smoothing_by_hand(dtype):
    """Two classes, p = (1/4, 3/4): the target of label 1 with eps is
    (eps/2, 1 - eps/2)."""
    z = np.array([[0.0, np.log(3.0)]], dtype=dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-15
    for mod in (F, ref):
        for eps in (0.0, 0.2, 1.0):
            loss, grad = mod.softmax_cross_entropy(z, [1],
                                                   label_smoothing=eps)
            t = np.array([eps / 2, 1 - eps / 2])
            expected = -(t[0] * np.log(0.25) + t[1] * np.log(0.75))
            assert loss.dtype == dtype
            assert abs(float(loss) - expected) < tol * 4
            np.testing.assert_allclose(grad[0], [0.25, 0.75] - t, atol=tol)
    # eps = 1: the uniform target, the label no longer matters
    z = np.random.default_rng(0).standard_normal((3, 5))
    a = F.softmax_cross_entropy(z, [0, 1, 2], label_smoothing=1.0)
    b = F.softmax_cross_entropy(z, [4, 4, 0], label_smoothing=1.0)
    assert a[0] == pytest.approx(b[0], rel=1e-14)
    np.testing.assert_allclose(a[1], b[1], atol=1e-16)
    # rows of the gradient still sum to 0
    np.testing.assert_allclose(a[1].sum(axis=1), 0, atol=1e-16)


def test_label_smoothing_zero_keeps_the_bits(dtype):
    rng = np.random.default_rng(2)
    z = (rng.standard_normal((40, 7)) * 5).astype(dtype)
    y = rng.integers(0, 7, 40)
    w = rng.random(40)
    for sw in (None, w):
        plain = F.softmax_cross_entropy(z, y, sw)
        for zero in (0.0, 0, np.float32(0.0), False + 0):
            smoothed = F.softmax_cross_entropy(z, y, sw,
                                               label_smoothing=zero)
            assert plain[0].tobytes() == smoothed[0].tobytes()
            assert plain[1].tobytes() == smoothed[1].tobytes()


def test_label_smoothing_with_weights_is_the_weighted_mean():
    """Sample weights combine with smoothing as cnnkit's weighted mean:
    sum_n w_n l_n / sum_n w_n over the smoothed per-sample losses."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((9, 5))
    y = rng.integers(0, 5, 9)
    w = rng.random(9) * 3
    w[2] = 0.0
    per = np.array([F.softmax_cross_entropy(z[i:i + 1], y[i:i + 1],
                                            label_smoothing=0.3)[0]
                    for i in range(9)])
    loss, grad = F.softmax_cross_entropy(z, y, w, label_smoothing=0.3)
    assert loss == pytest.approx((w * per).sum() / w.sum(), rel=1e-13)
    assert not grad[2].any()
    # weights as repetitions
    reps = np.array([1, 2, 0, 1, 3, 1, 1, 2, 1])
    rl, _ = F.softmax_cross_entropy(np.repeat(z, reps, 0),
                                    np.repeat(y, reps), label_smoothing=0.3)
    assert F.softmax_cross_entropy(z, y, reps, label_smoothing=0.3)[0] == \
        pytest.approx(rl, rel=1e-14)
    loss0, grad0 = F.softmax_cross_entropy(z, y, np.zeros(9),
                                           label_smoothing=0.3)
    assert loss0 == 0 and not grad0.any()


@pytest.mark.parametrize("dt", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("eps", SMOOTHING)
def test_label_smoothing_matches_torch(dt, eps):
    """cross_entropy(..., label_smoothing=eps): loss and gradient, plain
    and with sample weights (torch's per-sample losses in cnnkit's
    weighted mean), logits of 1e4 and -inf included."""
    torch = require("torch")
    tF = torch.nn.functional
    rtol = 1e-5 if dt == np.float32 else 1e-12
    rng = np.random.default_rng(11)
    z = (rng.standard_normal((12, 6)) * 3).astype(dt)
    z[3] += 1e4
    z[4, 2] = -np.inf
    y = rng.integers(0, 6, 12)
    y[4] = 0
    w = rng.random(12)
    for sw in (None, w):
        tz = torch.from_numpy(z).requires_grad_(True)
        per = tF.cross_entropy(tz, torch.from_numpy(y), reduction="none",
                               label_smoothing=eps)
        tw = torch.ones(12, dtype=per.dtype) if sw is None else \
            torch.from_numpy(sw.astype(dt))
        tl = (per * tw).sum() / tw.sum()
        tl.backward()
        loss, grad = F.softmax_cross_entropy(z, y, sw, label_smoothing=eps)
        assert float(loss) == pytest.approx(tl.item(), rel=rtol * 10)
        np.testing.assert_allclose(grad, tz.grad.numpy(), rtol=rtol * 10,
                                   atol=rtol)
    # the special values land where torch puts them (a label of logit
    # -inf: inf, and with eps = 1, 0 * inf = NaN)
    zs = special_values(rng, (12, 4), dt, frac=0.2)
    ys = rng.integers(0, 4, 12)
    per = tF.cross_entropy(torch.from_numpy(zs), torch.from_numpy(ys),
                           reduction="none", label_smoothing=eps).numpy()
    for i in range(12):
        ours = F.softmax_cross_entropy(zs[i:i + 1], ys[i:i + 1],
                                       label_smoothing=eps)[0]
        with np.errstate(invalid="ignore"):
            theirs = ref.softmax_cross_entropy(
                zs[i:i + 1].astype(np.float64), ys[i:i + 1],
                label_smoothing=eps)[0]
        for value in (ours, theirs):
            assert_same_specials(np.array([value], np.float64),
                                 per[i:i + 1].astype(np.float64),
                                 rtol * 10, f"row {i}")


@pytest.mark.parametrize("bad,exc,pattern", [
    (-0.1, ValueError, r"label_smoothing must be in \[0, 1\], got -0\.1"),
    (1.5, ValueError, r"label_smoothing must be in \[0, 1\], got 1\.5"),
    (float("nan"), ValueError, r"label_smoothing must be in \[0, 1\]"),
    (float("inf"), ValueError, r"label_smoothing must be in \[0, 1\]"),
    (2, ValueError, r"label_smoothing must be in \[0, 1\], got 2"),
    ("0.1", TypeError, r"label_smoothing must be a number in \[0, 1\], "
                       r"got '0\.1'"),
    (None, TypeError, r"label_smoothing must be a number"),
    (True, TypeError, r"label_smoothing must be a number"),
    ([0.1], TypeError, r"label_smoothing must be a number"),
    (np.array(0.1), TypeError, r"label_smoothing must be a number"),
    (0.1j, TypeError, r"label_smoothing must be a number"),
])
def test_label_smoothing_errors(bad, exc, pattern):
    with pytest.raises(exc, match=r"softmax_cross_entropy: " + pattern):
        F.softmax_cross_entropy(np.zeros((2, 3)), [0, 1],
                                label_smoothing=bad)


def test_label_smoothing_accepts_numpy_and_int_numbers():
    z = np.random.default_rng(0).standard_normal((3, 4))
    a = F.softmax_cross_entropy(z, [0, 1, 2], label_smoothing=0.25)
    for v in (np.float64(0.25), np.float32(0.25)):
        b = F.softmax_cross_entropy(z, [0, 1, 2], label_smoothing=v)
        assert a[0] == b[0]
    c = F.softmax_cross_entropy(z, [0, 1, 2], label_smoothing=np.int64(1))
    d = F.softmax_cross_entropy(z, [0, 1, 2], label_smoothing=1.0)
    assert c[0] == d[0]


# ==========================================================================
# fuzzing (see fuzzing.py)
# ==========================================================================
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
        ep = ref.softmax(f64(za, dt).reshape(-1, c)).reshape(shape)
        assert_result(result, ep, dt, ep, c + 4)

    return Case((z,), {}, expect, errors, why, oracle)


prop_softmax = fuzz_property(F.softmax, softmax_cases())


@st.composite
def xent_cases(draw):
    n, c = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    z = draw(arrays((n, c)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n).astype(draw(st.sampled_from(
        ["int64", "int32", "int8", "uint8", "uint64"])))
    labels = in_layout(labels, draw(st.sampled_from(FUZZ_LAYOUTS)))
    sw = None
    if draw(st.booleans()):
        sw = draw(arrays((n,), kinds=("int", "normal")))
        sw = np.abs(np.asarray(sw)) if np.asarray(sw).dtype.kind in "fi" \
            else sw
    eps = draw(st.sampled_from([0.0] * 3 + [0.1, 0.5, 1.0, 1, np.float32(
        0.25)]))
    expect, errors, why = "ok", (), ""
    mutation = draw(st.sampled_from([None] * 5 + [
        "label_low", "label_high", "label_dtype", "label_shape", "empty",
        "logits_ndim", "weight_value", "weight_shape", "weight_dtype",
        "smoothing_value", "smoothing_type"]))
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
        elif mutation == "smoothing_value":
            eps = draw(st.sampled_from([-0.1, 1.0001, np.nan, np.inf, 2]))
        elif mutation == "smoothing_type":
            eps, errors = draw(st.sampled_from(["0.1", None, True,
                                                [0.1]])), (TypeError,)
        else:
            sw, errors = bad_values((n,), draw(st.sampled_from(
                [d for d in FUZZ_BAD_DTYPES if d != "longdouble"]))), \
                (TypeError,)

    def oracle(result):
        za = np.asarray(z)
        dt = design_dtype(za)
        lab = np.asarray(labels).astype(np.int64)
        w = None if sw is None else np.asarray(sw).astype(np.float64)
        z64 = f64(za, dt)
        eloss, egrad = ref.softmax_cross_entropy(z64, lab, w,
                                                 label_smoothing=eps)
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

    return Case((z, labels), {"sample_weight": sw, "label_smoothing": eps},
                expect, errors, why, oracle)


prop_softmax_cross_entropy = fuzz_property(F.softmax_cross_entropy,
                                           xent_cases())


# (name, call, allowed outcomes); outcomes: "ok" or exception class names

EXTREME = [
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


test_property, test_extreme_cases_in_a_child_process = \
    fuzzing.family_tests(globals())
