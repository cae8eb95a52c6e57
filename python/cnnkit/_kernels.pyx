# cython: language_level=3
"""Bindings to the C kernels.

Every function here validates its arguments completely (dtype, ndim, shapes
that fit together, positive strides, sizes whose products fit in 64 bits),
converts inputs once to aligned, C-contiguous arrays of the working dtype
(never writing to them; read-only inputs are fine), allocates the outputs and
the workspace, and calls the C kernel with the GIL released.

Callers pass arrays already promoted to one float dtype (float32 or float64)
and hyperparameters already normalised to tuples of ints; `cnnkit.functional`
does that.  The checks are repeated here so that no call, however wrong, can
reach C with an inconsistent shape.
"""
import os
import threading
import warnings

import numpy as np

cimport numpy as cnp
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int64_t

cnp.import_array()

# Largest element count or index product accepted; leaves headroom below
# 2**63 for the index arithmetic in C.
cdef object _MAX_SIZE = 2 ** 62

# More threads than any machine has only multiplies the scratch memory.
_MAX_THREADS = 4096
_thread_lock = threading.Lock()
_user_threads = 0
cnnkit_install_fork_guard()


def _simd_path_label():
    """The GEMM's SIMD path and, when CNNKIT_SIMD chose or tried to choose
    it, what was asked."""
    path = cnnkit_simd_path().decode()
    how = cnnkit_simd_request().decode()
    req = os.environ.get("CNNKIT_SIMD", "")
    if how == "forced":
        return f"{path} (forced by CNNKIT_SIMD={req})"
    if how == "unsupported":
        return (f"{path} (CNNKIT_SIMD={req} is not supported by this CPU or "
                f"build; using the best supported path)")
    if how == "unknown":
        return (f"{path} (CNNKIT_SIMD={req!r} names no path; expected "
                f"avx512, avx2, generic or auto)")
    return path


if cnnkit_simd_request().decode() in ("unsupported", "unknown"):
    warnings.warn(f"cnnkit: GEMM SIMD path {_simd_path_label()}",
                  RuntimeWarning, stacklevel=2)


# --------------------------------------------------------------------------
# threads and build facts
# --------------------------------------------------------------------------
def set_num_threads(n):
    """Set the number of threads the kernels use; 0 restores the default."""
    global _user_threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(
            f"set_num_threads: n must be an int, got {type(n).__name__}")
    n = int(n)
    if n < 0 or n > _MAX_THREADS:
        raise ValueError(f"set_num_threads: n must be in [0, {_MAX_THREADS}], "
                         f"got {n}")
    with _thread_lock:
        _user_threads = n


def get_num_threads():
    """Number of threads the next kernel call will use."""
    return _nthreads()


cdef int _nthreads() except -1:
    cdef int n = _user_threads
    if cnnkit_in_forked_child():
        return 1            # GNU OpenMP's pool does not survive fork()
    if n > 0:
        return n
    n = cnnkit_omp_max_threads()   # OMP_NUM_THREADS, threadpoolctl
    return min(max(n, 1), _MAX_THREADS)


def _set_conv_direct(on):
    """Allow (True, the default) or forbid the direct convolution forward
    where it applies; returns the previous setting.  The two paths give
    identical results: this exists for tests and benchmarks."""
    return bool(cnnkit_set_conv_direct(1 if on else 0))


def _conv_forward_path(x_shape, w_shape, stride, padding, dilation, dtype):
    """"direct" or "im2col": the path conv2d_forward takes for these
    shapes (padding as (top, bottom, left, right)) with the current
    threads."""
    cdef cnnkit_conv2d_geom g
    _conv_geom(&g, tuple(x_shape), tuple(w_shape), stride, padding,
               dilation)
    f64 = np.dtype(dtype) == np.float64
    return ("direct" if cnnkit_conv_direct_applies(&g, _nthreads(), f64)
            else "im2col")


def build_info():
    """Facts about the compiled kernels, as a dict."""
    return {
        "compiler": cnnkit_compiler().decode(),
        "openmp": bool(cnnkit_have_openmp()),
        "openmp_version": int(cnnkit_openmp_version()),
        "omp_max_threads": int(cnnkit_omp_max_threads()),
        "simd_path": _simd_path_label(),
        "simd_paths_built": (cnnkit_simd_paths_built().decode()
                             .replace(" ", ", ") + " (runtime dispatch)"),
        "simd_paths_supported": cnnkit_simd_paths_supported().decode().split(),
        "simd_request": cnnkit_simd_request().decode(),
    }


# --------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------
cdef object _float_input(object a, str name, object dtype=None):
    """a as an aligned C-contiguous float32/float64 ndarray (no copy if it
    already is one)."""
    cdef int tn
    if dtype is None and cnp.PyArray_CheckExact(a):
        # the common case, checked without NumPy calls
        tn = cnp.PyArray_TYPE(<cnp.ndarray>a)
        if (tn == cnp.NPY_FLOAT32 or tn == cnp.NPY_FLOAT64) and \
                cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>a) and \
                cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a):
            return a
    arr = np.asarray(a)
    if dtype is None:
        dtype = arr.dtype
    dtype = np.dtype(dtype)
    if dtype != np.float32 and dtype != np.float64:
        raise TypeError(
            f"{name} must be a float32 or float64 array, got dtype {arr.dtype}")
    if arr.dtype.kind not in "fiub":
        raise TypeError(
            f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return np.require(arr, dtype=dtype, requirements=["C", "A"])


cdef object _check_ndim(object arr, int ndim, str name, str layout):
    if arr.ndim != ndim:
        raise ValueError(
            f"{name} must be {ndim}-D {layout}, got shape {arr.shape}")


cdef object _check_size(str what, tuple dims):
    # in C while every factor is below 2**31 and the product stays within
    # 2**62; otherwise (or to report) with Python's integers
    cdef int64_t total = 1, limit = 2 ** 62, d
    for o in dims:
        if not (0 <= o < 2 ** 31):
            break
        d = o
        if d and total > limit // d:
            break
        total *= d
    else:
        return
    exact = 1
    for o in dims:
        exact *= int(o)
    if exact > _MAX_SIZE:
        raise ValueError(
            f"{what} has {exact} elements (dims {dims}), more than cnnkit "
            f"supports (2**62)")


cdef tuple _pos_pair(object v, str name, str fn):
    if len(v) != 2:
        raise ValueError(f"{fn}: {name} must be a pair, got {v!r}")
    a, b = int(v[0]), int(v[1])
    if a <= 0 or b <= 0:
        raise ValueError(f"{fn}: {name} must be positive, got {v!r}")
    if a > _MAX_SIZE or b > _MAX_SIZE:
        raise ValueError(f"{fn}: {name} too large, got {v!r}")
    return a, b


cdef tuple _pad4(object v, str fn):
    if len(v) != 4:
        raise ValueError(
            f"{fn}: padding must be (top, bottom, left, right), got {v!r}")
    t = (int(v[0]), int(v[1]), int(v[2]), int(v[3]))
    for p in t:
        if p < 0:
            raise ValueError(f"{fn}: padding must be >= 0, got {v!r}")
        if p > _MAX_SIZE:
            raise ValueError(f"{fn}: padding too large, got {v!r}")
    return t


cdef object _conv_geom(cnnkit_conv2d_geom *g, tuple xs, tuple ws,
                       object stride, object padding, object dilation):
    """Fill g from x shape (N,C,H,W), weight shape (K,C,R,S) and the
    hyperparameters; returns the output shape."""
    fn = "conv2d"
    sh, sw = _pos_pair(stride, "stride", fn)
    dh, dw = _pos_pair(dilation, "dilation", fn)
    pt, pb, pl, pr = _pad4(padding, fn)
    n, c, h, w = xs
    k, c2, r, s = ws
    if c != c2:
        raise ValueError(
            f"{fn}: x has {c} channels (shape {xs}) but weight expects {c2} "
            f"(shape {ws})")
    if r <= 0 or s <= 0:
        raise ValueError(f"{fn}: kernel size must be positive, got weight "
                         f"shape {ws}")
    eh, ew = dh * (r - 1) + 1, dw * (s - 1) + 1
    ph, pw = h + pt + pb, w + pl + pr
    if ph > _MAX_SIZE or pw > _MAX_SIZE or eh > _MAX_SIZE or ew > _MAX_SIZE:
        raise ValueError(f"{fn}: sizes too large (padded input {ph}x{pw}, "
                         f"dilated kernel {eh}x{ew})")
    if eh > ph or ew > pw:
        raise ValueError(
            f"{fn}: kernel ({r}, {s}) with dilation ({dh}, {dw}) spans "
            f"({eh}, {ew}), larger than the padded input ({ph}, {pw}) of x "
            f"shape {xs}")
    oh = (ph - eh) // sh + 1
    ow = (pw - ew) // sw + 1
    _check_size("conv2d input", xs)
    _check_size("conv2d weight", ws)
    _check_size("conv2d output", (n, k, oh, ow))
    _check_size("conv2d lowered matrix", (c, r, s, oh, ow))
    g.n, g.c, g.h, g.w = n, c, h, w
    g.k, g.r, g.s = k, r, s
    g.oh, g.ow = oh, ow
    g.stride_h, g.stride_w = sh, sw
    g.pad_h, g.pad_w = pt, pl
    g.dil_h, g.dil_w = dh, dw
    return (n, k, oh, ow)


# Scratch buffers are kept per Python thread and reused across calls, so a
# training step allocates no workspace; buffers over _WS_KEEP bytes are not
# kept.
_ws_local = threading.local()
cdef object _WS_KEEP = 64 * 2 ** 20


cdef object _workspace(object nelem, object dtype):
    _check_size("workspace", (nelem,))
    nelem = max(int(nelem), 1)
    dtype = np.dtype(dtype)
    key = dtype.char
    cache = getattr(_ws_local, "buffers", None)
    if cache is None:
        cache = _ws_local.buffers = {}
    buf = cache.get(key)
    if buf is not None and buf.size >= nelem:
        return buf
    buf = np.empty(nelem, dtype=dtype)
    if nelem * dtype.itemsize <= _WS_KEEP:
        cache[key] = buf
    return buf


cdef inline void *_ptr(object a):
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef bint _c_array(object a, tuple shape, object dt, bint writeable):
    """Whether a is an ndarray of this shape and native dtype, aligned and
    C-contiguous (and writeable if asked)."""
    return (cnp.PyArray_CheckExact(a) and a.dtype == dt and
            a.shape == shape and
            (cnp.PyArray_ISCARRAY(<cnp.ndarray>a) if writeable else
             cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>a)) and
            cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a))


cdef object _require(object a, tuple shape, object dt, bint writeable,
                     str what):
    """a, or a ValueError saying that ``what`` (\"fn: name\") must be a
    (writeable) C-contiguous ndarray of this shape and dtype."""
    if not _c_array(a, shape, dt, writeable):
        raise ValueError(
            f"{what} must be a {'writeable ' if writeable else ''}"
            f"C-contiguous {np.dtype(dt).name} ndarray of shape {shape}, got "
            f"{getattr(a, 'dtype', type(a).__name__)} "
            f"{getattr(a, 'shape', '')}")
    return a


cdef object _out(object out, tuple shape, object dt, str fn, str name):
    """The array a kernel writes: a new one when out is None, otherwise
    out itself after checking that it is a writeable, aligned, C-contiguous
    ndarray of the shape and dtype (the layers pass the buffers they keep
    between training steps).  It must not overlap the inputs."""
    if out is None:
        return np.empty(shape, dtype=dt)
    return _require(out, shape, dt, True, f"{fn}: {name}")


cdef object _zeros_or(object out, tuple shape, object dt, str fn, str name,
                      bint clear):
    """A gradient the kernel accumulates or skips when there are no terms:
    new zeros, or out after checking it (as _out), zeroed here when clear
    (the kernel writes every element otherwise)."""
    if out is None:
        return np.zeros(shape, dtype=dt)
    a = _out(out, shape, dt, fn, name)
    if clear and a.size:
        a[...] = 0
    return a


cdef object _same_dtype(str fn, list named):
    """All arrays must share one float dtype; returns it."""
    dt = named[0][1].dtype
    for name, a in named[1:]:
        if a.dtype != dt:
            raise TypeError(
                f"{fn}: {name} has dtype {a.dtype} but {named[0][0]} has "
                f"dtype {dt}; pass arrays of one float dtype")
    return dt


# --------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------
def conv2d_forward(x, weight, bias, stride, padding, dilation,
                   bint relu=False, out=None):
    """y (N,K,OH,OW) of x (N,C,H,W), weight (K,C,R,S), bias (K,) or None;
    padding is (top, bottom, left, right).  relu=True returns relu(y) from
    the same pass (the bits of relu_forward(y)); out, when given, is
    written instead of a new array."""
    cdef cnnkit_conv2d_geom g
    cdef int nt = _nthreads()
    x = _float_input(x, "x")
    weight = _float_input(weight, "weight")
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    _check_ndim(weight, 4, "weight", "(K, C, R, S)")
    if bias is not None:
        bias = _float_input(bias, "bias")
        if bias.shape != (weight.shape[0],):
            raise ValueError(
                f"conv2d: bias must have shape ({weight.shape[0]},) for "
                f"weight shape {weight.shape}, got {bias.shape}")
    dt = _same_dtype("conv2d", [("x", x), ("weight", weight)] +
                     ([("bias", bias)] if bias is not None else []))
    out_shape = _conv_geom(&g, x.shape, weight.shape, stride, padding,
                           dilation)
    y = _out(out, out_shape, dt, "conv2d", "out")
    if y.size == 0:
        return y
    work = _workspace(cnnkit_conv2d_workspace(&g, CNNKIT_CONV_FORWARD, nt), dt)
    cdef void *py = _ptr(y)
    cdef void *px = _ptr(x)
    cdef void *pw = _ptr(weight)
    cdef void *pb = _ptr(bias) if bias is not None else NULL
    cdef void *pk = _ptr(work)
    if dt == np.float32:
        with nogil:
            cnnkit_conv2d_forward_f32(<float *>py, <const float *>px,
                                      <const float *>pw, <const float *>pb,
                                      relu, <float *>pk, &g, nt)
    else:
        with nogil:
            cnnkit_conv2d_forward_f64(<double *>py, <const double *>px,
                                      <const double *>pw, <const double *>pb,
                                      relu, <double *>pk, &g, nt)
    return y


cdef tuple _conv_backward_args(grad_out, x, weight, stride, padding,
                               dilation, cnnkit_conv2d_geom *g):
    """Checked (grad_out, x, weight, dtype) of a convolution's backward pass;
    fills g."""
    grad_out = _float_input(grad_out, "grad_out")
    x = _float_input(x, "x")
    weight = _float_input(weight, "weight")
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    _check_ndim(weight, 4, "weight", "(K, C, R, S)")
    dt = _same_dtype("conv2d_backward", [("x", x), ("weight", weight),
                                         ("grad_out", grad_out)])
    out_shape = _conv_geom(g, x.shape, weight.shape, stride, padding,
                           dilation)
    if grad_out.shape != out_shape:
        raise ValueError(
            f"conv2d_backward: grad_out must have the output shape "
            f"{out_shape} of x {x.shape} and weight {weight.shape}, got "
            f"{grad_out.shape}")
    return grad_out, x, weight, dt


cdef object _conv_backward_data(grad_out, x, weight, dt,
                                const cnnkit_conv2d_geom *g, int nt,
                                object out):
    """The gradient with respect to the input x (into out when given)."""
    gx = _out(out, x.shape, dt, "conv2d_backward", "gx_out")   # all written
    if not gx.size:
        return gx
    work = _workspace(
        cnnkit_conv2d_workspace(g, CNNKIT_CONV_BACKWARD_DATA, nt), dt)
    cdef void *pgx = _ptr(gx)
    cdef void *pgy = _ptr(grad_out)
    cdef void *pw = _ptr(weight)
    cdef void *pk = _ptr(work)
    if dt == np.float32:
        with nogil:
            cnnkit_conv2d_backward_data_f32(
                <float *>pgx, <const float *>pgy, <const float *>pw,
                <float *>pk, g, nt)
    else:
        with nogil:
            cnnkit_conv2d_backward_data_f64(
                <double *>pgx, <const double *>pgy, <const double *>pw,
                <double *>pk, g, nt)
    return gx


def conv2d_backward(grad_out, x, weight, stride, padding, dilation,
                    bint need_input_grad=True, bint need_bias_grad=True,
                    gx_out=None, gw_out=None, gb_out=None):
    """(grad_x or None, grad_weight, grad_bias or None); the *_out arrays,
    when given, are written and returned instead of new ones."""
    cdef cnnkit_conv2d_geom g
    cdef int nt = _nthreads()
    grad_out, x, weight, dt = _conv_backward_args(
        grad_out, x, weight, stride, padding, dilation, &g)
    gx = (_conv_backward_data(grad_out, x, weight, dt, &g, nt, gx_out)
          if need_input_grad else None)
    # no terms (an empty batch or output): the kernel writes nothing
    cdef bint empty = grad_out.size == 0
    gw = _zeros_or(gw_out, weight.shape, dt, "conv2d_backward", "gw_out",
                   empty)
    gb = (_zeros_or(gb_out, (weight.shape[0],), dt, "conv2d_backward",
                    "gb_out", empty) if need_bias_grad else None)
    cdef void *pgy = _ptr(grad_out)
    cdef void *px = _ptr(x)
    cdef void *pgw = _ptr(gw)
    cdef void *pgb = _ptr(gb) if gb is not None else NULL
    cdef void *pk
    if gw.size or (gb is not None and gb.size):
        work = _workspace(
            cnnkit_conv2d_workspace(&g, CNNKIT_CONV_BACKWARD_WEIGHT, nt), dt)
        pk = _ptr(work)
        if dt == np.float32:
            with nogil:
                cnnkit_conv2d_backward_weight_f32(
                    <float *>pgw, <float *>pgb, <const float *>pgy,
                    <const float *>px, <float *>pk, &g, nt)
        else:
            with nogil:
                cnnkit_conv2d_backward_weight_f64(
                    <double *>pgw, <double *>pgb, <const double *>pgy,
                    <const double *>px, <double *>pk, &g, nt)
    return gx, gw, gb


def _parts_args(fn, bounds, n, gw_parts, wshape, gb_parts, dt):
    """Check the runs of samples and the per-run gradient arrays of the
    *_parts kernels; return (bounds as int64, weight stride, bias stride)
    with the strides in elements."""
    b = np.ascontiguousarray(bounds, dtype=np.int64)
    if b.ndim != 1 or b.shape[0] < 2:
        raise ValueError(f"{fn}: bounds must be 1-D with at least 2 entries, "
                         f"got shape {b.shape}")
    edges = b.tolist()          # (built without wraparound: no [-1])
    ordered = edges[0] >= 0 and edges[len(edges) - 1] <= n
    for i in range(len(edges) - 1):
        if edges[i + 1] < edges[i]:
            ordered = False
    if not ordered:
        raise ValueError(f"{fn}: bounds must be non-decreasing within "
                         f"[0, {n}], got {b.tolist()}")
    nparts = b.shape[0] - 1
    item = np.dtype(dt).itemsize
    strides = []
    for name, arr, shape in (("gw_parts", gw_parts, wshape),
                             ("gb_parts", gb_parts, wshape[:1])):
        if arr is None and name == "gb_parts":
            strides.append(0)
            continue
        if type(arr) is not np.ndarray or arr.dtype != dt or \
                arr.shape != (nparts,) + tuple(shape) or \
                not arr.flags.writeable:
            raise ValueError(
                f"{fn}: {name} must be a writeable {np.dtype(dt).name} array "
                f"of shape {(nparts,) + tuple(shape)}, got "
                f"{getattr(arr, 'dtype', type(arr).__name__)} "
                f"{getattr(arr, 'shape', '')}")
        inner = arr[0] if nparts else arr
        if nparts and (not inner.flags.c_contiguous or
                       arr.strides[0] % item or arr.strides[0] < 0 or
                       (nparts > 1 and arr.strides[0] < inner.nbytes)):
            raise ValueError(f"{fn}: each part of {name} must be "
                             f"C-contiguous, parts not overlapping")
        strides.append(arr.strides[0] // item)
    return b, strides[0], strides[1]


def conv2d_backward_parts(grad_out, x, weight, stride, padding, dilation,
                          bounds, gw_parts, gb_parts,
                          bint need_input_grad=True, gx_out=None):
    """conv2d_backward with the weight (and bias) gradients of each run of
    images [bounds[q], bounds[q+1]) written to gw_parts[q] (gb_parts[q]);
    returns grad_x or None.  Empty runs are not written."""
    cdef cnnkit_conv2d_geom g
    cdef int nt = _nthreads()
    grad_out, x, weight, dt = _conv_backward_args(
        grad_out, x, weight, stride, padding, dilation, &g)
    b, ws, bs = _parts_args("conv2d_backward", bounds, x.shape[0], gw_parts,
                            weight.shape, gb_parts, dt)
    gx = (_conv_backward_data(grad_out, x, weight, dt, &g, nt, gx_out)
          if need_input_grad else None)
    cdef void *pgy = _ptr(grad_out)
    cdef void *px = _ptr(x)
    cdef void *pk
    cdef void *pgw = _ptr(gw_parts)
    cdef void *pgb = _ptr(gb_parts) if gb_parts is not None else NULL
    cdef const int64_t *pb = <const int64_t *>_ptr(b)
    cdef ptrdiff_t nparts = b.shape[0] - 1, wstride = ws, bstride = bs
    if nparts and (weight.size or gb_parts is not None):
        work = _workspace(cnnkit_conv2d_workspace(
            &g, CNNKIT_CONV_BACKWARD_WEIGHT_PARTS, nt), dt)
        pk = _ptr(work)
        if dt == np.float32:
            with nogil:
                cnnkit_conv2d_backward_weight_parts_f32(
                    <float *>pgw, wstride, <float *>pgb, bstride,
                    <const float *>pgy, <const float *>px, pb, nparts,
                    <float *>pk, &g, nt)
        else:
            with nogil:
                cnnkit_conv2d_backward_weight_parts_f64(
                    <double *>pgw, wstride, <double *>pgb, bstride,
                    <const double *>pgy, <const double *>px, pb, nparts,
                    <double *>pk, &g, nt)
    return gx


# --------------------------------------------------------------------------
# ReLU
# --------------------------------------------------------------------------
def relu_forward(x, out=None):
    cdef int nt = _nthreads()
    x = _float_input(x, "x")
    y = _out(out, x.shape, x.dtype, "relu", "out")
    cdef ptrdiff_t n = x.size
    cdef void *py = _ptr(y)
    cdef void *px = _ptr(x)
    if n == 0:
        return y
    if x.dtype == np.float32:
        with nogil:
            cnnkit_relu_forward_f32(<float *>py, <const float *>px, n, nt)
    else:
        with nogil:
            cnnkit_relu_forward_f64(<double *>py, <const double *>px, n, nt)
    return y


def relu_backward(grad_out, x, out=None):
    cdef int nt = _nthreads()
    grad_out = _float_input(grad_out, "grad_out")
    x = _float_input(x, "x")
    dt = _same_dtype("relu_backward", [("x", x), ("grad_out", grad_out)])
    if grad_out.shape != x.shape:
        raise ValueError(
            f"relu_backward: grad_out must have the shape of x {x.shape}, "
            f"got {grad_out.shape}")
    gx = _out(out, x.shape, dt, "relu_backward", "out")
    cdef ptrdiff_t n = x.size
    cdef void *pgx = _ptr(gx)
    cdef void *pgy = _ptr(grad_out)
    cdef void *px = _ptr(x)
    if n == 0:
        return gx
    if dt == np.float32:
        with nogil:
            cnnkit_relu_backward_f32(<float *>pgx, <const float *>pgy,
                                     <const float *>px, n, nt)
    else:
        with nogil:
            cnnkit_relu_backward_f64(<double *>pgx, <const double *>pgy,
                                     <const double *>px, n, nt)
    return gx


# --------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------
cdef object _pool_geom(cnnkit_pool2d_geom *g, tuple xs, object kernel,
                       object stride, object padding, str fn="max_pool2d"):
    kh, kw = _pos_pair(kernel, "kernel_size", fn)
    sh, sw = _pos_pair(stride, "stride", fn)
    if len(padding) != 2:
        raise ValueError(f"{fn}: padding must be a pair, got {padding!r}")
    ph, pw = int(padding[0]), int(padding[1])
    if ph < 0 or pw < 0:
        raise ValueError(f"{fn}: padding must be >= 0, got {padding!r}")
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError(
            f"{fn}: padding {(ph, pw)} must be at most half the kernel size "
            f"{(kh, kw)}")
    n, c, h, w = xs
    if h == 0 or w == 0:
        raise ValueError(
            f"{fn}: x has empty planes (H, W) = ({h}, {w}) (shape {xs}); "
            f"every window would hold only padding")
    if kh > h + 2 * ph or kw > w + 2 * pw:
        raise ValueError(
            f"{fn}: kernel_size {(kh, kw)} is larger than the padded input "
            f"({h + 2 * ph}, {w + 2 * pw}) of x shape {xs}")
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    _check_size("max_pool2d input", xs)
    _check_size("max_pool2d output", (n, c, oh, ow))
    g.planes, g.h, g.w = n * c, h, w
    g.oh, g.ow = oh, ow
    g.kh, g.kw, g.stride_h, g.stride_w = kh, kw, sh, sw
    g.pad_h, g.pad_w = ph, pw
    return (n, c, oh, ow)


def maxpool2d_forward(x, kernel_size, stride, padding, out=None,
                      indices_out=None):
    """(y, indices) of x (N,C,H,W); all hyperparameters pairs."""
    cdef cnnkit_pool2d_geom g
    cdef int nt = _nthreads()
    x = _float_input(x, "x")
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    out_shape = _pool_geom(&g, x.shape, kernel_size, stride, padding)
    y = _out(out, out_shape, x.dtype, "max_pool2d", "out")
    idx = _out(indices_out, out_shape, np.dtype(np.int64), "max_pool2d",
               "indices_out")
    if y.size == 0:
        return y, idx
    cdef void *py = _ptr(y)
    cdef void *pi = _ptr(idx)
    cdef void *px = _ptr(x)
    if x.dtype == np.float32:
        with nogil:
            cnnkit_maxpool2d_forward_f32(<float *>py, <int64_t *>pi,
                                         <const float *>px, &g, nt)
    else:
        with nogil:
            cnnkit_maxpool2d_forward_f64(<double *>py, <int64_t *>pi,
                                         <const double *>px, &g, nt)
    return y, idx


def maxpool2d_backward(grad_out, indices, input_shape, out=None,
                       relu_pooled=None):
    """grad_x of max pooling; with relu_pooled (the forward's output) the
    gradient also goes back through the ReLU that produced the pool's input
    (the bits of relu_backward(maxpool2d_backward(...), relu_output))."""
    cdef cnnkit_pool2d_geom g
    cdef int nt = _nthreads()
    grad_out = _float_input(grad_out, "grad_out")
    ind = np.asarray(indices)
    if ind.dtype.kind not in "iu" :
        raise TypeError(
            f"max_pool2d_backward: indices must be an integer array, got "
            f"dtype {ind.dtype}")
    _check_ndim(grad_out, 4, "grad_out", "(N, C, OH, OW)")
    if ind.shape != grad_out.shape:
        raise ValueError(
            f"max_pool2d_backward: indices shape {ind.shape} must equal "
            f"grad_out shape {grad_out.shape}")
    shp = tuple(int(d) for d in input_shape)
    if len(shp) != 4 or min(shp) < 0:
        raise ValueError(
            f"max_pool2d_backward: input_shape must be 4 sizes >= 0 "
            f"(N, C, H, W), got {tuple(input_shape)}")
    if shp[:2] != grad_out.shape[:2]:
        raise ValueError(
            f"max_pool2d_backward: input_shape {shp} and grad_out shape "
            f"{grad_out.shape} differ in (N, C)")
    _check_size("max_pool2d_backward input", shp)
    hw = shp[2] * shp[3]
    gx = _out(out, shp, grad_out.dtype, "max_pool2d_backward", "out")
    if gx.size == 0:
        if ind.size:
            raise ValueError("max_pool2d_backward: indices point into an "
                             "empty input plane")
        return gx
    if cnp.PyArray_TYPE(<cnp.ndarray>ind) != cnp.NPY_INT64 or \
            not cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>ind) or \
            not cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>ind):
        if ind.dtype != np.int64 and ind.size:
            # a narrower or unsigned type could wrap on conversion: check
            # first (int64 indices are checked as the kernel scatters)
            _check_indices(ind, hw, shp)
        ind = np.require(ind, dtype=np.int64, requirements=["C", "A"])
    g.planes, g.h, g.w = shp[0] * shp[1], shp[2], shp[3]
    g.oh, g.ow = grad_out.shape[2], grad_out.shape[3]
    g.kh = g.kw = g.stride_h = g.stride_w = 1
    g.pad_h = g.pad_w = 0
    cdef void *pgx = _ptr(gx)
    cdef void *pgy = _ptr(grad_out)
    cdef void *pi = _ptr(ind)
    cdef void *py = NULL
    if relu_pooled is not None:
        py = _ptr(_require(relu_pooled, grad_out.shape, grad_out.dtype,
                           False, "max_pool2d_backward: relu_pooled"))
    cdef ptrdiff_t bad
    if grad_out.dtype == np.float32:
        with nogil:
            bad = cnnkit_maxpool2d_backward_f32(
                <float *>pgx, <const float *>pgy, <const int64_t *>pi,
                <const float *>py, &g, nt)
    else:
        with nogil:
            bad = cnnkit_maxpool2d_backward_f64(
                <double *>pgx, <const double *>pgy, <const int64_t *>pi,
                <const double *>py, &g, nt)
    if bad:
        _check_indices(ind, hw, shp)
    return gx


cdef object _check_indices(ind, hw, tuple shp):
    lo, hi = int(ind.min()), int(ind.max())
    if lo < 0 or hi >= hw:
        raise ValueError(
            f"max_pool2d_backward: indices must lie in [0, {hw}) for "
            f"input planes of {shp[2]}x{shp[3]}, got values in "
            f"[{lo}, {hi}]")


def avgpool2d_forward(x, kernel_size, stride, padding,
                      bint count_include_pad=True):
    """y of x (N,C,H,W); all hyperparameters pairs."""
    cdef cnnkit_pool2d_geom g
    cdef int nt = _nthreads()
    x = _float_input(x, "x")
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    out_shape = _pool_geom(&g, x.shape, kernel_size, stride, padding,
                           "avg_pool2d")
    y = np.empty(out_shape, dtype=x.dtype)
    if y.size == 0:
        return y
    cdef void *py = _ptr(y)
    cdef void *px = _ptr(x)
    cdef int cip = count_include_pad
    if x.dtype == np.float32:
        with nogil:
            cnnkit_avgpool2d_forward_f32(<float *>py, <const float *>px, &g,
                                         cip, nt)
    else:
        with nogil:
            cnnkit_avgpool2d_forward_f64(<double *>py, <const double *>px,
                                         &g, cip, nt)
    return y


def avgpool2d_backward(grad_out, input_shape, kernel_size, stride, padding,
                       bint count_include_pad=True):
    cdef cnnkit_pool2d_geom g
    cdef int nt = _nthreads()
    grad_out = _float_input(grad_out, "grad_out")
    _check_ndim(grad_out, 4, "grad_out", "(N, C, OH, OW)")
    shp = tuple(int(d) for d in input_shape)
    if len(shp) != 4 or min(shp) < 0:
        raise ValueError(
            f"avg_pool2d_backward: input_shape must be 4 sizes >= 0 "
            f"(N, C, H, W), got {tuple(input_shape)}")
    out_shape = _pool_geom(&g, shp, kernel_size, stride, padding,
                           "avg_pool2d_backward")
    if grad_out.shape != out_shape:
        raise ValueError(
            f"avg_pool2d_backward: grad_out must have the output shape "
            f"{out_shape} of input_shape {shp}, got {grad_out.shape}")
    gx = np.empty(shp, dtype=grad_out.dtype)
    if gx.size == 0:
        return gx
    cdef void *pgx = _ptr(gx)
    cdef void *pgy = _ptr(grad_out)
    cdef int cip = count_include_pad
    if grad_out.dtype == np.float32:
        with nogil:
            cnnkit_avgpool2d_backward_f32(<float *>pgx, <const float *>pgy,
                                          &g, cip, nt)
    else:
        with nogil:
            cnnkit_avgpool2d_backward_f64(<double *>pgx, <const double *>pgy,
                                          &g, cip, nt)
    return gx


# --------------------------------------------------------------------------
# dense
# --------------------------------------------------------------------------
cdef tuple _dense_check(str fn, object x, object weight):
    _check_ndim(x, 2, "x", "(N, F)")
    _check_ndim(weight, 2, "weight", "(O, F)")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{fn}: x has {x.shape[1]} features (shape {x.shape}) but "
            f"weight expects {weight.shape[1]} (shape {weight.shape})")
    _check_size(f"{fn} output", (x.shape[0], weight.shape[0]))
    return x.shape[0], x.shape[1], weight.shape[0]


def dense_forward(x, weight, bias, out=None):
    cdef int nt = _nthreads()
    x = _float_input(x, "x")
    weight = _float_input(weight, "weight")
    cdef ptrdiff_t n, f, o
    n, f, o = _dense_check("dense", x, weight)
    if bias is not None:
        bias = _float_input(bias, "bias")
        if bias.shape != (o,):
            raise ValueError(
                f"dense: bias must have shape ({o},) for weight shape "
                f"{weight.shape}, got {bias.shape}")
    dt = _same_dtype("dense", [("x", x), ("weight", weight)] +
                     ([("bias", bias)] if bias is not None else []))
    y = _out(out, (n, o), dt, "dense", "out")
    if y.size == 0:
        return y
    work = _workspace(cnnkit_dense_workspace(n, f, o, nt), dt)
    cdef void *py = _ptr(y)
    cdef void *px = _ptr(x)
    cdef void *pw = _ptr(weight)
    cdef void *pb = _ptr(bias) if bias is not None else NULL
    cdef void *pk = _ptr(work)
    if dt == np.float32:
        with nogil:
            cnnkit_dense_forward_f32(<float *>py, <const float *>px,
                                     <const float *>pw, <const float *>pb,
                                     <float *>pk, n, f, o, nt)
    else:
        with nogil:
            cnnkit_dense_forward_f64(<double *>py, <const double *>px,
                                     <const double *>pw, <const double *>pb,
                                     <double *>pk, n, f, o, nt)
    return y


cdef tuple _dense_backward_args(grad_out, x, weight):
    """Checked (grad_out, x, weight, dtype, n, f, o) of a dense layer's
    backward pass."""
    grad_out = _float_input(grad_out, "grad_out")
    x = _float_input(x, "x")
    weight = _float_input(weight, "weight")
    n, f, o = _dense_check("dense_backward", x, weight)
    dt = _same_dtype("dense_backward", [("x", x), ("weight", weight),
                                        ("grad_out", grad_out)])
    if grad_out.shape != (n, o):
        raise ValueError(
            f"dense_backward: grad_out must have shape {(n, o)} for x "
            f"{x.shape} and weight {weight.shape}, got {grad_out.shape}")
    return grad_out, x, weight, dt, n, f, o


def dense_backward(grad_out, x, weight, bint need_input_grad=True,
                   bint need_bias_grad=True, gx_out=None, gw_out=None,
                   gb_out=None):
    cdef int nt = _nthreads()
    cdef ptrdiff_t n, f, o
    grad_out, x, weight, dt, n, f, o = _dense_backward_args(grad_out, x,
                                                            weight)
    cdef bint empty = n == 0 or o == 0
    gx = (_zeros_or(gx_out, (n, f), dt, "dense_backward", "gx_out", empty)
          if need_input_grad else None)
    gw = _zeros_or(gw_out, (o, f), dt, "dense_backward", "gw_out", empty)
    gb = (_zeros_or(gb_out, (o,), dt, "dense_backward", "gb_out", empty)
          if need_bias_grad else None)
    if o == 0 or f == 0 and gb is None:
        return gx, gw, gb
    work = _workspace(cnnkit_dense_workspace(n, f, o, nt), dt)
    cdef void *pgx = _ptr(gx) if gx is not None and gx.size else NULL
    cdef void *pgw = _ptr(gw)
    cdef void *pgb = _ptr(gb) if gb is not None else NULL
    cdef void *pgy = _ptr(grad_out)
    cdef void *px = _ptr(x)
    cdef void *pw = _ptr(weight)
    cdef void *pk = _ptr(work)
    if dt == np.float32:
        with nogil:
            cnnkit_dense_backward_f32(<float *>pgx, <float *>pgw,
                                      <float *>pgb, <const float *>pgy,
                                      <const float *>px, <const float *>pw,
                                      <float *>pk, n, f, o, nt)
    else:
        with nogil:
            cnnkit_dense_backward_f64(<double *>pgx, <double *>pgw,
                                      <double *>pgb, <const double *>pgy,
                                      <const double *>px, <const double *>pw,
                                      <double *>pk, n, f, o, nt)
    return gx, gw, gb


def dense_backward_parts(grad_out, x, weight, bounds, gw_parts, gb_parts,
                         bint need_input_grad=True, gx_out=None):
    """dense_backward with the weight (and bias) gradients of each run of
    rows [bounds[q], bounds[q+1]) written to gw_parts[q] (gb_parts[q]);
    returns grad_x or None.  Empty runs are not written."""
    cdef int nt = _nthreads()
    cdef ptrdiff_t n, f, o
    grad_out, x, weight, dt, n, f, o = _dense_backward_args(grad_out, x,
                                                            weight)
    b, ws, bs = _parts_args("dense_backward", bounds, n, gw_parts,
                            weight.shape, gb_parts, dt)
    gx = (_zeros_or(gx_out, (n, f), dt, "dense_backward", "gx_out",
                    n == 0 or o == 0) if need_input_grad else None)
    if o == 0:
        return gx
    work = _workspace(cnnkit_dense_workspace(n, f, o, nt), dt)
    cdef void *pgx = _ptr(gx) if gx is not None and gx.size else NULL
    cdef void *pgw = _ptr(gw_parts)
    cdef void *pgb = NULL
    if gb_parts is not None:
        pgb = _ptr(gb_parts)
    cdef void *pgy = _ptr(grad_out)
    cdef void *px = _ptr(x)
    cdef void *pw = _ptr(weight)
    cdef void *pk = _ptr(work)
    cdef const int64_t *pb = <const int64_t *>_ptr(b)
    cdef ptrdiff_t nparts = b.shape[0] - 1, wstride = ws, bstride = bs
    if dt == np.float32:
        with nogil:
            cnnkit_dense_backward_parts_f32(
                <float *>pgx, <float *>pgw, wstride, <float *>pgb, bstride,
                <const float *>pgy, <const float *>px, <const float *>pw,
                pb, nparts, <float *>pk, n, f, o, nt)
    else:
        with nogil:
            cnnkit_dense_backward_parts_f64(
                <double *>pgx, <double *>pgw, wstride, <double *>pgb,
                bstride, <const double *>pgy, <const double *>px,
                <const double *>pw, pb, nparts, <double *>pk, n, f, o, nt)
    return gx


# --------------------------------------------------------------------------
# optimizer steps
# --------------------------------------------------------------------------
cdef object _flat_state(str fn, list named):
    """The arrays of an optimizer step: exact ndarrays, 1-D, C-contiguous,
    one float dtype and size, the updated ones writeable; returns the
    dtype."""
    first = named[0][1]
    for name, a, writeable in named:
        if type(a) is not np.ndarray or a.dtype != first.dtype or \
                a.dtype not in (np.float32, np.float64) or a.ndim != 1 or \
                a.shape != first.shape or not a.flags.c_contiguous or \
                not a.flags.aligned or (writeable and not a.flags.writeable):
            raise ValueError(
                f"{fn}: {name} must be a {'writeable ' if writeable else ''}"
                f"C-contiguous 1-D float32/float64 ndarray like params "
                f"({first.dtype}{list(first.shape)}), got "
                f"{getattr(a, 'dtype', type(a).__name__)}"
                f"{list(getattr(a, 'shape', ()))}")
    return first.dtype


def sgd_step(params, grads, buf, double lr, double weight_decay,
             double momentum, bint nesterov, bint first):
    """One SGD step in place (buf: the momentum buffer, or None without
    momentum; first: it holds nothing yet)."""
    cdef int nt = _nthreads()
    named = [("params", params, True), ("grads", grads, False)]
    if buf is not None:
        named.append(("momentum buffer", buf, True))
    elif momentum != 0.0:
        raise ValueError("sgd_step: momentum needs a buffer")
    dt = _flat_state("sgd_step", named)
    cdef ptrdiff_t n = params.shape[0]
    cdef void *pp = _ptr(params)
    cdef void *pg = _ptr(grads)
    cdef void *pb = _ptr(buf) if buf is not None else NULL
    if dt == np.float32:
        with nogil:
            cnnkit_sgd_step_f32(<float *>pp, <const float *>pg,
                                <float *>pb, n, lr, weight_decay, momentum,
                                nesterov, first, nt)
    else:
        with nogil:
            cnnkit_sgd_step_f64(<double *>pp, <const double *>pg,
                                <double *>pb, n, lr, weight_decay, momentum,
                                nesterov, first, nt)


def adam_step(params, grads, m, v, double beta1, double beta2, double eps,
              double weight_decay, bint decoupled, double decay_factor,
              double step_size, double bc2_sqrt):
    """One Adam/AdamW step in place (m, v: the moment buffers)."""
    cdef int nt = _nthreads()
    dt = _flat_state("adam_step", [("params", params, True),
                                   ("grads", grads, False),
                                   ("exp_avg", m, True),
                                   ("exp_avg_sq", v, True)])
    cdef ptrdiff_t n = params.shape[0]
    cdef void *pp = _ptr(params)
    cdef void *pg = _ptr(grads)
    cdef void *pm = _ptr(m)
    cdef void *pv = _ptr(v)
    if dt == np.float32:
        with nogil:
            cnnkit_adam_step_f32(<float *>pp, <const float *>pg, <float *>pm,
                                 <float *>pv, n, beta1, beta2, eps,
                                 weight_decay, decoupled, decay_factor,
                                 step_size, bc2_sqrt, nt)
    else:
        with nogil:
            cnnkit_adam_step_f64(<double *>pp, <const double *>pg,
                                 <double *>pm, <double *>pv, n, beta1, beta2,
                                 eps, weight_decay, decoupled, decay_factor,
                                 step_size, bc2_sqrt, nt)


def tree_sum(rows, out):
    """out = the sum of ``rows`` (1-D arrays of out's dtype and length, or
    None for absent ones) in the fixed pairwise tree of cnnkit_tree_sum:
    adjacent rows first, then adjacent pairs, and so on; 0 where no row is
    present.  The rows are not written."""
    cdef int nt = _nthreads()
    if not cnp.PyArray_CheckExact(out) or out.ndim != 1 or \
            not _c_array(out, out.shape, out.dtype, True) or \
            out.dtype not in (np.float32, np.float64):
        raise ValueError(
            f"tree_sum: out must be a writeable C-contiguous 1-D float32 or "
            f"float64 ndarray, got {getattr(out, 'dtype', type(out).__name__)}"
            f" {getattr(out, 'shape', '')}")
    cdef ptrdiff_t nrows = len(rows), n = out.shape[0], i
    if nrows < 1 or nrows > 32768:
        raise ValueError(f"tree_sum: between 1 and 32768 rows, got {nrows}")
    cdef ptrdiff_t nbytes = out.nbytes
    cdef void *pout = _ptr(out)
    cdef const char *lo = <const char *>pout
    cdef const char *hi = lo + nbytes
    cdef const char *p
    cdef const void **ptrs = <const void **>PyMem_Malloc(
        nrows * sizeof(void *))
    if ptrs == NULL:
        raise MemoryError()
    held = []      # the rows stay alive while C reads them
    try:
        for i in range(nrows):
            r = rows[i]
            held.append(r)
            if r is None:
                ptrs[i] = NULL
                continue
            p = <const char *>_ptr(_require(r, out.shape, out.dtype, False,
                                            f"tree_sum: rows[{i}]"))
            nbytes = r.nbytes
            if n and p < hi and p + nbytes > lo:
                raise ValueError(f"tree_sum: rows[{i}] overlaps out")
            ptrs[i] = p
        if out.dtype == np.float32:
            with nogil:
                cnnkit_tree_sum_f32(<float *>pout,
                                    <const float *const *>ptrs, nrows, n, nt)
        else:
            with nogil:
                cnnkit_tree_sum_f64(<double *>pout,
                                    <const double *const *>ptrs, nrows, n,
                                    nt)
    finally:
        PyMem_Free(ptrs)


# --------------------------------------------------------------------------
# softmax and cross-entropy
# --------------------------------------------------------------------------
def softmax(logits):
    cdef int nt = _nthreads()
    z = _float_input(logits, "logits")
    _check_ndim(z, 2, "logits", "(N, C)")
    if z.shape[1] == 0:
        raise ValueError(f"softmax: logits need at least one class, got "
                         f"shape {z.shape}")
    p = np.empty(z.shape, dtype=z.dtype)
    cdef ptrdiff_t n = z.shape[0], c = z.shape[1]
    cdef void *pp = _ptr(p)
    cdef void *pz = _ptr(z)
    if n == 0:
        return p
    if z.dtype == np.float32:
        with nogil:
            cnnkit_softmax_f32(<float *>pp, <const float *>pz, n, c, nt)
    else:
        with nogil:
            cnnkit_softmax_f64(<double *>pp, <const double *>pz, n, c, nt)
    return p


def softmax_cross_entropy(logits, labels, sample_weight=None,
                          bint need_grad=True, double normalizer=0.0,
                          bint per_sample=False, grad_out=None,
                          losses_out=None):
    """(mean loss as a float, grad_logits or None); with sample_weight the
    weighted mean.  A positive ``normalizer`` replaces the divisor (N or the
    sum of the weights); ``per_sample=True`` also returns each row's weighted
    loss (float64) as a third value.  grad_out and losses_out, when given,
    are written instead of new arrays."""
    cdef int nt = _nthreads()
    z = _float_input(logits, "logits")
    _check_ndim(z, 2, "logits", "(N, C)")
    cdef ptrdiff_t n = z.shape[0], c = z.shape[1]
    if n == 0 or c == 0:
        raise ValueError(
            f"softmax_cross_entropy: logits need at least one row and one "
            f"class, got shape {z.shape}")
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iu":
        raise TypeError(
            f"softmax_cross_entropy: labels must be integer class indices, "
            f"got dtype {lab.dtype}")
    if lab.shape != (n,):
        raise ValueError(
            f"softmax_cross_entropy: labels must have shape ({n},) for "
            f"logits shape {z.shape}, got {lab.shape}")
    cdef const int64_t *plab
    cdef ptrdiff_t i
    if lab.dtype == np.int64 and lab.flags.c_contiguous and \
            lab.flags.aligned and lab.dtype.isnative:
        # checked in place: no temporaries on the training loop's path
        plab = <const int64_t *>_ptr(lab)
        for i in range(n):
            if plab[i] < 0 or plab[i] >= c:
                raise ValueError(
                    f"softmax_cross_entropy: labels must lie in [0, {c}) "
                    f"for {c} classes, got {plab[i]}")
    else:
        lo, hi = int(lab.min()), int(lab.max())
        if lo < 0 or hi >= c:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"softmax_cross_entropy: labels must lie in [0, {c}) for "
                f"{c} classes, got {bad}")
        lab = np.require(lab, dtype=np.int64, requirements=["C", "A"])
    cdef double *pw = NULL
    if sample_weight is not None:
        sw = np.asarray(sample_weight)
        if sw.dtype.kind not in "biuf":
            raise TypeError(
                f"softmax_cross_entropy: sample_weight must be real numbers, "
                f"got dtype {sw.dtype}")
        if sw.shape != (n,):
            raise ValueError(
                f"softmax_cross_entropy: sample_weight must have shape ({n},) "
                f"for logits shape {z.shape}, got {sw.shape}")
        sw = np.require(sw, dtype=np.float64, requirements=["C", "A"])
        if not np.isfinite(sw).all() or (sw < 0).any():
            raise ValueError(
                "softmax_cross_entropy: sample_weight must be finite and "
                ">= 0")
        pw = <double *>_ptr(sw)
    grad = (_out(grad_out, z.shape, z.dtype, "softmax_cross_entropy",
                 "grad_out") if need_grad else None)
    work = _out(losses_out, (n,), np.dtype(np.float64),
                "softmax_cross_entropy", "losses_out")
    cdef void *pg = _ptr(grad) if grad is not None else NULL
    cdef void *pz = _ptr(z)
    cdef void *pl = _ptr(lab)
    cdef double *pk = <double *>_ptr(work)
    cdef double loss
    if z.dtype == np.float32:
        with nogil:
            loss = cnnkit_softmax_xent_f32(<float *>pg, <const float *>pz,
                                           <const int64_t *>pl, pw, normalizer,
                                           pk, n, c, nt)
    else:
        with nogil:
            loss = cnnkit_softmax_xent_f64(<double *>pg, <const double *>pz,
                                           <const int64_t *>pl, pw, normalizer,
                                           pk, n, c, nt)
    if per_sample:
        return loss, grad, work
    return loss, grad
