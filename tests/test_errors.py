"""Every documented error of cnnkit.functional: the exception type and a
message that names the offending argument."""
import re

import numpy as np
import pytest

from cnnkit import functional as F

X = np.zeros((2, 3, 5, 5))
W = np.zeros((4, 3, 3, 3))
G = np.zeros((2, 4, 3, 3))  # conv2d(X, W) output shape
FX = np.zeros((2, 3))
FW = np.zeros((4, 3))
FG = np.zeros((2, 4))
P = np.zeros((2, 3, 2, 2))  # max_pool2d(X, 2) output shape
PI = np.zeros((2, 3, 2, 2), dtype=np.int64)
Z = np.zeros((2, 3))
LAB = np.array([0, 2])

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

# (function, positional arguments, index of the argument made bad, its name)
ARRAY_ARGS = [
    (F.conv2d, (X, W), 0, "x"),
    (F.conv2d, (X, W), 1, "weight"),
    (F.conv2d, (X, W, np.zeros(4)), 2, "bias"),
    (F.conv2d_backward, (G, X, W), 0, "grad_out"),
    (F.conv2d_backward, (G, X, W), 1, "x"),
    (F.conv2d_backward, (G, X, W), 2, "weight"),
    (F.relu, (X,), 0, "x"),
    (F.relu_backward, (X, X), 0, "grad_out"),
    (F.relu_backward, (X, X), 1, "x"),
    (F.max_pool2d, (X, 2), 0, "x"),
    (F.max_pool2d_backward, (P, PI, X.shape), 0, "grad_out"),
    (F.dense, (FX, FW), 0, "x"),
    (F.dense, (FX, FW), 1, "weight"),
    (F.dense, (FX, FW, np.zeros(4)), 2, "bias"),
    (F.dense_backward, (FG, FX, FW), 0, "grad_out"),
    (F.dense_backward, (FG, FX, FW), 1, "x"),
    (F.dense_backward, (FG, FX, FW), 2, "weight"),
    (F.softmax, (Z,), 0, "logits"),
    (F.softmax_cross_entropy, (Z, LAB), 0, "logits"),
]


def _bad(a, dt):
    if np.dtype(dt).kind == "M":
        return np.zeros(a.shape, dtype=dt)
    if np.dtype(dt).kind in "US":
        return np.full(a.shape, "a", dtype=dt)
    return np.zeros(a.shape).astype(dt)


@pytest.mark.parametrize("dt,dt_name", BAD_DTYPES)
@pytest.mark.parametrize("fn,args,pos,name", ARRAY_ARGS,
                         ids=[f"{f.__name__}-{n}"
                              for f, _, _, n in ARRAY_ARGS])
def test_bad_dtype_is_type_error_naming_argument_and_dtype(fn, args, pos,
                                                           name, dt, dt_name):
    args = list(args)
    args[pos] = _bad(args[pos], dt)
    with pytest.raises(TypeError, match=re.escape(dt_name)) as info:
        fn(*args)
    assert re.search(rf"\b{name}\b", str(info.value)), str(info.value)


@pytest.mark.parametrize("fn,args,name", [
    (F.relu, (None,), "x"),
    (F.conv2d, (X, None), "weight"),
    (F.dense, ([[1, 2], [3]], FW), "x"),
])
def test_not_an_array_is_type_error(fn, args, name):
    with pytest.raises(TypeError, match=rf"\b{name}\b"):
        fn(*args)


# --------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------
def _kw_id(kwargs):
    return ",".join(f"{k}={getattr(v, 'shape', v)!r}"
                    for k, v in kwargs.items())


@pytest.mark.parametrize("fn", [F.conv2d, F.conv2d_backward])
@pytest.mark.parametrize("kwargs,exc,pattern", [
    # shapes
    (dict(x=np.zeros((2, 2, 5, 5))), ValueError,
     r"x has 2 channels.*weight expects 3"),
    (dict(x=np.zeros((1, 2, 3, 5, 5))), ValueError,
     r"\bx must be.*\(1, 2, 3, 5, 5\)"),
    (dict(x=np.zeros((5, 5))), ValueError, r"\bx must be.*\(5, 5\)"),
    (dict(x=np.zeros(5)), ValueError, r"\bx must be"),
    (dict(weight=np.zeros((3, 3))), ValueError, r"\bweight must be"),
    (dict(weight=np.zeros((4, 3, 3))), ValueError, r"\bweight must be"),
    (dict(weight=np.zeros((4, 3, 6, 3))), ValueError,
     r"kernel \(6, 3\).*larger than the padded input"),
    (dict(weight=np.zeros((4, 3, 8, 7)), padding=1), ValueError,
     r"kernel \(8, 7\).*padded input \(7, 7\)"),
    (dict(dilation=3), ValueError,
     r"kernel.*dilation.*larger than the padded"),
    (dict(x=np.zeros((2, 3, 0, 5))), ValueError, r"kernel.*padded input"),
    # stride
    (dict(stride=0), ValueError, r"\bstride must be positive"),
    (dict(stride=-1), ValueError, r"\bstride must be positive"),
    (dict(stride=(1, 0)), ValueError, r"\bstride must be positive"),
    (dict(stride=1.5), TypeError, r"\bstride must be an int"),
    (dict(stride=True), TypeError, r"\bstride must be an int"),
    (dict(stride=(1, np.bool_(True))), TypeError, r"\bstride must be an int"),
    (dict(stride="2"), TypeError, r"\bstride must be an int"),
    (dict(stride=(1, 2, 3)), ValueError, r"\bstride must be an int or a pair"),
    # dilation
    (dict(dilation=0), ValueError, r"\bdilation must be positive"),
    (dict(dilation=(-1, 1)), ValueError, r"\bdilation must be positive"),
    (dict(dilation=2.0), TypeError, r"\bdilation must be an int"),
    # padding
    (dict(padding=-1), ValueError, r"\bpadding must be >= 0"),
    (dict(padding=(0, -2)), ValueError, r"\bpadding must be >= 0"),
    (dict(padding="same", stride=2), ValueError,
     r"padding='same' needs stride 1"),
    (dict(padding="same", stride=(1, 2)), ValueError,
     r"padding='same' needs stride 1"),
    (dict(padding="full"), ValueError, r"\bpadding must be .*'full'"),
    (dict(padding=""), ValueError, r"\bpadding must be"),
    (dict(padding=1.0), TypeError, r"\bpadding must be an int"),
    (dict(padding=(1, 1, 1)), ValueError,
     r"\bpadding must be an int or a pair"),
], ids=lambda v: _kw_id(v) if isinstance(v, dict) else None)
def test_conv2d_argument_errors(fn, kwargs, exc, pattern):
    args = dict(x=X, weight=W)
    args.update(kwargs)
    x, w = args.pop("x"), args.pop("weight")
    with pytest.raises(exc, match=pattern):
        if fn is F.conv2d:
            fn(x, w, **args)
        else:
            fn(G, x, w, **args)


@pytest.mark.parametrize("bias", [np.zeros(3), np.zeros(5), np.zeros((4, 1)),
                                  np.zeros(()), np.zeros((1, 4))])
def test_conv2d_bias_of_wrong_shape(bias):
    with pytest.raises(ValueError,
                       match=r"bias must have shape \(4,\).*got"):
        F.conv2d(X, W, bias)


def test_conv2d_two_d_form_bias_must_be_one_value():
    with pytest.raises(ValueError, match=r"bias must have shape \(1,\)"):
        F.conv2d(np.zeros((3, 3)), np.zeros((2, 2)), np.zeros(2))


@pytest.mark.parametrize("g", [np.zeros((2, 4, 2, 2)), np.zeros((2, 3, 3, 3)),
                               np.zeros((1, 4, 3, 3)), np.zeros((4, 3, 3)),
                               np.zeros((2, 4, 3, 3, 1))])
def test_conv2d_backward_grad_out_of_wrong_shape(g):
    with pytest.raises(ValueError, match=r"grad_out must have .*shape"):
        F.conv2d_backward(g, X, W)


@pytest.mark.parametrize("bias", [1, 0, None, "yes", np.array(True)])
def test_conv2d_backward_bias_flag_must_be_bool(bias):
    with pytest.raises(TypeError, match=r"bias must be True or False"):
        F.conv2d_backward(G, X, W, bias=bias)


def test_conv2d_output_shape_errors():
    with pytest.raises(ValueError, match=r"kernel.*does not fit"):
        F.conv2d_output_shape((3, 3), 4)
    with pytest.raises(ValueError, match=r"\bstride must be positive"):
        F.conv2d_output_shape((5, 5), 3, stride=0)
    with pytest.raises(ValueError, match=r"padding='same' needs stride 1"):
        F.conv2d_output_shape((5, 5), 3, stride=2, padding="same")


# --------------------------------------------------------------------------
# relu
# --------------------------------------------------------------------------
@pytest.mark.parametrize("g", [np.zeros((3, 2)), np.zeros(6),
                               np.zeros((2, 3, 1)), np.zeros(())])
def test_relu_backward_grad_out_of_wrong_shape(g):
    with pytest.raises(ValueError,
                       match=r"grad_out must have the shape of x \(2, 3\)"):
        F.relu_backward(g, np.zeros((2, 3)))


# --------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------
@pytest.mark.parametrize("x,kwargs,exc,pattern", [
    (np.zeros(5), {}, ValueError, r"\bx must be .*\(5,\)"),
    (np.zeros((1, 2, 3, 5, 5)), {}, ValueError, r"\bx must be"),
    (X, dict(kernel_size=0), ValueError, r"\bkernel_size must be positive"),
    (X, dict(kernel_size=(2, -1)), ValueError,
     r"\bkernel_size must be positive"),
    (X, dict(kernel_size=2.0), TypeError, r"\bkernel_size must be an int"),
    (X, dict(kernel_size=True), TypeError, r"\bkernel_size must be an int"),
    (X, dict(stride=0), ValueError, r"\bstride must be positive"),
    (X, dict(stride=-2), ValueError, r"\bstride must be positive"),
    (X, dict(stride=1.5), TypeError, r"\bstride must be an int"),
    (X, dict(stride=False), TypeError, r"\bstride must be an int"),
    (X, dict(padding=-1), ValueError, r"\bpadding must be >= 0"),
    (X, dict(padding=2), ValueError,
     r"\bpadding \(2, 2\) must be at most half"),
    (X, dict(kernel_size=3, padding=2), ValueError,
     r"\bpadding \(2, 2\) must be at most half"),
    (X, dict(kernel_size=(4, 2), padding=(1, 2)), ValueError,
     r"\bpadding \(1, 2\) must be at most half"),
    (X, dict(padding="same"), TypeError, r"\bpadding must be an int"),
    (X, dict(kernel_size=6), ValueError,
     r"kernel_size \(6, 6\) is larger than the padded input \(5, 5\)"),
    (X, dict(kernel_size=(2, 8), padding=1), ValueError,
     r"kernel_size \(2, 8\) is larger than the padded input \(7, 7\)"),
])
def test_max_pool2d_argument_errors(x, kwargs, exc, pattern):
    args = dict(kernel_size=2)
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        F.max_pool2d(x, **args)


@pytest.mark.parametrize("bad", [25, 100, -1, 2 ** 40])
def test_max_pool2d_backward_indices_out_of_range(bad):
    ind = PI.copy()
    ind[1, 2, 0, 1] = bad
    with pytest.raises(ValueError,
                       match=r"indices must lie in \[0, 25\).*5x5"):
        F.max_pool2d_backward(P, ind, X.shape)


@pytest.mark.parametrize("g,ind,shape,exc,pattern", [
    (P, PI.astype(np.float64), X.shape, TypeError,
     r"indices must be an integer array, got dtype float64"),
    (P, PI.astype(bool), X.shape, TypeError, r"indices must be an integer"),
    (P, np.zeros((2, 3, 2, 3), np.int64), X.shape, ValueError,
     r"indices shape \(2, 3, 2, 3\) must equal grad_out shape \(2, 3, 2, 2\)"),
    (P, PI, (2, 3, 5), ValueError,
     r"input_shape \(2, 3, 5\) and grad_out shape .* same number of axes"),
    (P, PI, (2, 4, 5, 5), ValueError, r"input_shape .*differ in \(N, C\)"),
    (P, PI, (3, 3, 5, 5), ValueError, r"input_shape .*differ in \(N, C\)"),
    (P, PI, (2, 3, -5, 5), ValueError, r"input_shape must be 4 sizes >= 0"),
    (P, PI, 5, TypeError, r"input_shape must be a tuple of ints"),
    (P, PI, (2, 3, 5.0, 5), TypeError, r"\binput_shape must be"),
    (np.zeros((2, 2)).ravel(), PI.ravel()[:4], (4,), ValueError,
     r"grad_out must be"),
])
def test_max_pool2d_backward_argument_errors(g, ind, shape, exc, pattern):
    with pytest.raises(exc, match=pattern):
        F.max_pool2d_backward(g, ind, shape)


def test_max_pool2d_backward_indices_into_empty_plane():
    with pytest.raises(ValueError, match=r"indices point into an empty"):
        F.max_pool2d_backward(np.zeros((1, 1, 1, 1)),
                              np.zeros((1, 1, 1, 1), np.int64), (1, 1, 0, 0))


# --------------------------------------------------------------------------
# dense
# --------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [F.dense, F.dense_backward])
@pytest.mark.parametrize("x,w,pattern", [
    (np.zeros((2, 5)), FW,
     r"x has 5 features \(shape \(2, 5\)\) but weight expects 3"),
    (np.zeros(5), FW, r"x has 5 features .*weight expects 3"),
    (FX, np.zeros(5), r"x has 3 features .*weight expects 5"),
    (np.zeros((2, 3, 1)), FW, r"\bx must be \(N, F\).*\(2, 3, 1\)"),
    (np.zeros(()), FW, r"\bx must be \(N, F\)"),
    (FX, np.zeros((4, 3, 1)), r"\bweight must be .*\(4, 3, 1\)"),
])
def test_dense_shape_errors(fn, x, w, pattern):
    with pytest.raises(ValueError, match=pattern):
        if fn is F.dense:
            fn(x, w)
        else:
            fn(FG, x, w)


@pytest.mark.parametrize("w,bias", [(FW, np.zeros(3)), (FW, np.zeros((4, 1))),
                                    (FW, np.zeros(())), (np.zeros(3),
                                                         np.zeros(2))])
def test_dense_bias_of_wrong_shape(w, bias):
    with pytest.raises(ValueError, match=r"bias must have shape \(\d,\)"):
        F.dense(FX, w, bias)


@pytest.mark.parametrize("g", [np.zeros((2, 3)), np.zeros((4, 2)),
                               np.zeros(4), np.zeros((2, 4, 1))])
def test_dense_backward_grad_out_of_wrong_shape(g):
    with pytest.raises(ValueError,
                       match=r"grad_out must have shape \(2, 4\)"):
        F.dense_backward(g, FX, FW)


@pytest.mark.parametrize("bias", [1, None, "no", np.array(False)])
def test_dense_backward_bias_flag_must_be_bool(bias):
    with pytest.raises(TypeError, match=r"bias must be True or False"):
        F.dense_backward(FG, FX, FW, bias=bias)


# --------------------------------------------------------------------------
# softmax and cross-entropy
# --------------------------------------------------------------------------
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
def _outs():
    from cnnkit import _kernels as K
    x = np.zeros((2, 3, 5, 5), np.float32)
    w = np.zeros((4, 3, 3, 3), np.float32)
    g = np.zeros((2, 4, 3, 3), np.float32)
    pool = ((2, 2), (2, 2), (0, 0))
    return [
        ("conv2d", "out", (2, 4, 3, 3),
         lambda o: K.conv2d_forward(x, w, None, (1, 1), (0, 0, 0, 0), (1, 1),
                                    False, o)),
        ("conv2d_backward", "gx_out", x.shape,
         lambda o: K.conv2d_backward(g, x, w, (1, 1), (0, 0, 0, 0), (1, 1),
                                     True, True, o)),
        ("conv2d_backward", "gw_out", w.shape,
         lambda o: K.conv2d_backward(g, x, w, (1, 1), (0, 0, 0, 0), (1, 1),
                                     True, True, None, o)),
        ("relu", "out", x.shape, lambda o: K.relu_forward(x, o)),
        ("relu_backward", "out", x.shape,
         lambda o: K.relu_backward(x, x, o)),
        ("max_pool2d", "out", (2, 3, 2, 2),
         lambda o: K.max_pool2d_forward(x, *pool, o)),
        ("dense", "out", (2, 4),
         lambda o: K.dense_forward(x.reshape(2, 75),
                                   np.zeros((4, 75), np.float32), None, o)),
        ("softmax_cross_entropy", "grad_out", (2, 3),
         lambda o: K.softmax_cross_entropy(Z.astype(np.float32), LAB,
                                           grad_out=o)),
    ]


@pytest.mark.parametrize("case", range(8))
@pytest.mark.parametrize("bad", ["shape", "dtype", "strided", "readonly",
                                 "list"])
def test_kernel_out_arrays_are_checked(case, bad):
    fn, name, shape, call = _outs()[case]
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
