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

Each binding has one body for float32 and float64: a cdef function fused
over `floating` that passes the arrays' data to the kernel as typed
pointers (see "typed access to checked arrays" below).
"""
import operator
import os
import threading
import warnings

import numpy as np

cimport numpy as cnp
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy, memset

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


# The default count (no set_num_threads) follows the CPUs other processes
# leave free (cnnkit_threads_free, runtime.c), under OpenMP's maximum and a
# container's CPU quota; OMP_NUM_THREADS in the environment fixes it instead.
_env_threads = bool(os.environ.get("OMP_NUM_THREADS"))
cdef int _cgroup_cpus = cnnkit_cgroup_cpus()
cnnkit_threads_free(2)          # the first sample of the load


cdef int _default_limit():
    """The default count before the load is looked at."""
    cdef int n = cnnkit_omp_max_threads()   # OMP_NUM_THREADS, threadpoolctl
    n = min(max(n, 1), _MAX_THREADS)
    if not _env_threads and 0 < _cgroup_cpus < n:
        n = _cgroup_cpus
    return n


cdef int _nthreads() except -1:
    cdef int n = _user_threads
    if cnnkit_in_forked_child():
        return 1            # GNU OpenMP's pool does not survive fork()
    if n > 0:
        return n
    n = _default_limit()
    return n if _env_threads else cnnkit_threads_free(n)


def thread_policy():
    """How the thread count is chosen, as a dict: ``adaptive`` (it
    follows the CPUs other processes leave free), ``fixed_by`` (what fixed
    it otherwise, or None), ``limit`` (the default count on an idle
    machine: OpenMP's maximum under the CPU quota), ``others`` (CPUs other
    processes used lately, None when unknown) and ``cgroup_cpus`` (a
    container's CPU quota, None when none is set)."""
    cdef double others = cnnkit_load_others()
    return {"adaptive": _user_threads == 0 and not _env_threads,
            "fixed_by": ("set_num_threads" if _user_threads else
                         "OMP_NUM_THREADS" if _env_threads else None),
            "limit": _default_limit(),
            "others": None if others < 0 else float(others),
            "cgroup_cpus": _cgroup_cpus or None}


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
# checks that protect C, each defined once
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
    """arr (an ndarray) must have ndim dimensions."""
    if cnp.PyArray_NDIM(<cnp.ndarray>arr) != ndim:
        raise ValueError(
            f"{name} must be {ndim}-D {layout}, got shape {arr.shape}")


cdef object _same_dtype(str fn, object first, str first_name, object a,
                        str name):
    """a (a float ndarray, or None) must have the dtype of first."""
    if a is not None and cnp.PyArray_TYPE(<cnp.ndarray>a) != \
            cnp.PyArray_TYPE(<cnp.ndarray>first):
        raise TypeError(
            f"{fn}: {name} has dtype {a.dtype} but {first_name} has dtype "
            f"{first.dtype}; pass arrays of one float dtype")


cdef object _check_size(str what, tuple dims):
    """The product of dims must not exceed 2**62 elements."""
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


cdef bint _c_array(object a, tuple shape, object dt, bint writeable):
    """Whether a is an ndarray of this shape and native dtype, aligned and
    C-contiguous (and writeable if asked)."""
    return (cnp.PyArray_CheckExact(a) and a.dtype == dt and
            a.shape == shape and
            (cnp.PyArray_ISCARRAY(<cnp.ndarray>a) if writeable else
             cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>a)) and
            cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a))


cdef object _require(object a, tuple shape, object dt, bint writeable,
                     str fn, object name):
    """a, or a ValueError saying that argument ``name`` of ``fn`` must be a
    (writeable) C-contiguous ndarray of this shape and dtype."""
    if not _c_array(a, shape, dt, writeable):
        raise ValueError(
            f"{fn}: {name} must be a {'writeable ' if writeable else ''}"
            f"C-contiguous {np.dtype(dt).name} ndarray of shape {shape}, got "
            f"{getattr(a, 'dtype', type(a).__name__)} "
            f"{getattr(a, 'shape', '')}")
    return a


cdef object _float_vector(object a, bint writeable, str what):
    """a, or a ValueError saying that ``what`` must be a (writeable)
    C-contiguous 1-D float32 or float64 ndarray: the array whose dtype and
    length the other arguments of a flat kernel must share."""
    cdef int tn
    if cnp.PyArray_CheckExact(a):
        tn = cnp.PyArray_TYPE(<cnp.ndarray>a)
        if (tn == cnp.NPY_FLOAT32 or tn == cnp.NPY_FLOAT64) and \
                cnp.PyArray_NDIM(<cnp.ndarray>a) == 1 and \
                _c_array(a, a.shape, a.dtype, writeable):
            return a
    raise ValueError(
        f"{what} must be a {'writeable ' if writeable else ''}C-contiguous "
        f"1-D float32 or float64 ndarray, got "
        f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")


cdef object _out(object out, tuple shape, object dt, str fn, str name):
    """The array a kernel writes: a new one when out is None, otherwise
    out itself after checking that it is a writeable, aligned, C-contiguous
    ndarray of the shape and dtype (the layers pass the buffers they keep
    between training steps).  It must not overlap the inputs."""
    if out is None:
        return np.empty(shape, dtype=dt)
    return _require(out, shape, dt, True, fn, name)


cdef object _zeros_or(object out, tuple shape, object dt, str fn, str name,
                      bint clear):
    """A gradient the kernel accumulates or skips when there are no terms:
    new memory, or out after checking it (as _out), zeroed here when clear
    (the kernel writes every element otherwise, so that new memory needs
    no zeros: a fresh 12.8 MB weight gradient of a 3136 -> 1024 dense
    layer took longer to zero than one sample's backward pass).  New
    memory of a megabyte or more starts on a 64-byte line, as the GEMM's
    streaming stores want it (gemm_stream)."""
    if out is None:
        if clear:
            return np.zeros(shape, dtype=dt)
        if math_prod(shape) * np.dtype(dt).itemsize >= 1 << 20:
            return aligned_empty(shape, dt)
        return np.empty(shape, dt)
    a = _out(out, shape, dt, fn, name)
    if clear and a.size:
        a[...] = 0
    return a


# Scratch buffers are kept per Python thread and reused across calls, so a
# training step allocates no workspace; buffers over _WS_KEEP bytes are not
# kept.
_ws_local = threading.local()
cdef object _WS_KEEP = 64 * 2 ** 20


def aligned_empty(shape, dtype):
    """np.empty(shape, dtype) whose data starts on a 64-byte boundary.

    A cache line is 64 bytes: the kernels' vector loads of packed panels
    and copies that start on one never cross two lines.  (Large NumPy
    buffers start 16 bytes into a line.)  Negative dimensions get
    np.empty's error; dtypes whose items do not tile a line (structured,
    subarray) come as np.empty gives them."""
    dtype = np.dtype(dtype)
    try:
        shape = (operator.index(shape),)
    except TypeError:
        shape = tuple(operator.index(d) for d in shape)
    if (any(d < 0 for d in shape) or dtype.itemsize == 0 or
            64 % dtype.itemsize or dtype.subdtype is not None):
        return np.empty(shape, dtype)     # its errors; or no alignment
    size = 1
    for d in shape:
        size *= d
    pad = 64 // dtype.itemsize
    raw = np.empty(size + pad, dtype=dtype)
    off = (-raw.ctypes.data % 64) // dtype.itemsize
    return raw[off:off + size].reshape(shape)


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
    buf = aligned_empty(nelem, dtype)
    if nelem * dtype.itemsize <= _WS_KEEP:
        cache[key] = buf
    return buf


# --------------------------------------------------------------------------
# typed access to checked arrays
#
# Each binding checks its arguments (dtype-free), then calls its body, the
# cdef function of the same name with a leading underscore.  A body is fused
# over `floating`: its first argument, _F32 or _F64 (a NULL pointer of the
# element type), picks the specialisation; it takes the arrays' data as
# typed pointers and calls the kernel (_kernels.pxd) with the GIL released.
# Typed memoryviews would cost more per call (acquiring a view per array).
# --------------------------------------------------------------------------
cdef float *_F32 = NULL
cdef double *_F64 = NULL


cdef inline bint _is_f32(object a) noexcept:
    """Whether a, a checked float ndarray, holds float32."""
    return cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_FLOAT32


cdef inline floating *_data(object a, floating *t) noexcept:
    """The data of a, a checked ndarray of t's element type, or NULL for
    None."""
    if a is None:
        return NULL
    return <floating *>cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline int64_t *_int64_data(object a) noexcept:
    """The data of a, a checked int64 ndarray, or NULL for None."""
    if a is None:
        return NULL
    return <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>a)


# --------------------------------------------------------------------------
# conv2d
# --------------------------------------------------------------------------
cdef object _conv_geom(cnnkit_conv2d_geom *g, tuple xs, tuple ws,
                       object stride, object padding, object dilation,
                       bint direct, object groups=1):
    """Fill g from x shape (N,C,H,W), weight shape (K,C/groups,R,S) and
    the hyperparameters (direct=False: never the direct convolution
    paths); returns the output shape."""
    fn = "conv2d"
    sh, sw = _pos_pair(stride, "stride", fn)
    dh, dw = _pos_pair(dilation, "dilation", fn)
    pt, pb, pl, pr = _pad4(padding, fn)
    n, c, h, w = xs
    k, c2, r, s = ws
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)):
        raise TypeError(f"{fn}: groups must be an int, got "
                        f"{type(groups).__name__} {groups!r}")
    ng = int(groups)
    if ng < 1:
        raise ValueError(f"{fn}: groups must be positive, got {ng}")
    if c % ng or k % ng:
        raise ValueError(
            f"{fn}: groups={ng} must divide the channels of x ({c}, shape "
            f"{xs}) and the filters of weight ({k}, shape {ws})")
    if c != c2 * ng:
        if ng == 1:
            raise ValueError(
                f"{fn}: x has {c} channels (shape {xs}) but weight expects "
                f"{c2} (shape {ws})")
        raise ValueError(
            f"{fn}: with groups={ng}, weight must have {c // ng} channels "
            f"per filter (x has {c}, shape {xs}); got weight shape {ws}")
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
    g.im2col_only = not direct
    g.winograd = 0
    g.groups = ng
    g.pool = 0
    g.res = NULL
    return (n, k, oh, ow)


def _conv_forward_path(x_shape, w_shape, stride, padding, dilation, dtype,
                       *, bint direct=True, groups=1, winograd=None):
    """"winograd", "direct" or "im2col": the path conv2d_forward takes for
    these shapes (padding as (top, bottom, left, right)), ``direct`` and
    ``winograd`` with the current threads (with finite filters)."""
    cdef cnnkit_conv2d_geom g
    _conv_geom(&g, tuple(x_shape), tuple(w_shape), stride, padding,
               dilation, direct, groups)
    g.winograd = _winograd_flag(winograd)
    if cnnkit_conv_winograd_applies(&g):
        return "winograd"
    f64 = np.dtype(dtype) == np.float64
    return ("direct" if cnnkit_conv_direct_applies(&g, _nthreads(), f64)
            else "im2col")


def _winograd_blocks(x_shape, w_shape, padding, dtype, tile):
    """Whether conv2d_forward(..., winograd=tile) of these shapes (stride
    and dilation 1, padding (top, bottom, left, right)) takes Winograd's
    route through channel blocks on the active SIMD path (filters a whole
    number of vectors), which is faster than the direct sums on most
    layers of 16 channels and more; the other route is not."""
    cdef cnnkit_conv2d_geom g
    _conv_geom(&g, tuple(x_shape), tuple(w_shape), (1, 1), padding,
               (1, 1), True, 1)
    g.winograd = _winograd_flag(tile)
    return cnnkit_conv_winograd_blocks(&g, np.dtype(dtype) == np.float64) != 0


def _conv_winograd_weight_parts(grad_out, x, weight, padding, bounds,
                                 gw_parts, ptrdiff_t min_tiles=1,
                                 gb_parts=None):
    """The weight gradients of the runs of images [bounds[q], bounds[q+1])
    of the 3x3 convolution of stride 1 of x by weight (padding (top,
    bottom, left, right)) from grad_out, by Winograd's F(4x4, 3x3) on its
    route through channel blocks, into gw_parts[q]: an int32 array of one
    flag per run, 1 where it was written, 0 where it was not (a run of fewer
    than ``min_tiles`` tiles of 4x4 outputs, an empty one among them, or a
    value of x or grad_out not finite or beyond 1e30 in magnitude);
    None, with nothing written, where the route does not take the
    convolution (the SIMD path, the shapes).  Where the route takes it and
    ``gb_parts`` is given, every nonempty run's bias gradient goes to
    gb_parts[q], the bits of ``conv2d_backward_parts``'s."""
    cdef cnnkit_conv2d_geom g
    cdef int nt = _nthreads()
    cdef int taken = 0
    grad_out, x, weight = _conv_backward_args(
        grad_out, x, weight, (1, 1), padding, (1, 1), True, &g)
    cdef ptrdiff_t ws, bs
    b, ws, bs = _parts_args("conv2d_backward", bounds, x.shape[0], gw_parts,
                            weight.shape, gb_parts, x.dtype)
    cdef ptrdiff_t nparts = b.shape[0] - 1
    g.winograd = _winograd_flag(4)
    cdef bint f64 = not _is_f32(x)
    cdef ptrdiff_t size = cnnkit_conv_winograd_weight_workspace(&g, nt, f64)
    if size <= 0:
        return None
    done = np.zeros(nparts, dtype=np.int32)
    if nparts == 0 or x.shape[0] == 0:
        return done
    work = _workspace(size, x.dtype)
    if f64:
        taken = _winograd_weight_parts(_F64, gw_parts, ws, done, gb_parts,
                                       bs, grad_out, x, b, nparts, min_tiles,
                                       work, &g, nt)
    else:
        taken = _winograd_weight_parts(_F32, gw_parts, ws, done, gb_parts,
                                       bs, grad_out, x, b, nparts, min_tiles,
                                       work, &g, nt)
    return done if taken else None


cdef int _winograd_weight_parts(
        floating *t, gw_parts, ptrdiff_t wstride, done, gb_parts,
        ptrdiff_t bstride, grad_out, x, bounds, ptrdiff_t nparts,
        ptrdiff_t min_tiles, work, const cnnkit_conv2d_geom *g,
        int nt) noexcept:
    cdef floating *pgw = _data(gw_parts, t)
    cdef floating *pgb = _data(gb_parts, t)
    cdef const floating *pgy = _data(grad_out, t)
    cdef const floating *px = _data(x, t)
    cdef floating *pk = _data(work, t)
    cdef int *pd = <int *>cnp.PyArray_DATA(<cnp.ndarray>done)
    cdef const int64_t *pb = _int64_data(bounds)
    cdef int taken
    with nogil:
        taken = cnnkit_conv_winograd_weight(pgw, wstride, pd, pgy, px, pb,
                                            nparts, min_tiles, pk, g, nt)
        if taken and pgb != NULL:
            cnnkit_conv2d_bias_parts(pgb, bstride, pgy, pb, nparts, g, nt)
    return taken


def _conv_pools(x_shape, w_shape, stride, padding, dilation, dtype,
                groups=1):
    """Whether the forward of this convolution (x_shape (C, H, W), padding
    (top, bottom, left, right)) can end with a 2x2 max pooling of stride
    2 in the same pass (a compiled plan's fused step)."""
    cdef cnnkit_conv2d_geom g
    _conv_geom(&g, (1,) + tuple(x_shape), tuple(w_shape), stride, padding,
               dilation, True, groups)
    return _geom_pools(&g, np.dtype(dtype) == np.float64)


def _blocked_lanes(dtype):
    """Lanes per block of the compiled plans' channel-blocked layout for
    dtype on the active SIMD path; 0 where the path has no blocked
    convolution."""
    return cnnkit_blocked_lanes(np.dtype(dtype) == np.float64)


def _conv_blocked(x_shape, w_shape, stride, padding, dilation, dtype,
                  groups=1, border=0, winograd=False, pool=False):
    """Whether the plans' blocked convolution computes this convolution
    (x_shape (C, H, W), padding (top, bottom, left, right)) from a blocked
    input with a border of ``border`` pixels, or with ``border`` -1 from a
    plain (C, H, W) input (with ``winograd`` True or 2, by Winograd's
    F(2x2, 3x3), 4 by F(4x4, 3x3); with ``pool``, and a 2x2 max pooling
    after it, which Winograd's and the pass from a plain input take)."""
    cdef cnnkit_conv2d_geom g
    _conv_geom(&g, (1,) + tuple(x_shape), tuple(w_shape), stride, padding,
               dilation, True, groups)
    g.pool = 1 if pool else 0
    g.winograd = _winograd_flag(winograd)
    return cnnkit_conv_blocked_applies(&g, border, bool(winograd),
                                       np.dtype(dtype) == np.float64) != 0


def _winograd_weights(w, dtype, tile=2):
    """The weights (K, C, 3, 3) of a blocked Winograd step: U = G w G^T
    per filter and channel, in float64, then rounded once to dtype, as
    (A*A, C, K) with U[A*i + j, c, k] = (G w[k, c] G^T)[i, j], A = tile +
    2: G (4, 3) for F(2x2, 3x3), (6, 3) for F(4x4, 3x3)."""
    if tile == 4:
        # float literals: this module divides integers as C does
        g = np.array([[0.25, 0.0, 0.0], [-1.0 / 6, -1.0 / 6, -1.0 / 6],
                      [-1.0 / 6, 1.0 / 6, -1.0 / 6],
                      [1.0 / 24, 1.0 / 12, 1.0 / 6],
                      [1.0 / 24, -1.0 / 12, 1.0 / 6], [0.0, 0.0, 1.0]])
    else:
        g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5],
                      [0, 0, 1]])
    u = np.einsum("ij,kcjl,ml->imck", g, np.asarray(w, np.float64), g)
    k, c = w.shape[0], w.shape[1]
    return np.ascontiguousarray(u.reshape(g.shape[0] ** 2, c, k),
                                dtype=dtype)


def _blocked_size(c, h, w, border, lanes):
    """Elements of one image's (c, h, w) tensor in the blocked layout."""
    return -(-c // lanes) * lanes * (h + 2 * border) * (w + 2 * border)


cdef bint _geom_pools(cnnkit_conv2d_geom *g, bint f64):
    """Sets g's pooling and says whether the direct forward takes it (for
    one image: g.n is 1)."""
    g.pool = 1
    return cnnkit_conv_direct_applies(g, 1, f64) != 0


cdef int _winograd_flag(object winograd) except? -2:
    """The geometry's winograd field: None the default (0: never yet),
    True (or 1, 2) F(2x2, 3x3), 4 F(4x4, 3x3) (wherever they apply),
    False (or 0) -1; NumPy's bools as Python's.  The plans' blocked steps
    read it as their tile (cnnkit_conv_winograd_tile)."""
    if winograd is None:
        return 0
    if winograd == 4:
        return 2
    if winograd == 2 or winograd == 1:  # True == 1
        return 1
    if winograd == 0:                   # False == 0
        return -1
    raise ValueError(f"winograd must be None, a bool, 2 or 4, got "
                     f"{winograd!r}")


def conv2d_forward(x, weight, bias, stride, padding, dilation,
                   bint relu=False, out=None, *, bint direct=True, groups=1,
                   winograd=None):
    """y (N,K,OH,OW) of x (N,C,H,W), weight (K,C/groups,R,S), bias (K,)
    or None;
    padding is (top, bottom, left, right).  relu=True returns relu(y) from
    the same pass (the bits of relu_forward(y)); out, when given, is
    written instead of a new array.  direct=False never takes the direct
    convolution path or Winograd's, only im2col (the direct path's bits;
    to compare them).  winograd=True (or 2) takes Winograd's F(2x2, 3x3)
    for a 3x3 stride-1 convolution, winograd=4 F(4x4, 3x3) (another
    rounding; no shape takes either by default)."""
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
    _same_dtype("conv2d", x, "x", weight, "weight")
    _same_dtype("conv2d", x, "x", bias, "bias")
    out_shape = _conv_geom(&g, x.shape, weight.shape, stride, padding,
                           dilation, direct, groups)
    g.winograd = _winograd_flag(winograd)
    y = _out(out, out_shape, x.dtype, "conv2d", "out")
    if y.size == 0:
        return y
    work = _workspace(cnnkit_conv2d_workspace(&g, CNNKIT_CONV_FORWARD, nt),
                      x.dtype)
    if _is_f32(y):
        _conv2d_forward(_F32, y, x, weight, bias, relu, work, &g, nt)
    else:
        _conv2d_forward(_F64, y, x, weight, bias, relu, work, &g, nt)
    return y


cdef void _conv2d_forward(floating *t, y, x, weight, bias, bint relu, work,
                          const cnnkit_conv2d_geom *g, int nt) noexcept:
    cdef floating *py = _data(y, t)
    cdef const floating *px = _data(x, t)
    cdef const floating *pw = _data(weight, t)
    cdef const floating *pb = _data(bias, t)
    cdef floating *pk = _data(work, t)
    with nogil:
        cnnkit_conv2d_forward(py, px, pw, pb, relu, pk, g, nt)


cdef tuple _conv_backward_args(grad_out, x, weight, stride, padding,
                               dilation, bint direct, cnnkit_conv2d_geom *g,
                               object groups=1):
    """Checked (grad_out, x, weight) of a convolution's backward pass;
    fills g."""
    grad_out = _float_input(grad_out, "grad_out")
    x = _float_input(x, "x")
    weight = _float_input(weight, "weight")
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    _check_ndim(weight, 4, "weight", "(K, C, R, S)")
    _same_dtype("conv2d_backward", x, "x", weight, "weight")
    _same_dtype("conv2d_backward", x, "x", grad_out, "grad_out")
    out_shape = _conv_geom(g, x.shape, weight.shape, stride, padding,
                           dilation, direct, groups)
    if grad_out.shape != out_shape:
        raise ValueError(
            f"conv2d_backward: grad_out must have the output shape "
            f"{out_shape} of x {x.shape} and weight {weight.shape}, got "
            f"{grad_out.shape}")
    return grad_out, x, weight


cdef object _conv_input_grad(grad_out, x, weight,
                             const cnnkit_conv2d_geom *g, int nt,
                             object out):
    """The gradient with respect to the input x (into out when given)."""
    gx = _out(out, x.shape, x.dtype, "conv2d_backward", "gx_out")
    if not gx.size:
        return gx                               # (the kernel writes all)
    work = _workspace(
        cnnkit_conv2d_workspace(g, CNNKIT_CONV_BACKWARD_DATA, nt), x.dtype)
    if _is_f32(gx):
        _conv2d_backward_data(_F32, gx, grad_out, weight, work, g, nt)
    else:
        _conv2d_backward_data(_F64, gx, grad_out, weight, work, g, nt)
    return gx


cdef void _conv2d_backward_data(floating *t, gx, grad_out, weight, work,
                                const cnnkit_conv2d_geom *g,
                                int nt) noexcept:
    cdef floating *pgx = _data(gx, t)
    cdef const floating *pgy = _data(grad_out, t)
    cdef const floating *pw = _data(weight, t)
    cdef floating *pk = _data(work, t)
    with nogil:
        cnnkit_conv2d_backward_data(pgx, pgy, pw, pk, g, nt)


def conv2d_backward(grad_out, x, weight, stride, padding, dilation,
                    bint need_input_grad=True, bint need_bias_grad=True,
                    gx_out=None, gw_out=None, gb_out=None, *,
                    bint direct=True, groups=1):
    """(grad_x or None, grad_weight, grad_bias or None); the *_out arrays,
    when given, are written and returned instead of new ones.  direct=False
    never takes the direct convolution paths (as for conv2d_forward); the
    gradients are then the same sums in another order."""
    cdef cnnkit_conv2d_geom g
    cdef int nt = _nthreads()
    grad_out, x, weight = _conv_backward_args(
        grad_out, x, weight, stride, padding, dilation, direct, &g, groups)
    dt = x.dtype
    gx = (_conv_input_grad(grad_out, x, weight, &g, nt, gx_out)
          if need_input_grad else None)
    # no terms (an empty batch or output): the kernel writes nothing
    cdef bint empty = grad_out.size == 0
    gw = _zeros_or(gw_out, weight.shape, dt, "conv2d_backward", "gw_out",
                   empty)
    gb = (_zeros_or(gb_out, (weight.shape[0],), dt, "conv2d_backward",
                    "gb_out", empty) if need_bias_grad else None)
    if gw.size or (gb is not None and gb.size):
        work = _workspace(
            cnnkit_conv2d_workspace(&g, CNNKIT_CONV_BACKWARD_WEIGHT, nt), dt)
        if _is_f32(gw):
            _conv2d_backward_weight(_F32, gw, gb, grad_out, x, work, &g, nt)
        else:
            _conv2d_backward_weight(_F64, gw, gb, grad_out, x, work, &g, nt)
    return gx, gw, gb


cdef void _conv2d_backward_weight(floating *t, gw, gb, grad_out, x, work,
                                  const cnnkit_conv2d_geom *g,
                                  int nt) noexcept:
    cdef floating *pgw = _data(gw, t)
    cdef floating *pgb = _data(gb, t)
    cdef const floating *pgy = _data(grad_out, t)
    cdef const floating *px = _data(x, t)
    cdef floating *pk = _data(work, t)
    with nogil:
        cnnkit_conv2d_backward_weight(pgw, pgb, pgy, px, pk, g, nt)


cdef tuple _parts_args(str fn, object bounds, object n, object gw_parts,
                       tuple wshape, object gb_parts, object dt,
                       bint gw_tree=False):
    """Check the runs of samples and the per-run gradient arrays of the
    *_parts kernels (gw_parts may be None when gw_tree: the weight
    gradients' tree sum goes elsewhere); return (bounds as int64, weight
    stride, bias stride) with the strides in elements."""
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
        if arr is None and (name == "gb_parts" or gw_tree):
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


def _conv2d_input_grad(grad_out, x, weight, stride, padding, dilation,
                       gx_out=None, *, groups=1):
    """The input gradient alone of conv2d_backward (its bits), into gx_out
    when given: for a caller that has the weight gradient otherwise."""
    cdef cnnkit_conv2d_geom g
    cdef int nt = _nthreads()
    grad_out, x, weight = _conv_backward_args(
        grad_out, x, weight, stride, padding, dilation, True, &g, groups)
    return _conv_input_grad(grad_out, x, weight, &g, nt, gx_out)


def conv2d_backward_parts(grad_out, x, weight, stride, padding, dilation,
                          bounds, gw_parts, gb_parts,
                          bint need_input_grad=True, gx_out=None, *,
                          bint direct=True, groups=1):
    """conv2d_backward with the weight (and bias) gradients of each run of
    images [bounds[q], bounds[q+1]) written to gw_parts[q] (gb_parts[q]);
    returns grad_x or None.  Empty runs are not written.  direct=False:
    as for conv2d_backward."""
    cdef cnnkit_conv2d_geom g
    cdef int nt = _nthreads()
    grad_out, x, weight = _conv_backward_args(
        grad_out, x, weight, stride, padding, dilation, direct, &g, groups)
    cdef ptrdiff_t ws, bs
    b, ws, bs = _parts_args("conv2d_backward", bounds, x.shape[0], gw_parts,
                            weight.shape, gb_parts, x.dtype)
    gx = (_conv_input_grad(grad_out, x, weight, &g, nt, gx_out)
          if need_input_grad else None)
    cdef ptrdiff_t nparts = b.shape[0] - 1
    if nparts and (weight.size or gb_parts is not None):
        work = _workspace(cnnkit_conv2d_workspace(
            &g, CNNKIT_CONV_BACKWARD_WEIGHT_PARTS, nt), x.dtype)
        if _is_f32(x):
            _conv2d_backward_weight_parts(_F32, gw_parts, ws, gb_parts, bs,
                                          grad_out, x, b, nparts, work, &g,
                                          nt)
        else:
            _conv2d_backward_weight_parts(_F64, gw_parts, ws, gb_parts, bs,
                                          grad_out, x, b, nparts, work, &g,
                                          nt)
    return gx


cdef void _conv2d_backward_weight_parts(
        floating *t, gw_parts, ptrdiff_t wstride, gb_parts,
        ptrdiff_t bstride, grad_out, x, bounds, ptrdiff_t nparts, work,
        const cnnkit_conv2d_geom *g, int nt) noexcept:
    cdef floating *pgw = _data(gw_parts, t)
    cdef floating *pgb = _data(gb_parts, t)
    cdef const floating *pgy = _data(grad_out, t)
    cdef const floating *px = _data(x, t)
    cdef const int64_t *pb = _int64_data(bounds)
    cdef floating *pk = _data(work, t)
    with nogil:
        cnnkit_conv2d_backward_weight_parts(pgw, wstride, pgb, bstride, pgy,
                                            px, pb, nparts, pk, g, nt)


# --------------------------------------------------------------------------
# ReLU
# --------------------------------------------------------------------------
def relu_forward(x, out=None):
    cdef int nt = _nthreads()
    x = _float_input(x, "x")
    y = _out(out, x.shape, x.dtype, "relu", "out")
    if x.size:
        if _is_f32(x):
            _relu_forward(_F32, y, x, nt)
        else:
            _relu_forward(_F64, y, x, nt)
    return y


cdef void _relu_forward(floating *t, y, x, int nt) noexcept:
    cdef floating *py = _data(y, t)
    cdef const floating *px = _data(x, t)
    cdef ptrdiff_t n = cnp.PyArray_SIZE(<cnp.ndarray>x)
    with nogil:
        cnnkit_relu_forward(py, px, n, nt)


def eltwise(a, b, bint mul=False, bint relu=False, out=None):
    """a + b (a * b with mul) element by element, then with relu a ReLU in
    the same pass; a and b of one shape and float dtype (NumPy's bits for
    the sum or product -- of two NaNs, either payload -- and
    cnnkit_relu_forward's for the ReLU).  out may be
    a or b itself, and overlap nothing else."""
    cdef int nt = _nthreads()
    fn = "multiply" if mul else "add"
    a = _float_input(a, f"{fn}: a")
    b = _float_input(b, f"{fn}: b")
    _same_dtype(fn, a, "a", b, "b")
    if a.shape != b.shape:
        raise ValueError(f"{fn}: a and b must have one shape; got {a.shape} "
                         f"and {b.shape}")
    y = _out(out, a.shape, a.dtype, fn, "out")
    if a.size:
        if _is_f32(a):
            _eltwise(_F32, y, a, b, mul, relu, nt)
        else:
            _eltwise(_F64, y, a, b, mul, relu, nt)
    return y


cdef void _eltwise(floating *t, y, a, b, bint mul, bint relu,
                   int nt) noexcept:
    cdef floating *py = _data(y, t)
    cdef const floating *pa = _data(a, t)
    cdef const floating *pb = _data(b, t)
    cdef ptrdiff_t m = cnp.PyArray_SIZE(<cnp.ndarray>a)
    with nogil:
        cnnkit_eltwise_relu(py, pa, pb, m, mul, relu, nt)


def relu_backward(grad_out, x, out=None):
    cdef int nt = _nthreads()
    grad_out = _float_input(grad_out, "grad_out")
    x = _float_input(x, "x")
    _same_dtype("relu_backward", x, "x", grad_out, "grad_out")
    if grad_out.shape != x.shape:
        raise ValueError(
            f"relu_backward: grad_out must have the shape of x {x.shape}, "
            f"got {grad_out.shape}")
    gx = _out(out, x.shape, x.dtype, "relu_backward", "out")
    if x.size:
        if _is_f32(x):
            _relu_backward(_F32, gx, grad_out, x, nt)
        else:
            _relu_backward(_F64, gx, grad_out, x, nt)
    return gx


cdef void _relu_backward(floating *t, gx, grad_out, x, int nt) noexcept:
    cdef floating *pgx = _data(gx, t)
    cdef const floating *pgy = _data(grad_out, t)
    cdef const floating *px = _data(x, t)
    cdef ptrdiff_t n = cnp.PyArray_SIZE(<cnp.ndarray>x)
    with nogil:
        cnnkit_relu_backward(pgx, pgy, px, n, nt)


# --------------------------------------------------------------------------
# leaky ReLU, sigmoid, tanh, SiLU, GELU
# --------------------------------------------------------------------------
# One body per pass for the element-wise activations, chosen by a code:
# the hyperparameter `a` is the negative slope (leaky ReLU) or whether GELU
# takes its tanh approximation.
cdef enum:
    _LEAKY_RELU, _SIGMOID, _TANH, _SILU, _GELU


cdef object _act_forward(str fn, int op, x, double a, out):
    cdef int nt = _nthreads()
    x = _float_input(x, "x")
    y = _out(out, x.shape, x.dtype, fn, "out")
    if x.size:
        if _is_f32(x):
            _act_forward_body(_F32, op, y, x, a, nt)
        else:
            _act_forward_body(_F64, op, y, x, a, nt)
    return y


cdef void _act_forward_body(floating *t, int op, y, x, double a,
                            int nt) noexcept:
    cdef floating *py = _data(y, t)
    cdef const floating *px = _data(x, t)
    cdef ptrdiff_t n = cnp.PyArray_SIZE(<cnp.ndarray>x)
    cdef int approx = a != 0
    with nogil:
        if op == _LEAKY_RELU:
            cnnkit_leaky_relu_forward(py, px, n, a, nt)
        elif op == _SIGMOID:
            cnnkit_sigmoid_forward(py, px, n, nt)
        elif op == _TANH:
            cnnkit_tanh_forward(py, px, n, nt)
        elif op == _SILU:
            cnnkit_silu_forward(py, px, n, nt)
        else:
            cnnkit_gelu_forward(py, px, n, approx, nt)


cdef object _act_backward(str fn, int op, grad_out, x, double a, out):
    cdef int nt = _nthreads()
    grad_out = _float_input(grad_out, "grad_out")
    x = _float_input(x, "x")
    _same_dtype(fn, x, "x", grad_out, "grad_out")
    if grad_out.shape != x.shape:
        raise ValueError(
            f"{fn}: grad_out must have the shape of x {x.shape}, "
            f"got {grad_out.shape}")
    gx = _out(out, x.shape, x.dtype, fn, "out")
    if x.size:
        if _is_f32(x):
            _act_backward_body(_F32, op, gx, grad_out, x, a, nt)
        else:
            _act_backward_body(_F64, op, gx, grad_out, x, a, nt)
    return gx


cdef void _act_backward_body(floating *t, int op, gx, grad_out, x, double a,
                             int nt) noexcept:
    cdef floating *pgx = _data(gx, t)
    cdef const floating *pgy = _data(grad_out, t)
    cdef const floating *px = _data(x, t)
    cdef ptrdiff_t n = cnp.PyArray_SIZE(<cnp.ndarray>x)
    cdef int approx = a != 0
    with nogil:
        if op == _LEAKY_RELU:
            cnnkit_leaky_relu_backward(pgx, pgy, px, n, a, nt)
        elif op == _SIGMOID:
            cnnkit_sigmoid_backward(pgx, pgy, px, n, nt)
        elif op == _TANH:
            cnnkit_tanh_backward(pgx, pgy, px, n, nt)
        elif op == _SILU:
            cnnkit_silu_backward(pgx, pgy, px, n, nt)
        else:
            cnnkit_gelu_backward(pgx, pgy, px, n, approx, nt)


cdef double _slope(object negative_slope, str fn) except? -1.0:
    """The negative slope as a finite double."""
    cdef double a = negative_slope
    if not (a == a and a - a == 0):
        raise ValueError(f"{fn}: negative_slope must be finite, got {a!r}")
    return a


def leaky_relu_forward(x, double negative_slope=0.01, out=None):
    return _act_forward("leaky_relu", _LEAKY_RELU, x,
                        _slope(negative_slope, "leaky_relu"), out)


def leaky_relu_backward(grad_out, x, double negative_slope=0.01, out=None):
    return _act_backward("leaky_relu_backward", _LEAKY_RELU, grad_out, x,
                         _slope(negative_slope, "leaky_relu_backward"), out)


def sigmoid_forward(x, out=None):
    return _act_forward("sigmoid", _SIGMOID, x, 0.0, out)


def sigmoid_backward(grad_out, x, out=None):
    return _act_backward("sigmoid_backward", _SIGMOID, grad_out, x, 0.0, out)


def tanh_forward(x, out=None):
    return _act_forward("tanh", _TANH, x, 0.0, out)


def tanh_backward(grad_out, x, out=None):
    return _act_backward("tanh_backward", _TANH, grad_out, x, 0.0, out)


def silu_forward(x, out=None):
    return _act_forward("silu", _SILU, x, 0.0, out)


def silu_backward(grad_out, x, out=None):
    return _act_backward("silu_backward", _SILU, grad_out, x, 0.0, out)


def gelu_forward(x, bint tanh_approximation=False, out=None):
    return _act_forward("gelu", _GELU, x, 1.0 if tanh_approximation else 0.0,
                        out)


def gelu_backward(grad_out, x, bint tanh_approximation=False, out=None):
    return _act_backward("gelu_backward", _GELU, grad_out, x,
                         1.0 if tanh_approximation else 0.0, out)


# --------------------------------------------------------------------------
# max and average pooling
# --------------------------------------------------------------------------
cdef object _pool_geom(cnnkit_pool2d_geom *g, tuple xs, object kernel,
                       object stride, object padding, str fn="max_pool2d",
                       bint ceil_mode=False):
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
    if ceil_mode:
        # PyTorch's rule: round up, but drop a last window that would start
        # in the bottom (right) padding
        if kh > h + 2 * ph + sh - 1 or kw > w + 2 * pw + sw - 1:
            raise ValueError(
                f"{fn}: kernel_size {(kh, kw)} leaves no window in the "
                f"padded input ({h + 2 * ph}, {w + 2 * pw}) of x shape {xs}, "
                f"even with ceil_mode")
        oh = (h + 2 * ph - kh + sh - 1) // sh + 1
        ow = (w + 2 * pw - kw + sw - 1) // sw + 1
        if (oh - 1) * sh >= h + ph:
            oh -= 1
        if (ow - 1) * sw >= w + pw:
            ow -= 1
    else:
        if kh > h + 2 * ph or kw > w + 2 * pw:
            raise ValueError(
                f"{fn}: kernel_size {(kh, kw)} is larger than the padded "
                f"input ({h + 2 * ph}, {w + 2 * pw}) of x shape {xs}")
        oh = (h + 2 * ph - kh) // sh + 1
        ow = (w + 2 * pw - kw) // sw + 1
    _check_size("max_pool2d input", xs)
    _check_size("max_pool2d output", (n, c, oh, ow))
    g.planes, g.h, g.w = n * c, h, w
    g.oh, g.ow = oh, ow
    g.kh, g.kw, g.stride_h, g.stride_w = kh, kw, sh, sw
    g.pad_h, g.pad_w = ph, pw
    return (n, c, oh, ow)


cdef tuple _pool_input_shape(object input_shape, str fn):
    """input_shape as 4 sizes >= 0."""
    shp = tuple(int(d) for d in input_shape)
    if len(shp) != 4 or min(shp) < 0:
        raise ValueError(
            f"{fn}: input_shape must be 4 sizes >= 0 (N, C, H, W), got "
            f"{tuple(input_shape)}")
    return shp


def max_pool2d_forward(x, kernel_size, stride, padding, out=None,
                       indices_out=None, bint ceil_mode=False):
    """(y, indices) of x (N,C,H,W); all hyperparameters pairs."""
    cdef cnnkit_pool2d_geom g
    cdef int nt = _nthreads()
    x = _float_input(x, "x")
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    out_shape = _pool_geom(&g, x.shape, kernel_size, stride, padding,
                           "max_pool2d", ceil_mode)
    y = _out(out, out_shape, x.dtype, "max_pool2d", "out")
    idx = _out(indices_out, out_shape, np.dtype(np.int64), "max_pool2d",
               "indices_out")
    if y.size:
        if _is_f32(x):
            _max_pool2d_forward(_F32, y, idx, x, &g, nt)
        else:
            _max_pool2d_forward(_F64, y, idx, x, &g, nt)
    return y, idx


cdef void _max_pool2d_forward(floating *t, y, idx, x,
                              const cnnkit_pool2d_geom *g, int nt) noexcept:
    cdef floating *py = _data(y, t)
    cdef int64_t *pi = _int64_data(idx)
    cdef const floating *px = _data(x, t)
    with nogil:
        cnnkit_max_pool2d_forward(py, pi, px, g, nt)


def max_pool2d_backward(grad_out, indices, input_shape, out=None,
                        relu_pooled=None):
    """grad_x of max pooling; with relu_pooled (the forward's output) the
    gradient also goes back through the ReLU that produced the pool's input
    (the bits of relu_backward(max_pool2d_backward(...), relu_output))."""
    cdef cnnkit_pool2d_geom g
    cdef int nt = _nthreads()
    fn = "max_pool2d_backward"
    grad_out = _float_input(grad_out, "grad_out")
    ind = np.asarray(indices)
    if ind.dtype.kind not in "iu" :
        raise TypeError(
            f"{fn}: indices must be an integer array, got dtype {ind.dtype}")
    _check_ndim(grad_out, 4, "grad_out", "(N, C, OH, OW)")
    if ind.shape != grad_out.shape:
        raise ValueError(
            f"{fn}: indices shape {ind.shape} must equal grad_out shape "
            f"{grad_out.shape}")
    shp = _pool_input_shape(input_shape, fn)
    if shp[:2] != grad_out.shape[:2]:
        raise ValueError(
            f"{fn}: input_shape {shp} and grad_out shape {grad_out.shape} "
            f"differ in (N, C)")
    _check_size("max_pool2d_backward input", shp)
    hw = shp[2] * shp[3]
    gx = _out(out, shp, grad_out.dtype, fn, "out")
    if gx.size == 0:
        if ind.size:
            raise ValueError(f"{fn}: indices point into an empty input "
                             f"plane")
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
    if relu_pooled is not None:
        _require(relu_pooled, grad_out.shape, grad_out.dtype, False, fn,
                 "relu_pooled")
    cdef ptrdiff_t bad
    if _is_f32(gx):
        bad = _max_pool2d_backward(_F32, gx, grad_out, ind, relu_pooled, &g,
                                   nt)
    else:
        bad = _max_pool2d_backward(_F64, gx, grad_out, ind, relu_pooled, &g,
                                   nt)
    if bad:
        _check_indices(ind, hw, shp)
    return gx


cdef object _check_indices(object ind, object hw, tuple shp):
    """The pooling indices ind must point into input planes of hw
    elements."""
    lo, hi = int(ind.min()), int(ind.max())
    if lo < 0 or hi >= hw:
        raise ValueError(
            f"max_pool2d_backward: indices must lie in [0, {hw}) for "
            f"input planes of {shp[2]}x{shp[3]}, got values in "
            f"[{lo}, {hi}]")


cdef ptrdiff_t _max_pool2d_backward(floating *t, gx, grad_out, ind,
                                    relu_pooled, const cnnkit_pool2d_geom *g,
                                    int nt) noexcept:
    cdef floating *pgx = _data(gx, t)
    cdef const floating *pgy = _data(grad_out, t)
    cdef const int64_t *pi = _int64_data(ind)
    cdef const floating *py = _data(relu_pooled, t)
    cdef ptrdiff_t bad
    with nogil:
        bad = cnnkit_max_pool2d_backward(pgx, pgy, pi, py, g, nt)
    return bad


def avg_pool2d_forward(x, kernel_size, stride, padding,
                       bint count_include_pad=True, bint ceil_mode=False):
    """y of x (N,C,H,W); all hyperparameters pairs."""
    cdef cnnkit_pool2d_geom g
    cdef int nt = _nthreads()
    x = _float_input(x, "x")
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    out_shape = _pool_geom(&g, x.shape, kernel_size, stride, padding,
                           "avg_pool2d", ceil_mode)
    y = np.empty(out_shape, dtype=x.dtype)
    if y.size:
        if _is_f32(x):
            _avg_pool2d_forward(_F32, y, x, &g, count_include_pad, nt)
        else:
            _avg_pool2d_forward(_F64, y, x, &g, count_include_pad, nt)
    return y


cdef void _avg_pool2d_forward(floating *t, y, x, const cnnkit_pool2d_geom *g,
                              int count_include_pad, int nt) noexcept:
    cdef floating *py = _data(y, t)
    cdef const floating *px = _data(x, t)
    with nogil:
        cnnkit_avg_pool2d_forward(py, px, g, count_include_pad, nt)


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride, padding,
                        bint count_include_pad=True, bint ceil_mode=False):
    cdef cnnkit_pool2d_geom g
    cdef int nt = _nthreads()
    fn = "avg_pool2d_backward"
    grad_out = _float_input(grad_out, "grad_out")
    _check_ndim(grad_out, 4, "grad_out", "(N, C, OH, OW)")
    shp = _pool_input_shape(input_shape, fn)
    out_shape = _pool_geom(&g, shp, kernel_size, stride, padding, fn,
                           ceil_mode)
    if grad_out.shape != out_shape:
        raise ValueError(
            f"{fn}: grad_out must have the output shape {out_shape} of "
            f"input_shape {shp}, got {grad_out.shape}")
    gx = np.empty(shp, dtype=grad_out.dtype)
    if gx.size:
        if _is_f32(gx):
            _avg_pool2d_backward(_F32, gx, grad_out, &g, count_include_pad,
                                 nt)
        else:
            _avg_pool2d_backward(_F64, gx, grad_out, &g, count_include_pad,
                                 nt)
    return gx


cdef void _avg_pool2d_backward(floating *t, gx, grad_out,
                               const cnnkit_pool2d_geom *g,
                               int count_include_pad, int nt) noexcept:
    cdef floating *pgx = _data(gx, t)
    cdef const floating *pgy = _data(grad_out, t)
    with nogil:
        cnnkit_avg_pool2d_backward(pgx, pgy, g, count_include_pad, nt)


def global_max_pool2d_forward(x, out=None, indices_out=None):
    """(y, indices) of x (N,C,H,W): each plane's maximum, (N, C), and
    its flat h*W+w position (int64)."""
    cdef int nt = _nthreads()
    fn = "global_max_pool2d"
    x = _float_input(x, "x")
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    n, c, h, w = x.shape
    if h == 0 or w == 0:
        raise ValueError(
            f"{fn}: x has an empty spatial plane (H, W) = ({h}, {w}) (shape "
            f"{x.shape}); a plane needs an element for its maximum")
    y = _out(out, (n, c), x.dtype, fn, "out")
    idx = _out(indices_out, (n, c), np.dtype(np.int64), fn, "indices_out")
    cdef ptrdiff_t planes = n * c, hw = h * w
    if y.size:
        if _is_f32(x):
            _global_max_pool2d_forward(_F32, y, idx, x, planes, hw, nt)
        else:
            _global_max_pool2d_forward(_F64, y, idx, x, planes, hw, nt)
    return y, idx


cdef void _global_max_pool2d_forward(floating *t, y, idx, x,
                                     ptrdiff_t planes, ptrdiff_t hw,
                                     int nt) noexcept:
    cdef floating *py = _data(y, t)
    cdef int64_t *pi = _int64_data(idx)
    cdef const floating *px = _data(x, t)
    with nogil:
        cnnkit_global_max_pool2d_forward(py, pi, px, planes, hw, nt)


def global_max_pool2d_backward(grad_out, indices, input_shape, out=None):
    """grad_x (N,C,H,W) of global max pooling: grad_out (N, C) at the
    indices, zero elsewhere."""
    cdef int nt = _nthreads()
    fn = "global_max_pool2d_backward"
    grad_out = _float_input(grad_out, "grad_out")
    _check_ndim(grad_out, 2, "grad_out", "(N, C)")
    ind = np.asarray(indices)
    if ind.dtype.kind not in "iu":
        raise TypeError(
            f"{fn}: indices must be an integer array, got dtype {ind.dtype}")
    if ind.shape != grad_out.shape:
        raise ValueError(
            f"{fn}: indices shape {ind.shape} must equal grad_out shape "
            f"{grad_out.shape}")
    shp = _pool_input_shape(input_shape, fn)
    if shp[:2] != grad_out.shape:
        raise ValueError(
            f"{fn}: grad_out must have shape (N, C) of input_shape (N, C, H, "
            f"W) = {shp}; got {grad_out.shape}")
    _check_size(f"{fn} input", shp)
    hw = shp[2] * shp[3]
    gx = _out(out, shp, grad_out.dtype, fn, "out")
    if gx.size == 0:
        if ind.size:
            raise ValueError(f"{fn}: indices point into an empty input "
                             f"plane")
        return gx
    if ind.size and (int(ind.min()) < 0 or int(ind.max()) >= hw):
        raise ValueError(
            f"{fn}: indices must lie in [0, {hw}) for input planes of "
            f"{shp[2]}x{shp[3]}, got values in [{int(ind.min())}, "
            f"{int(ind.max())}]")
    ind = np.require(ind, dtype=np.int64, requirements=["C", "A"])
    cdef ptrdiff_t bad, planes = shp[0] * shp[1], phw = hw
    if _is_f32(gx):
        bad = _global_max_pool2d_backward(_F32, gx, grad_out, ind, planes,
                                          phw, nt)
    else:
        bad = _global_max_pool2d_backward(_F64, gx, grad_out, ind, planes,
                                          phw, nt)
    if bad:      # pragma: no cover (checked above)
        raise ValueError(f"{fn}: indices out of range")
    return gx


cdef ptrdiff_t _global_max_pool2d_backward(floating *t, gx, grad_out, ind,
                                           ptrdiff_t planes, ptrdiff_t hw,
                                           int nt) noexcept:
    cdef floating *pgx = _data(gx, t)
    cdef const floating *pgy = _data(grad_out, t)
    cdef const int64_t *pi = _int64_data(ind)
    cdef ptrdiff_t bad
    with nogil:
        bad = cnnkit_global_max_pool2d_backward(pgx, pgy, pi, planes, hw, nt)
    return bad


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
    _same_dtype("dense", x, "x", weight, "weight")
    _same_dtype("dense", x, "x", bias, "bias")
    y = _out(out, (n, o), x.dtype, "dense", "out")
    if y.size == 0:
        return y
    work = _workspace(cnnkit_dense_workspace(n, f, o, nt), x.dtype)
    if _is_f32(y):
        _dense_forward(_F32, y, x, weight, bias, work, n, f, o, nt)
    else:
        _dense_forward(_F64, y, x, weight, bias, work, n, f, o, nt)
    return y


cdef void _dense_forward(floating *t, y, x, weight, bias, work, ptrdiff_t n,
                         ptrdiff_t f, ptrdiff_t o, int nt) noexcept:
    cdef floating *py = _data(y, t)
    cdef const floating *px = _data(x, t)
    cdef const floating *pw = _data(weight, t)
    cdef const floating *pb = _data(bias, t)
    cdef floating *pk = _data(work, t)
    with nogil:
        cnnkit_dense_forward(py, px, pw, pb, pk, n, f, o, nt)


cdef tuple _dense_backward_args(grad_out, x, weight):
    """Checked (grad_out, x, weight, n, f, o) of a dense layer's backward
    pass."""
    grad_out = _float_input(grad_out, "grad_out")
    x = _float_input(x, "x")
    weight = _float_input(weight, "weight")
    n, f, o = _dense_check("dense_backward", x, weight)
    _same_dtype("dense_backward", x, "x", weight, "weight")
    _same_dtype("dense_backward", x, "x", grad_out, "grad_out")
    if grad_out.shape != (n, o):
        raise ValueError(
            f"dense_backward: grad_out must have shape {(n, o)} for x "
            f"{x.shape} and weight {weight.shape}, got {grad_out.shape}")
    return grad_out, x, weight, n, f, o


def dense_backward(grad_out, x, weight, bint need_input_grad=True,
                   bint need_bias_grad=True, gx_out=None, gw_out=None,
                   gb_out=None):
    cdef int nt = _nthreads()
    cdef ptrdiff_t n, f, o
    grad_out, x, weight, n, f, o = _dense_backward_args(grad_out, x, weight)
    dt = x.dtype
    cdef bint empty = n == 0 or o == 0
    gx = (_zeros_or(gx_out, (n, f), dt, "dense_backward", "gx_out", empty)
          if need_input_grad else None)
    gw = _zeros_or(gw_out, (o, f), dt, "dense_backward", "gw_out", empty)
    gb = (_zeros_or(gb_out, (o,), dt, "dense_backward", "gb_out", empty)
          if need_bias_grad else None)
    if o == 0 or f == 0 and gb is None:
        return gx, gw, gb
    work = _workspace(cnnkit_dense_workspace(n, f, o, nt), dt)
    gx_written = gx if gx is not None and gx.size else None
    if _is_f32(x):
        _dense_backward(_F32, gx_written, gw, gb, grad_out, x, weight, work,
                        n, f, o, nt)
    else:
        _dense_backward(_F64, gx_written, gw, gb, grad_out, x, weight, work,
                        n, f, o, nt)
    return gx, gw, gb


cdef void _dense_backward(floating *t, gx, gw, gb, grad_out, x, weight,
                          work, ptrdiff_t n, ptrdiff_t f, ptrdiff_t o,
                          int nt) noexcept:
    cdef floating *pgx = _data(gx, t)
    cdef floating *pgw = _data(gw, t)
    cdef floating *pgb = _data(gb, t)
    cdef const floating *pgy = _data(grad_out, t)
    cdef const floating *px = _data(x, t)
    cdef const floating *pw = _data(weight, t)
    cdef floating *pk = _data(work, t)
    with nogil:
        cnnkit_dense_backward(pgx, pgw, pgb, pgy, px, pw, pk, n, f, o, nt)


def dense_backward_parts(grad_out, x, weight, bounds, gw_parts, gb_parts,
                         bint need_input_grad=True, gx_out=None,
                         gw_tree=None):
    """dense_backward with the weight (and bias) gradients of each run of
    rows [bounds[q], bounds[q+1]) written to gw_parts[q] (gb_parts[q]);
    returns grad_x or None.  Empty runs are not written.

    With gw_tree (an array of weight's shape and dtype), the weight
    gradients of the runs are not written one by one: their sum in
    tree_sum's tree (an empty run absent) goes to gw_tree, with the same
    bits, and gw_parts must be None."""
    cdef int nt = _nthreads()
    cdef ptrdiff_t n, f, o
    grad_out, x, weight, n, f, o = _dense_backward_args(grad_out, x, weight)
    dt = x.dtype
    cdef ptrdiff_t ws, bs
    if gw_tree is not None:
        if gw_parts is not None:
            raise ValueError("dense_backward: gw_parts must be None with "
                             "gw_tree")
        _require(gw_tree, weight.shape, dt, True, "dense_backward",
                  "gw_tree")
    b, ws, bs = _parts_args("dense_backward", bounds, n, gw_parts,
                            weight.shape, gb_parts, dt, gw_tree is not None)
    gx = (_zeros_or(gx_out, (n, f), dt, "dense_backward", "gx_out",
                    n == 0 or o == 0) if need_input_grad else None)
    cdef ptrdiff_t nparts = b.shape[0] - 1
    if o == 0:
        return gx
    work = _workspace(cnnkit_dense_workspace(n, f, o, nt), dt)
    tree_work = (_workspace(cnnkit_dense_tree_workspace(
        _int64_data(b), nparts, f, o, nt), dt)
        if gw_tree is not None and f > 0 else None)
    gx_written = gx if gx is not None and gx.size else None
    if _is_f32(x):
        _dense_backward_parts(_F32, gx_written, gw_parts, ws, gb_parts, bs,
                              grad_out, x, weight, b, nparts, work, n, f, o,
                              nt, gw_tree, tree_work)
    else:
        _dense_backward_parts(_F64, gx_written, gw_parts, ws, gb_parts, bs,
                              grad_out, x, weight, b, nparts, work, n, f, o,
                              nt, gw_tree, tree_work)
    return gx


cdef void _dense_backward_parts(
        floating *t, gx, gw_parts, ptrdiff_t wstride, gb_parts,
        ptrdiff_t bstride, grad_out, x, weight, bounds, ptrdiff_t nparts,
        work, ptrdiff_t n, ptrdiff_t f, ptrdiff_t o, int nt, gw_tree,
        tree_work) noexcept:
    cdef floating *pgx = _data(gx, t)
    cdef floating *pgw = _data(gw_parts, t)
    cdef floating *pgb = _data(gb_parts, t)
    cdef floating *ptree = _data(gw_tree, t)
    cdef floating *ptw = _data(tree_work, t)
    cdef const floating *pgy = _data(grad_out, t)
    cdef const floating *px = _data(x, t)
    cdef const floating *pw = _data(weight, t)
    cdef const int64_t *pb = _int64_data(bounds)
    cdef floating *pk = _data(work, t)
    with nogil:
        cnnkit_dense_backward_parts(pgx, pgw, wstride, pgb, bstride, pgy, px,
                                    pw, pb, nparts, pk, n, f, o, nt)
        if ptw != NULL:
            cnnkit_dense_weight_tree(ptree, pgy, px, pb, nparts, ptw, f, o,
                                     nt)


# --------------------------------------------------------------------------
# optimizer steps and the fixed-tree sum
# --------------------------------------------------------------------------
def sgd_step(params, grads, buf, double lr, double weight_decay,
             double momentum, bint nesterov, bint first, int nthreads=0):
    """One SGD step in place (buf: the momentum buffer, or None without
    momentum; first: it holds nothing yet) on ``nthreads`` threads, or the
    current count when 0."""
    cdef int nt = nthreads if nthreads > 0 else _nthreads()
    if buf is None and momentum != 0.0:
        raise ValueError("sgd_step: momentum needs a buffer")
    _float_vector(params, True, "sgd_step: params")
    _require(grads, params.shape, params.dtype, False, "sgd_step", "grads")
    if buf is not None:
        _require(buf, params.shape, params.dtype, True, "sgd_step",
                 "momentum buffer")
    if _is_f32(params):
        _sgd_step(_F32, params, grads, buf, lr, weight_decay, momentum,
                  nesterov, first, nt)
    else:
        _sgd_step(_F64, params, grads, buf, lr, weight_decay, momentum,
                  nesterov, first, nt)


cdef void _sgd_step(floating *t, params, grads, buf, double lr,
                    double weight_decay, double momentum, bint nesterov,
                    bint first, int nt) noexcept:
    cdef floating *pp = _data(params, t)
    cdef const floating *pg = _data(grads, t)
    cdef floating *pb = _data(buf, t)
    cdef ptrdiff_t n = cnp.PyArray_SIZE(<cnp.ndarray>params)
    with nogil:
        cnnkit_sgd_step(pp, pg, pb, n, lr, weight_decay, momentum, nesterov,
                        first, nt)


def adam_step(params, grads, m, v, double beta1, double beta2, double eps,
              double weight_decay, bint decoupled, double decay_factor,
              double step_size, double bc2_sqrt, int nthreads=0):
    """One Adam/AdamW step in place (m, v: the moment buffers) on
    ``nthreads`` threads, or the current count when 0."""
    cdef int nt = nthreads if nthreads > 0 else _nthreads()
    _float_vector(params, True, "adam_step: params")
    _require(grads, params.shape, params.dtype, False, "adam_step", "grads")
    _require(m, params.shape, params.dtype, True, "adam_step", "exp_avg")
    _require(v, params.shape, params.dtype, True, "adam_step", "exp_avg_sq")
    if _is_f32(params):
        _adam_step(_F32, params, grads, m, v, beta1, beta2, eps,
                   weight_decay, decoupled, decay_factor, step_size,
                   bc2_sqrt, nt)
    else:
        _adam_step(_F64, params, grads, m, v, beta1, beta2, eps,
                   weight_decay, decoupled, decay_factor, step_size,
                   bc2_sqrt, nt)


cdef void _adam_step(floating *t, params, grads, m, v, double beta1,
                     double beta2, double eps, double weight_decay,
                     bint decoupled, double decay_factor, double step_size,
                     double bc2_sqrt, int nt) noexcept:
    cdef floating *pp = _data(params, t)
    cdef const floating *pg = _data(grads, t)
    cdef floating *pm = _data(m, t)
    cdef floating *pv = _data(v, t)
    cdef ptrdiff_t n = cnp.PyArray_SIZE(<cnp.ndarray>params)
    with nogil:
        cnnkit_adam_step(pp, pg, pm, pv, n, beta1, beta2, eps, weight_decay,
                         decoupled, decay_factor, step_size, bc2_sqrt, nt)


def all_finite(x):
    """Whether the C-contiguous float32 or float64 array x (aligned or
    not) holds no infinite or NaN value (one pass, no temporary; the GIL
    is released for large arrays)."""
    cdef int tn = (cnp.PyArray_TYPE(<cnp.ndarray>x)
                   if cnp.PyArray_Check(x) else -1)
    if not ((tn == cnp.NPY_FLOAT32 or tn == cnp.NPY_FLOAT64) and
            cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x) and
            cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>x)):
        raise TypeError(f"all_finite: x must be a C-contiguous float32 or "
                        f"float64 array, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    cdef ptrdiff_t n = cnp.PyArray_SIZE(<cnp.ndarray>x)
    cdef const void *p = cnp.PyArray_DATA(<cnp.ndarray>x)
    cdef int ok
    cdef bint f32 = tn == cnp.NPY_FLOAT32
    if n < 65536:
        ok = (cnnkit_all_finite_f32(p, n) if f32 else
              cnnkit_all_finite_f64(p, n))
    else:
        with nogil:
            ok = (cnnkit_all_finite_f32(p, n) if f32 else
                  cnnkit_all_finite_f64(p, n))
    return bool(ok)


def tree_sum(rows, out):
    """out = the sum of ``rows`` (1-D arrays of out's dtype and length, or
    None for absent ones) in the fixed pairwise tree of cnnkit_tree_sum:
    adjacent rows first, then adjacent pairs, and so on; 0 where no row is
    present.  The rows are not written."""
    cdef int nt = _nthreads()
    _float_vector(out, True, "tree_sum: out")
    cdef ptrdiff_t nrows = len(rows)
    if nrows < 1 or nrows > 32768:
        raise ValueError(f"tree_sum: between 1 and 32768 rows, got {nrows}")
    if _is_f32(out):
        _tree_sum(_F32, rows, nrows, out, nt)
    else:
        _tree_sum(_F64, rows, nrows, out, nt)


cdef int _tree_sum(floating *t, rows, ptrdiff_t nrows, out,
                   int nt) except -1:
    """Checks each row (out's dtype and length, C-contiguous, not
    overlapping out) as it collects the row pointers, then sums."""
    cdef floating *pout = _data(out, t)
    cdef ptrdiff_t n = cnp.PyArray_SIZE(<cnp.ndarray>out), i
    cdef const floating *p
    cdef const floating **ptrs = <const floating **>PyMem_Malloc(
        nrows * sizeof(floating *))
    if ptrs == NULL:
        raise MemoryError()
    held = []      # the rows stay alive while C reads them
    shape, dt = out.shape, out.dtype
    try:
        for i in range(nrows):
            r = rows[i]
            held.append(r)
            ptrs[i] = NULL
            if r is None:
                continue
            if not _c_array(r, shape, dt, False):
                _require(r, shape, dt, False, "tree_sum", f"rows[{i}]")
            p = _data(r, t)
            if n and p < pout + n and p + n > pout:
                raise ValueError(f"tree_sum: rows[{i}] overlaps out")
            ptrs[i] = p
        with nogil:
            cnnkit_tree_sum(pout, ptrs, nrows, n, nt)
    finally:
        PyMem_Free(ptrs)
    return 0


# --------------------------------------------------------------------------
# batch normalisation
# --------------------------------------------------------------------------
cdef tuple _bn_input(str fn, object x, str name="x", object dtype=None):
    """x as a checked float array of shape (N, C, H, W) or (N, C), and its
    (n, c, hw)."""
    x = _float_input(x, f"{fn}: {name}", dtype)
    if x.ndim != 4 and x.ndim != 2:
        raise ValueError(f"{fn}: {name} must be 4-D (N, C, H, W) or 2-D "
                         f"(N, C), got shape {x.shape}")
    _check_size(name, x.shape)
    hw = x.shape[2] * x.shape[3] if x.ndim == 4 else 1
    return x, x.shape[0], x.shape[1], hw


cdef object _bn_channels(str fn, object v, str name, object dt, object c):
    """v as a C-contiguous (c,) array of dtype dt, or None."""
    if v is None:
        return None
    v = _float_input(v, f"{fn}: {name}", dt)
    if v.shape != (c,):
        raise ValueError(f"{fn}: {name} must have shape ({c},) (one value "
                         f"per channel), got {v.shape}")
    return v


cdef object _bn_bounds(str fn, object bounds, object n):
    """The runs of images as int64 edges (one run of all when None)."""
    if bounds is None:
        return np.array([0, n], dtype=np.int64)
    b = np.ascontiguousarray(bounds, dtype=np.int64)
    if b.ndim != 1 or b.shape[0] < 2:
        raise ValueError(f"{fn}: bounds must be 1-D with at least 2 entries, "
                         f"got shape {b.shape}")
    edges = b.tolist()
    ok = edges[0] >= 0 and edges[len(edges) - 1] <= n
    for i in range(len(edges) - 1):
        if edges[i + 1] < edges[i]:
            ok = False
    if not ok:
        raise ValueError(f"{fn}: bounds must be non-decreasing within "
                         f"[0, {n}], got {edges}")
    return b


def batch_norm_sums(x, mean=None, bounds=None):
    """Per run of images [bounds[q], bounds[q+1]) and channel, the float64
    sum of x (mean None) or of (x - mean)^2 (mean: float64 (C,)); returns
    (runs, C)."""
    cdef int nt = _nthreads()
    cdef ptrdiff_t n, c, hw
    fn = "batch_norm_sums"
    x, n, c, hw = _bn_input(fn, x)
    mean = _bn_channels(fn, mean, "mean", np.float64, c)
    b = _bn_bounds(fn, bounds, n)
    cdef ptrdiff_t nparts = b.shape[0] - 1
    sums = np.zeros((nparts, c), dtype=np.float64)
    if c and nparts:
        if _is_f32(x):
            _batch_norm_sums(_F32, sums, x, mean, b, nparts, n, c, hw, nt)
        else:
            _batch_norm_sums(_F64, sums, x, mean, b, nparts, n, c, hw, nt)
    return sums


cdef void _batch_norm_sums(floating *t, sums, x, mean, bounds,
                           ptrdiff_t nparts, ptrdiff_t n, ptrdiff_t c,
                           ptrdiff_t hw, int nt) noexcept:
    cdef double *ps = <double *>cnp.PyArray_DATA(<cnp.ndarray>sums)
    cdef const floating *px = _data(x, t)
    cdef const double *pm = (NULL if mean is None else
                             <double *>cnp.PyArray_DATA(<cnp.ndarray>mean))
    cdef const int64_t *pb = _int64_data(bounds)
    with nogil:
        cnnkit_batch_norm_sums(ps, px, pm, pb, nparts, n, c, hw, nt)


def batch_norm_forward(x, mean, invstd, weight, bias, out=None,
                       bint relu=False):
    """y = (x - mean) * invstd * weight + bias per channel (weight, bias
    may be None), then with relu a ReLU in the same pass; mean, invstd
    (C,) of x's dtype."""
    cdef int nt = _nthreads()
    cdef ptrdiff_t n, c, hw
    fn = "batch_norm"
    x, n, c, hw = _bn_input(fn, x)
    dt = x.dtype
    mean = _bn_channels(fn, mean, "mean", dt, c)
    invstd = _bn_channels(fn, invstd, "invstd", dt, c)
    weight = _bn_channels(fn, weight, "weight", dt, c)
    bias = _bn_channels(fn, bias, "bias", dt, c)
    y = _out(out, x.shape, dt, fn, "out")
    if x.size:
        if _is_f32(x):
            _batch_norm_forward(_F32, y, x, mean, invstd, weight, bias, relu,
                                n, c, hw, nt)
        else:
            _batch_norm_forward(_F64, y, x, mean, invstd, weight, bias, relu,
                                n, c, hw, nt)
    return y


cdef void _batch_norm_forward(floating *t, y, x, mean, invstd, weight, bias,
                              bint relu, ptrdiff_t n, ptrdiff_t c,
                              ptrdiff_t hw, int nt) noexcept:
    cdef floating *py = _data(y, t)
    cdef const floating *px = _data(x, t)
    cdef const floating *pm = _data(mean, t)
    cdef const floating *ps = _data(invstd, t)
    cdef const floating *pw = _data(weight, t)
    cdef const floating *pb = _data(bias, t)
    with nogil:
        cnnkit_batch_norm_forward(py, px, pm, ps, pw, pb, relu, n, c, hw,
                                  nt)


def batch_norm_inference(x, running_mean, running_var, weight, bias,
                         double eps, out=None, bint relu=False):
    """The evaluation forward: (y, invstd) with invstd = 1 / sqrt(running_var
    + eps) and y = (x - running_mean) * invstd * weight + bias, then with
    relu a ReLU in the same pass."""
    cdef int nt = _nthreads()
    cdef ptrdiff_t n, c, hw
    fn = "batch_norm"
    x, n, c, hw = _bn_input(fn, x)
    dt = x.dtype
    mean = _bn_channels(fn, running_mean, "running_mean", dt, c)
    var = _bn_channels(fn, running_var, "running_var", dt, c)
    weight = _bn_channels(fn, weight, "weight", dt, c)
    bias = _bn_channels(fn, bias, "bias", dt, c)
    if mean is None or var is None:
        raise ValueError(f"{fn}: running_mean and running_var are needed "
                         f"when not training")
    y = _out(out, x.shape, dt, fn, "out")
    invstd = np.empty(c, dtype=dt)
    if _is_f32(x):
        _batch_norm_inference(_F32, y, invstd, x, mean, var, weight, bias,
                              eps, relu, n, c, hw, nt)
    else:
        _batch_norm_inference(_F64, y, invstd, x, mean, var, weight, bias,
                              eps, relu, n, c, hw, nt)
    return y, invstd


cdef void _batch_norm_inference(floating *t, y, invstd, x, mean, var, weight,
                                bias, double eps, bint relu, ptrdiff_t n,
                                ptrdiff_t c, ptrdiff_t hw, int nt) noexcept:
    cdef floating *py = _data(y, t)
    cdef floating *ps = _data(invstd, t)
    cdef const floating *px = _data(x, t)
    cdef const floating *pm = _data(mean, t)
    cdef const floating *pv = _data(var, t)
    cdef const floating *pw = _data(weight, t)
    cdef const floating *pb = _data(bias, t)
    with nogil:
        cnnkit_batch_norm_inference(py, ps, px, pm, pv, pw, pb, eps, relu, n,
                                    c, hw, nt)


cdef tuple _bn_backward_args(str fn, grad_out, x, mean, invstd):
    x, n, c, hw = _bn_input(fn, x)
    grad_out = _float_input(grad_out, f"{fn}: grad_out", x.dtype)
    if grad_out.shape != x.shape:
        raise ValueError(f"{fn}: grad_out must have the shape of x "
                         f"{x.shape}, got {grad_out.shape}")
    mean = _bn_channels(fn, mean, "mean", x.dtype, c)
    invstd = _bn_channels(fn, invstd, "invstd", x.dtype, c)
    return grad_out, x, mean, invstd, n, c, hw


def batch_norm_backward_sums(grad_out, x, mean, invstd, bounds=None,
                             weight=None, bias=None, bint relu=False):
    """Per run of images and channel, the float64 sums of grad_out and of
    grad_out * xhat (xhat = (x - mean) * invstd): (runs, 2, C).  With
    relu, grad_out is the gradient of the ReLU after the normalisation
    (the forward with relu and this weight and bias): it counts where the
    forward's value is above 0 or NaN, as relu_backward passes it."""
    cdef int nt = _nthreads()
    cdef ptrdiff_t n, c, hw
    fn = "batch_norm_backward"
    grad_out, x, mean, invstd, n, c, hw = _bn_backward_args(
        fn, grad_out, x, mean, invstd)
    weight = _bn_channels(fn, weight, "weight", x.dtype, c)
    bias = _bn_channels(fn, bias, "bias", x.dtype, c)
    b = _bn_bounds(fn, bounds, n)
    cdef ptrdiff_t nparts = b.shape[0] - 1
    sums = np.zeros((nparts, 2, c), dtype=np.float64)
    if c and nparts:
        if _is_f32(x):
            _batch_norm_backward_sums(_F32, sums, grad_out, x, mean, invstd,
                                      weight, bias, relu, b, nparts, n, c,
                                      hw, nt)
        else:
            _batch_norm_backward_sums(_F64, sums, grad_out, x, mean, invstd,
                                      weight, bias, relu, b, nparts, n, c,
                                      hw, nt)
    return sums


cdef void _batch_norm_backward_sums(floating *t, sums, grad_out, x, mean,
                                    invstd, weight, bias, bint relu, bounds,
                                    ptrdiff_t nparts, ptrdiff_t n,
                                    ptrdiff_t c, ptrdiff_t hw,
                                    int nt) noexcept:
    cdef double *ps = <double *>cnp.PyArray_DATA(<cnp.ndarray>sums)
    cdef const floating *pg = _data(grad_out, t)
    cdef const floating *px = _data(x, t)
    cdef const floating *pm = _data(mean, t)
    cdef const floating *pi = _data(invstd, t)
    cdef const floating *pw = _data(weight, t)
    cdef const floating *pb = _data(bias, t)
    cdef const int64_t *pe = _int64_data(bounds)
    with nogil:
        cnnkit_batch_norm_backward_sums(ps, pg, px, pm, pi, pw, pb, relu, pe,
                                        nparts, n, c, hw, nt)


def batch_norm_backward(grad_out, x, mean, invstd, weight, sums,
                        double count, out=None, bias=None, bint relu=False):
    """grad_x: with sums (2, C) float64 (the batch's sum of grad_out and of
    grad_out * xhat over count values per channel), the training gradient;
    with sums None, weight * invstd * grad_out.  With relu, grad_out is the
    gradient of the ReLU after the normalisation, as in
    batch_norm_backward_sums."""
    cdef int nt = _nthreads()
    cdef ptrdiff_t n, c, hw
    fn = "batch_norm_backward"
    grad_out, x, mean, invstd, n, c, hw = _bn_backward_args(
        fn, grad_out, x, mean, invstd)
    weight = _bn_channels(fn, weight, "weight", x.dtype, c)
    bias = _bn_channels(fn, bias, "bias", x.dtype, c)
    if sums is not None:
        sums = np.ascontiguousarray(sums, dtype=np.float64)
        if sums.shape != (2, c):
            raise ValueError(f"{fn}: sums must have shape (2, {c}), got "
                             f"{sums.shape}")
        if not count > 0:
            raise ValueError(f"{fn}: count must be positive, got {count}")
    gx = _out(out, x.shape, x.dtype, fn, "out")
    if x.size:
        if _is_f32(x):
            _batch_norm_backward(_F32, gx, grad_out, x, mean, invstd, weight,
                                 bias, relu, sums, count, n, c, hw, nt)
        else:
            _batch_norm_backward(_F64, gx, grad_out, x, mean, invstd, weight,
                                 bias, relu, sums, count, n, c, hw, nt)
    return gx


cdef void _batch_norm_backward(floating *t, gx, grad_out, x, mean, invstd,
                               weight, bias, bint relu, sums, double count,
                               ptrdiff_t n, ptrdiff_t c, ptrdiff_t hw,
                               int nt) noexcept:
    cdef floating *po = _data(gx, t)
    cdef const floating *pg = _data(grad_out, t)
    cdef const floating *px = _data(x, t)
    cdef const floating *pm = _data(mean, t)
    cdef const floating *pi = _data(invstd, t)
    cdef const floating *pw = _data(weight, t)
    cdef const floating *pb = _data(bias, t)
    cdef const double *ps = (NULL if sums is None else
                             <double *>cnp.PyArray_DATA(<cnp.ndarray>sums))
    with nogil:
        cnnkit_batch_norm_backward(po, pg, px, pm, pi, pw, pb, relu, ps,
                                   count, n, c, hw, nt)

# data augmentation: per-image draws and the window copy
# --------------------------------------------------------------------------
cdef object _index_array(object index, str fn):
    """index as a C-contiguous 1-D int64 ndarray (the sample indices)."""
    ind = np.asarray(index)
    if ind.dtype.kind not in "iu":
        raise TypeError(f"{fn}: index must be integer sample indices, got "
                        f"dtype {ind.dtype}")
    if ind.ndim != 1:
        raise ValueError(f"{fn}: index must be 1-D, got shape {ind.shape}")
    if ind.dtype != np.int64:
        if ind.size and (int(ind.min()) < -2 ** 63 or
                         int(ind.max()) >= 2 ** 63):
            raise ValueError(f"{fn}: index must fit in int64")
        ind = ind.astype(np.int64)
    return np.require(ind, dtype=np.int64, requirements=["C", "A"])


cdef uint64_t _key(object key, str fn, str name) except? 0:
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an int, got {key!r}")
    key = int(key)
    if not 0 <= key < 2 ** 64:
        raise ValueError(f"{fn}: {name} must be in [0, 2**64), got {key}")
    return <uint64_t>key


def index_hash(index, key, k):
    """h (n, k) uint64: the draws hash(key, index[i], j) of transform.c."""
    ind = _index_array(index, "index_hash")
    cdef uint64_t ukey = _key(key, "index_hash", "key")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or \
            not 0 <= k <= 2 ** 20:
        raise ValueError(f"index_hash: k must be an int in [0, 2**20], "
                         f"got {k!r}")
    cdef ptrdiff_t n = ind.shape[0], kk = k
    _check_size("index_hash: h", (n, kk))
    h = np.empty((n, kk), dtype=np.uint64)
    cdef uint64_t *ph = <uint64_t *>cnp.PyArray_DATA(<cnp.ndarray>h)
    cdef const int64_t *pi = _int64_data(ind)
    if n and kk:
        with nogil:
            cnnkit_index_hash(ph, pi, ukey, n, kk)
    return h


def window_draws(index, key_shift, range_hw, base_hw, key_flip, flip_p,
                 out=None):
    """params (n, 3) int64 (dy, dx, flip) of the images ``index`` (n,):
    dy = draw(range_h) - base_h, dx likewise, flip = uniform < flip_p (see
    cnnkit_window_draws)."""
    fn = "window_draws"
    cdef cnnkit_window_spec s
    ind = _index_array(index, fn)
    s.key_shift = _key(key_shift, fn, "key_shift")
    s.key_flip = _key(key_flip, fn, "key_flip")
    if len(range_hw) != 2 or len(base_hw) != 2:
        raise ValueError(f"{fn}: range_hw and base_hw must be pairs, got "
                         f"{range_hw!r} and {base_hw!r}")
    for r in range_hw:
        if not 1 <= int(r) < 2 ** 32:
            raise ValueError(f"{fn}: range_hw must lie in [1, 2**32), got "
                             f"{range_hw!r}")
    for b in base_hw:
        if not 0 <= int(b) <= 2 ** 32:
            raise ValueError(f"{fn}: base_hw must lie in [0, 2**32], got "
                             f"{base_hw!r}")
    s.range_h, s.range_w = int(range_hw[0]), int(range_hw[1])
    s.base_h, s.base_w = int(base_hw[0]), int(base_hw[1])
    p = float(flip_p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{fn}: flip_p must be in [0, 1], got {flip_p!r}")
    s.flip_p = p
    cdef ptrdiff_t n = ind.shape[0]
    params = _out(out, (n, 3), np.dtype(np.int64), fn, "out")
    cdef int64_t *pp = _int64_data(params)
    cdef const int64_t *pi = _int64_data(ind)
    if n:
        with nogil:
            cnnkit_window_draws(pp, pi, &s, n)
    return params


def shift_flip_forward(x, params, out_hw, out=None):
    """y (N, C, OH, OW) of x (N, C, H, W) and params (N, 3) int64
    (dy, dx, flip): y[i,c,r,s] = x[i,c,r+dy,(flip ? OW-1-s : s)+dx], 0
    outside the image.  out must not overlap x."""
    fn = "shift_flip_forward"
    cdef int nt = _nthreads()
    x = _float_input(x, "x")
    _check_ndim(x, 4, "x", "(N, C, H, W)")
    oh, ow = _pos_pair(out_hw, "out_hw", fn)
    n, c, h, w = x.shape
    _check_size(f"{fn}: y", (n, c, oh, ow))
    if not _c_array(params, (n, 3), np.dtype(np.int64), False):
        _require(params, (n, 3), np.dtype(np.int64), False, fn, "params")
    cdef const int64_t *pp = _int64_data(params)
    cdef ptrdiff_t i
    for i in range(3 * n):
        if pp[i] <= -2 ** 40 or pp[i] >= 2 ** 40:
            raise ValueError(f"{fn}: params must lie in (-2**40, 2**40), "
                             f"got {pp[i]}")
    y = _out(out, (n, c, oh, ow), x.dtype, fn, "out")
    if y.size and x.size and np.shares_memory(y, x):
        raise ValueError(f"{fn}: out overlaps x")
    if y.size:
        if _is_f32(x):
            _shift_flip_forward(_F32, y, x, params, nt)
        else:
            _shift_flip_forward(_F64, y, x, params, nt)
    return y


cdef void _shift_flip_forward(floating *t, y, x, params, int nt) noexcept:
    cdef floating *py = _data(y, t)
    cdef const floating *px = _data(x, t)
    cdef const int64_t *pp = _int64_data(params)
    cdef ptrdiff_t n = cnp.PyArray_DIM(<cnp.ndarray>x, 0)
    cdef ptrdiff_t c = cnp.PyArray_DIM(<cnp.ndarray>x, 1)
    cdef ptrdiff_t h = cnp.PyArray_DIM(<cnp.ndarray>x, 2)
    cdef ptrdiff_t w = cnp.PyArray_DIM(<cnp.ndarray>x, 3)
    cdef ptrdiff_t oh = cnp.PyArray_DIM(<cnp.ndarray>y, 2)
    cdef ptrdiff_t ow = cnp.PyArray_DIM(<cnp.ndarray>y, 3)
    with nogil:
        cnnkit_shift_flip_forward(py, px, pp, n, c, h, w, oh, ow, nt)


# --------------------------------------------------------------------------
# softmax and cross-entropy
# --------------------------------------------------------------------------
def softmax(logits, out=None):
    cdef int nt = _nthreads()
    z = _float_input(logits, "logits")
    _check_ndim(z, 2, "logits", "(N, C)")
    if z.shape[1] == 0:
        raise ValueError(f"softmax: logits need at least one class, got "
                         f"shape {z.shape}")
    p = _out(out, z.shape, z.dtype, "softmax", "out")
    if z.shape[0]:
        if _is_f32(z):
            _softmax(_F32, p, z, nt)
        else:
            _softmax(_F64, p, z, nt)
    return p


cdef void _softmax(floating *t, p, z, int nt) noexcept:
    cdef floating *pp = _data(p, t)
    cdef const floating *pz = _data(z, t)
    cdef ptrdiff_t n = cnp.PyArray_DIM(<cnp.ndarray>z, 0)
    cdef ptrdiff_t c = cnp.PyArray_DIM(<cnp.ndarray>z, 1)
    with nogil:
        cnnkit_softmax(pp, pz, n, c, nt)


def log_softmax(logits, out=None):
    cdef int nt = _nthreads()
    z = _float_input(logits, "logits")
    _check_ndim(z, 2, "logits", "(N, C)")
    if z.shape[1] == 0:
        raise ValueError(f"log_softmax: logits need at least one class, got "
                         f"shape {z.shape}")
    y = _out(out, z.shape, z.dtype, "log_softmax", "out")
    if z.shape[0]:
        if _is_f32(z):
            _rows(_F32, 0, y, None, z, nt)
        else:
            _rows(_F64, 0, y, None, z, nt)
    return y


def softmax_backward(grad_out, logits, out=None):
    return _rows_backward("softmax_backward", 1, grad_out, logits, out)


def log_softmax_backward(grad_out, logits, out=None):
    return _rows_backward("log_softmax_backward", 2, grad_out, logits, out)


cdef object _rows_backward(str fn, int op, grad_out, logits, out):
    cdef int nt = _nthreads()
    z = _float_input(logits, "logits")
    g = _float_input(grad_out, "grad_out")
    _check_ndim(z, 2, "logits", "(N, C)")
    _same_dtype(fn, z, "logits", g, "grad_out")
    if g.shape != z.shape:
        raise ValueError(f"{fn}: grad_out must have the shape of logits "
                         f"{z.shape}, got {g.shape}")
    if z.shape[1] == 0:
        raise ValueError(f"{fn}: logits need at least one class, got "
                         f"shape {z.shape}")
    gx = _out(out, z.shape, z.dtype, fn, "out")
    if z.shape[0]:
        if _is_f32(z):
            _rows(_F32, op, gx, g, z, nt)
        else:
            _rows(_F64, op, gx, g, z, nt)
    return gx


cdef void _rows(floating *t, int op, y, g, z, int nt) noexcept:
    """Row-wise log-softmax (op 0), softmax backward (1) or log-softmax
    backward (2) of logits z (n, c); g is the output gradient (ops 1, 2)."""
    cdef floating *py = _data(y, t)
    cdef const floating *pg = _data(g, t)
    cdef const floating *pz = _data(z, t)
    cdef ptrdiff_t n = cnp.PyArray_DIM(<cnp.ndarray>z, 0)
    cdef ptrdiff_t c = cnp.PyArray_DIM(<cnp.ndarray>z, 1)
    with nogil:
        if op == 0:
            cnnkit_log_softmax(py, pz, n, c, nt)
        elif op == 1:
            cnnkit_softmax_backward(py, pg, pz, n, c, nt)
        else:
            cnnkit_log_softmax_backward(py, pg, pz, n, c, nt)


cdef object _labels(object labels, ptrdiff_t n, ptrdiff_t c, tuple zshape):
    """labels as a C-contiguous int64 array of n class indices in [0, c)."""
    fn = "softmax_cross_entropy"
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iu":
        raise TypeError(
            f"{fn}: labels must be integer class indices, got dtype "
            f"{lab.dtype}")
    if lab.shape != (n,):
        raise ValueError(
            f"{fn}: labels must have shape ({n},) for logits shape {zshape}, "
            f"got {lab.shape}")
    cdef const int64_t *plab
    cdef ptrdiff_t i
    if lab.dtype == np.int64 and lab.flags.c_contiguous and \
            lab.flags.aligned and lab.dtype.isnative:
        # checked in place: no temporaries on the training loop's path
        plab = _int64_data(lab)
        for i in range(n):
            if plab[i] < 0 or plab[i] >= c:
                raise ValueError(
                    f"{fn}: labels must lie in [0, {c}) for {c} classes, "
                    f"got {plab[i]}")
        return lab
    lo, hi = int(lab.min()), int(lab.max())
    if lo < 0 or hi >= c:
        raise ValueError(
            f"{fn}: labels must lie in [0, {c}) for {c} classes, got "
            f"{lo if lo < 0 else hi}")
    return np.require(lab, dtype=np.int64, requirements=["C", "A"])


cdef object _sample_weight(object sample_weight, ptrdiff_t n, tuple zshape):
    """sample_weight as a C-contiguous float64 array of n finite values
    >= 0."""
    fn = "softmax_cross_entropy"
    sw = np.asarray(sample_weight)
    if sw.dtype.kind not in "biuf":
        raise TypeError(
            f"{fn}: sample_weight must be real numbers, got dtype {sw.dtype}")
    if sw.shape != (n,):
        raise ValueError(
            f"{fn}: sample_weight must have shape ({n},) for logits shape "
            f"{zshape}, got {sw.shape}")
    sw = np.require(sw, dtype=np.float64, requirements=["C", "A"])
    if not np.isfinite(sw).all() or (sw < 0).any():
        raise ValueError(f"{fn}: sample_weight must be finite and >= 0")
    return sw


def softmax_cross_entropy(logits, labels, sample_weight=None,
                          bint need_grad=True, double normalizer=0.0,
                          bint per_sample=False, grad_out=None,
                          losses_out=None, double label_smoothing=0.0):
    """(mean loss as a float, grad_logits or None); with sample_weight the
    weighted mean.  A positive ``normalizer`` replaces the divisor (N or the
    sum of the weights); ``per_sample=True`` also returns each row's weighted
    loss (float64) as a third value.  grad_out and losses_out, when given,
    are written instead of new arrays.  ``label_smoothing`` in [0, 1] mixes
    the one-hot target with the uniform one (PyTorch's)."""
    cdef int nt = _nthreads()
    if not (0.0 <= label_smoothing <= 1.0):
        raise ValueError(
            f"softmax_cross_entropy: label_smoothing must be in [0, 1], got "
            f"{label_smoothing!r}")
    z = _float_input(logits, "logits")
    _check_ndim(z, 2, "logits", "(N, C)")
    cdef ptrdiff_t n = z.shape[0], c = z.shape[1]
    if n == 0 or c == 0:
        raise ValueError(
            f"softmax_cross_entropy: logits need at least one row and one "
            f"class, got shape {z.shape}")
    lab = _labels(labels, n, c, z.shape)
    sw = (_sample_weight(sample_weight, n, z.shape)
          if sample_weight is not None else None)
    grad = (_out(grad_out, z.shape, z.dtype, "softmax_cross_entropy",
                 "grad_out") if need_grad else None)
    work = _out(losses_out, (n,), np.dtype(np.float64),
                "softmax_cross_entropy", "losses_out")
    cdef double loss
    if _is_f32(z):
        loss = _softmax_xent(_F32, grad, z, lab, sw, normalizer,
                             label_smoothing, work, nt)
    else:
        loss = _softmax_xent(_F64, grad, z, lab, sw, normalizer,
                             label_smoothing, work, nt)
    if per_sample:
        return loss, grad, work
    return loss, grad


cdef double _softmax_xent(floating *t, grad, z, lab, sw, double normalizer,
                          double smoothing, work, int nt) noexcept:
    cdef floating *pg = _data(grad, t)
    cdef const floating *pz = _data(z, t)
    cdef const int64_t *pl = _int64_data(lab)
    cdef const double *pw = _data(sw, _F64)
    cdef double *pk = _data(work, _F64)
    cdef ptrdiff_t n = cnp.PyArray_DIM(<cnp.ndarray>z, 0)
    cdef ptrdiff_t c = cnp.PyArray_DIM(<cnp.ndarray>z, 1)
    cdef double loss
    with nogil:
        loss = cnnkit_softmax_xent(pg, pz, pl, pw, normalizer, smoothing, pk,
                                   n, c, nt)
    return loss


# --------------------------------------------------------------------------
# compiled inference plans
# --------------------------------------------------------------------------
_PLAN_OPS = {"conv": CNNKIT_PLAN_CONV, "dense": CNNKIT_PLAN_DENSE,
             "max_pool": CNNKIT_PLAN_MAX_POOL,
             "avg_pool": CNNKIT_PLAN_AVG_POOL,
             "global_max_pool": CNNKIT_PLAN_GLOBAL_MAX_POOL,
             "batch_norm": CNNKIT_PLAN_BATCH_NORM, "act": CNNKIT_PLAN_ACT,
             "add": CNNKIT_PLAN_ADD, "mul": CNNKIT_PLAN_MUL,
             "copy": CNNKIT_PLAN_COPY, "softmax": CNNKIT_PLAN_SOFTMAX,
             "log_softmax": CNNKIT_PLAN_LOG_SOFTMAX,
             "conv_blocked": CNNKIT_PLAN_CONV_BLOCKED,
             "to_blocked": CNNKIT_PLAN_TO_BLOCKED,
             "from_blocked": CNNKIT_PLAN_FROM_BLOCKED}
_PLAN_ACTS = {None: CNNKIT_ACT_NONE, "relu": CNNKIT_ACT_RELU,
              "leaky_relu": CNNKIT_ACT_LEAKY_RELU,
              "sigmoid": CNNKIT_ACT_SIGMOID, "tanh": CNNKIT_ACT_TANH,
              "silu": CNNKIT_ACT_SILU, "gelu": CNNKIT_ACT_GELU,
              "gelu_tanh": CNNKIT_ACT_GELU_TANH}


cdef const void *_plan_array(object a, object dt, object size, str what,
                             list keep) except? NULL:
    """The data of a (None: NULL), which must be a C-contiguous array of
    dtype dt and ``size`` elements; kept alive in keep."""
    if a is None:
        return NULL
    if not (cnp.PyArray_Check(a) and a.dtype == dt and a.size == size and
            cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>a) and
            cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a)):
        raise ValueError(
            f"plan: {what} must be a C-contiguous {np.dtype(dt).name} array "
            f"of {size} elements, got {getattr(a, 'dtype', type(a))} "
            f"{getattr(a, 'shape', '')}")
    keep.append(a)
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef bint _any_overlap(tuple arrays):
    """Whether two of these C-contiguous arrays share memory."""
    cdef Py_ssize_t i, j, m = len(arrays)
    cdef char *a0
    cdef char *b0
    cdef Py_ssize_t an, bn
    for i in range(m):
        a0 = <char *>cnp.PyArray_DATA(<cnp.ndarray>arrays[i])
        an = cnp.PyArray_NBYTES(<cnp.ndarray>arrays[i])
        for j in range(i + 1, m):
            b0 = <char *>cnp.PyArray_DATA(<cnp.ndarray>arrays[j])
            bn = cnp.PyArray_NBYTES(<cnp.ndarray>arrays[j])
            if an > 0 and bn > 0 and a0 < b0 + bn and b0 < a0 + an:
                return True
    return False


cdef void _plan_run(floating *t, const cnnkit_plan_step *steps,
                    ptrdiff_t nsteps, const cnnkit_plan_sizes *sizes, x, y,
                    arena, work, ptrdiff_t logits, ptrdiff_t classes,
                    ptrdiff_t n, ptrdiff_t chunk, int nt,
                    double *times) noexcept:
    cdef floating *py = _data(y, t)
    cdef const floating *px = _data(x, t)
    cdef floating *pa = _data(arena, t)
    cdef floating *pw = _data(work, t)
    with nogil:
        if times != NULL:
            if floating is float:
                cnnkit_plan_profile_f32(py, px, pa, pw, steps, nsteps,
                                        logits, classes, n, nt, times)
            else:
                cnnkit_plan_profile_f64(py, px, pa, pw, steps, nsteps,
                                        logits, classes, n, nt, times)
        else:
            cnnkit_plan_forward(py, px, pa, pw, steps, nsteps, sizes, logits,
                                classes, n, chunk, nt)


cdef class PlanProgram:
    """The steps of a compiled plan, checked and held in C.

    ``steps`` is a list of dicts, each with ``op`` (a key of _PLAN_OPS),
    references ``in0`` (``in1``) and ``out`` (an offset per image into
    the arena, -1 the input, -2 the output) and the op's sizes and arrays
    (see cnnkit.plan).  Every reference is checked to lie inside the arena
    (or to be the input / output with their sizes), and a step's output
    not to overlap its inputs, so that no run reads or writes outside its
    arrays.  ``logits`` is the arena offset that holds the output when
    probabilities are asked for (-1: none)."""

    cdef cnnkit_plan_step *steps
    cdef ptrdiff_t nsteps
    cdef readonly object dtype
    cdef readonly object in_size, out_size, arena_size, logits
    cdef list keep

    def __cinit__(self):
        self.steps = NULL
        self.nsteps = 0

    def __dealloc__(self):
        PyMem_Free(self.steps)

    def __init__(self, list steps, dtype, in_size, out_size, arena_size,
                 logits=-1):
        dt = np.dtype(dtype)
        if dt != np.float32 and dt != np.float64:
            raise TypeError(f"plan: dtype must be float32 or float64, got "
                            f"{dt}")
        self.dtype = dt
        self.in_size, self.out_size = int(in_size), int(out_size)
        self.arena_size, self.logits = int(arena_size), int(logits)
        if self.in_size < 1 or self.out_size < 1 or self.arena_size < 0:
            raise ValueError("plan: sizes must be positive")
        _check_size("plan arena", (self.arena_size,))
        if self.logits >= 0 and \
                self.logits + self.out_size > self.arena_size:
            raise ValueError("plan: the logits lie outside the arena")
        self.keep = []
        self.steps = <cnnkit_plan_step *>PyMem_Malloc(
            max(len(steps), 1) * sizeof(cnnkit_plan_step))
        if self.steps == NULL:
            raise MemoryError()
        for i, spec in enumerate(steps):
            self._fill(i, spec)
            self.nsteps = i + 1

    cdef object _ref(self, object r, object size, str what, int i):
        """Check reference r of `size` elements per image."""
        r = int(r)
        if r == CNNKIT_PLAN_INPUT:
            if size != self.in_size:
                raise ValueError(f"plan: step {i} reads {size} elements of "
                                 f"the input, which has {self.in_size}")
        elif r == CNNKIT_PLAN_OUTPUT:
            if size != self.out_size:
                raise ValueError(f"plan: step {i} writes {size} elements "
                                 f"to the output, which has "
                                 f"{self.out_size}")
        elif r < 0 or r + size > self.arena_size:
            raise ValueError(f"plan: step {i}'s {what} [{r}, {r + size}) "
                             f"lies outside the arena of {self.arena_size}")
        elif self.logits >= 0 and r < self.logits + self.out_size and \
                self.logits < r + size:
            raise ValueError(f"plan: step {i}'s {what} overlaps the logits")
        return r

    cdef tuple _fill_conv(self, cnnkit_plan_step *s, dict spec, k, oh, ow):
        """The rest of a conv step (s.conv, s.w, s.b set): its pooling, its
        packed weights, its residual; returns (inputs, output size)."""
        dt, keep = self.dtype, self.keep
        cdef cnnkit_conv2d_geom one = s.conv
        if spec.get("pool"):
            # a 2x2 max pooling of stride 2 in the same pass (asked of one
            # image: the step's n is set per batch)
            s.conv.pool = 1
            one.n = 1
            if not _geom_pools(&one, dt == np.float64):
                raise ValueError("plan: this conv cannot pool in its pass")
            oh, ow = oh // 2, ow // 2
        # the weights packed once for the direct path's forward
        psize = cnnkit_conv_direct_packed_size(&s.conv, dt == np.float64)
        if psize > 0:
            packed = aligned_empty(psize, dt)
            keep.append(packed)
            s.packed = cnp.PyArray_DATA(<cnp.ndarray>packed)
            if dt == np.float32:
                cnnkit_conv_direct_pack_f32(<float *>s.packed,
                                            <const float *>s.w, &s.conv)
            else:
                cnnkit_conv_direct_pack_f64(<double *>s.packed,
                                            <const double *>s.w, &s.conv)
        ins = [(spec["in0"], s.conv.c * s.conv.h * s.conv.w)]
        osize = k * oh * ow
        if spec.get("residual"):
            # in1 added to the output before the ReLU
            if spec.get("pool"):
                raise ValueError("plan: a conv cannot both pool and add a "
                                 "residual")
            s.flag = 1
            ins.append((spec["in1"], osize))
        return ins, osize

    cdef tuple _fill_blocked(self, cnnkit_plan_step *s, dict spec, k, oh,
                             ow):
        """The rest of a conv_blocked step (s.conv, s.w, s.b set): its
        borders, its weights transposed, its residual; returns (inputs,
        output size)."""
        dt, keep = self.dtype, self.keep
        cdef bint f64 = dt == np.float64
        s.pin, s.pout = int(spec["border_in"]), int(spec["border_out"])
        lanes = cnnkit_blocked_lanes(f64)
        wino = bool(spec.get("winograd"))
        s.conv.winograd = _winograd_flag(spec.get("winograd"))
        if spec.get("pool"):
            # a 2x2 max pooling of stride 2 in Winograd's pass, or in the
            # pass from a plain input
            if not (wino or s.pin == CNNKIT_BLOCKED_PLAIN) or \
                    spec.get("residual"):
                raise ValueError("plan: only a blocked Winograd step or one "
                                 "from a plain input pools, without a "
                                 "residual")
            s.conv.pool = 1
            oh, ow = oh // 2, ow // 2
        if s.pout < 0 or lanes < 1 or \
                not cnnkit_conv_blocked_applies(&s.conv, s.pin, wino, f64):
            raise ValueError("plan: the blocked convolution does not "
                             "compute this step")
        if wino:
            u = _winograd_weights(spec["weight"], dt,
                                  cnnkit_conv_winograd_tile(&s.conv))
            packed = aligned_empty(u.size, dt)
            packed.reshape(u.shape)[...] = u
            keep.append(packed)
            s.packed = cnp.PyArray_DATA(<cnp.ndarray>packed)
        # the weights transposed to (C*R*S, K), as the tiles load them
        wt = np.asarray(spec["weight"], dtype=dt).reshape(k, -1).T
        packed = aligned_empty(wt.size, dt)
        packed.reshape(wt.shape)[...] = wt
        keep.append(packed)
        s.w = cnp.PyArray_DATA(<cnp.ndarray>packed)
        c, h, w = s.conv.c, s.conv.h, s.conv.w
        ins = [(spec["in0"], c * h * w if s.pin == CNNKIT_BLOCKED_PLAIN
                else _blocked_size(c, h, w, s.pin, lanes))]
        osize = _blocked_size(k, oh, ow, s.pout, lanes)
        if spec.get("residual"):
            s.flag = 1
            ins.append((spec["in1"], osize))
        return ins, osize

    cdef object _fill(self, int i, dict spec):
        cdef cnnkit_plan_step *s = &self.steps[i]
        cdef cnnkit_conv2d_geom cg
        cdef cnnkit_pool2d_geom pg
        memset_step(s)
        op = spec["op"]
        if op not in _PLAN_OPS:
            raise ValueError(f"plan: unknown step {op!r}")
        s.op = _PLAN_OPS[op]
        act = spec.get("act")
        if act not in _PLAN_ACTS:
            raise ValueError(f"plan: unknown activation {act!r}")
        s.act = _PLAN_ACTS[act]
        s.param = float(spec.get("param", 0.0))
        dt, keep = self.dtype, self.keep
        ins = []
        if op in ("to_blocked", "from_blocked"):
            # a (c, h, w) tensor into or out of the blocked layout
            c, h, w = (int(d) for d in spec["shape"])
            border = int(spec["border"])
            lanes = cnnkit_blocked_lanes(dt == np.float64)
            if c < 1 or h < 1 or w < 1 or border < 0 or lanes < 1:
                raise ValueError(f"plan: bad {op} step")
            s.conv.c, s.conv.h, s.conv.w = c, h, w
            bsize = _blocked_size(c, h, w, border, lanes)
            if op == "to_blocked":
                s.pout = border
                ins = [(spec["in0"], c * h * w)]
                osize = bsize
            else:
                s.pin = border
                ins = [(spec["in0"], bsize)]
                osize = c * h * w
        elif op in ("conv", "conv_blocked"):
            c, h, w = (int(d) for d in spec["x_shape"])
            weight = spec["weight"]
            shape = _conv_geom(&cg, (1, c, h, w), tuple(weight.shape),
                               spec["stride"], spec["padding"],
                               spec["dilation"], True, spec["groups"])
            s.conv = cg
            s.conv.n = 0
            k = shape[1]
            oh, ow = shape[2], shape[3]
            if s.act not in (CNNKIT_ACT_NONE, CNNKIT_ACT_RELU):
                raise ValueError("plan: conv takes only a ReLU epilogue")
            s.w = _plan_array(weight, dt, weight.size, "conv weight", keep)
            s.b = _plan_array(spec.get("bias"), dt, k, "conv bias", keep)
            if op == "conv_blocked":
                ins, osize = self._fill_blocked(s, spec, k, oh, ow)
            else:
                ins, osize = self._fill_conv(s, spec, k, oh, ow)
        elif op == "dense":
            weight = spec["weight"]
            if not isinstance(weight, np.ndarray) or weight.ndim != 2 or \
                    weight.dtype != dt:
                raise ValueError(f"plan: dense weight must be a 2-D "
                                 f"{dt.name} array")
            s.size, s.rows = weight.shape[0], weight.shape[1]
            # stored transposed, (f, o): the GEMM packs it without a
            # transpose
            s.w = _plan_array(np.ascontiguousarray(weight.T, dtype=dt), dt,
                              weight.size, "dense weight", keep)
            if s.act not in (CNNKIT_ACT_NONE, CNNKIT_ACT_RELU):
                raise ValueError("plan: dense takes only a ReLU epilogue")
            s.b = _plan_array(spec.get("bias"), dt, s.size, "dense bias",
                              keep)
            ins = [(spec["in0"], s.rows)]
            osize = s.size
        elif op in ("max_pool", "avg_pool"):
            c, h, w = (int(d) for d in spec["x_shape"])
            shape = _pool_geom(&pg, (1, c, h, w), spec["kernel"],
                               spec["stride"], spec["padding"], "plan",
                               bool(spec.get("ceil_mode", False)))
            s.pool = pg
            s.flag = bool(spec.get("count_include_pad", True))
            ins = [(spec["in0"], c * h * w)]
            osize = c * shape[2] * shape[3]
        elif op == "global_max_pool":
            c, h, w = (int(d) for d in spec["x_shape"])
            if c < 1 or h < 1 or w < 1:
                raise ValueError("plan: global pooling of an empty plane")
            s.pool.planes, s.pool.h, s.pool.w = c, h, w
            ins = [(spec["in0"], c * h * w)]
            osize = c
        elif op == "batch_norm":
            s.rows, s.size = int(spec["channels"]), int(spec["hw"])
            if s.rows < 1 or s.size < 1:
                raise ValueError("plan: batch norm sizes must be positive")
            s.mean = _plan_array(spec["mean"], dt, s.rows, "mean", keep)
            s.var = _plan_array(spec["var"], dt, s.rows, "var", keep)
            s.w = _plan_array(spec.get("weight"), dt, s.rows, "bn weight",
                              keep)
            s.b = _plan_array(spec.get("bias"), dt, s.rows, "bn bias", keep)
            ins = [(spec["in0"], s.rows * s.size)]
            osize = s.rows * s.size
        elif op in ("act", "softmax", "log_softmax"):
            s.size = int(spec["size"])
            ins = [(spec["in0"], s.size)]
            osize = s.size
        elif op in ("add", "mul"):
            s.size = int(spec["size"])
            if s.act not in (CNNKIT_ACT_NONE, CNNKIT_ACT_RELU):
                raise ValueError(f"plan: {op} takes only a ReLU epilogue")
            ins = [(spec["in0"], s.size), (spec["in1"], s.size)]
            osize = s.size
        else:  # copy
            s.rows, s.size = int(spec["rows"]), int(spec["size"])
            s.stride, s.at = int(spec["stride"]), int(spec["at"])
            s.total = int(spec["total"])
            if s.rows < 1 or s.size < 1 or s.at < 0 or s.stride < s.size \
                    or s.at + (s.rows - 1) * s.stride + s.size > s.total:
                raise ValueError("plan: copy blocks outside the output")
            ins = [(spec["in0"], s.rows * s.size)]
            osize = s.total
        if osize < 1:
            raise ValueError(f"plan: step {i} has an empty output")
        s.out = self._ref(spec["out"], osize, "output", i)
        if s.out == CNNKIT_PLAN_INPUT:
            raise ValueError(f"plan: step {i} writes the input")
        refs = []
        for j, (r, size) in enumerate(ins):
            refs.append((self._ref(r, size, f"input {j}", i), size))
        s.in0 = refs[0][0]
        s.in1 = refs[1][0] if len(refs) > 1 else 0
        for j, (r, size) in enumerate(refs):
            if op in ("add", "mul") and j == 0 and r == s.out:
                continue            # in place: read, then write, per element
            if r == s.out or (r >= 0 and s.out >= 0 and
                              r < s.out + osize and s.out < r + size):
                raise ValueError(f"plan: step {i}'s output overlaps its "
                                 f"input {j}")

    cdef cnnkit_plan_sizes _sizes(self):
        cdef cnnkit_plan_sizes z
        z.in_, z.out, z.arena = self.in_size, self.out_size, self.arena_size
        return z

    cdef ptrdiff_t _chunk(self, const cnnkit_plan_sizes *z, ptrdiff_t n,
                          int nt):
        if self.dtype == np.float32:
            return cnnkit_plan_chunk_f32(z, n, nt)
        return cnnkit_plan_chunk_f64(z, n, nt)

    cdef ptrdiff_t _workspace(self, const cnnkit_plan_sizes *z, ptrdiff_t n,
                              ptrdiff_t chunk, int nt):
        if self.dtype == np.float32:
            return cnnkit_plan_workspace_f32(self.steps, self.nsteps, z, n,
                                             chunk, nt)
        return cnnkit_plan_workspace_f64(self.steps, self.nsteps, z, n,
                                         chunk, nt)

    def chunk(self, n, nthreads):
        """How a batch of n images runs on nthreads threads: 0, whole, step
        after step, or the images per chunk, each chunk run through every
        step by one thread (cnnkit_plan_chunk)."""
        cdef cnnkit_plan_sizes z = self._sizes()
        _check_size("plan arena", (n, self.arena_size))
        return self._chunk(&z, n, nthreads)

    def arena_elements(self, n, chunk=0):
        """Elements of arena a batch of n images in chunks of chunk (0:
        whole) needs."""
        cdef cnnkit_plan_sizes z = self._sizes()
        _check_size("plan arena", (n, self.arena_size))
        return cnnkit_plan_arena(&z, n, chunk)

    def workspace_size(self, n, nthreads, chunk=0):
        """Elements of workspace a batch of n images needs, whole (chunk
        0) or in chunks of chunk images."""
        cdef cnnkit_plan_sizes z = self._sizes()
        _check_size("plan arena", (n, self.arena_size))
        if chunk < 0:
            raise ValueError(f"plan: chunk must be >= 0, got {chunk}")
        return self._workspace(&z, n, chunk, nthreads)

    def run(self, x, y, arena, work, bint probabilities=False,
            int nthreads=0, chunk=None, times=None):
        """Run the plan on x (n * in_size elements) into y (n * out_size):
        with probabilities, the softmax of the output.  arena and work are
        writeable C-contiguous arrays of the plan's dtype, of at least
        arena_elements(n, chunk) and workspace_size(n, nthreads, chunk)
        elements; nthreads 0 is the current thread count; chunk None is
        self.chunk(n, nthreads), 0 the whole batch step after step.  With
        times, a float64 array of nsteps + 1 elements, the whole batch
        runs step after step and each step's seconds are added to its
        element (the final softmax's to the last).  Returns y."""
        cdef int nt = _nthreads() if nthreads == 0 else nthreads
        if nt < 1 or nt > _MAX_THREADS:
            raise ValueError(f"plan: nthreads must be in [0, {_MAX_THREADS}]"
                             f", got {nthreads}")
        dt = self.dtype
        cdef cnnkit_plan_sizes z = self._sizes()
        if not (cnp.PyArray_Check(x) and x.dtype == dt and
                cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>x) and
                cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>x)):
            raise ValueError(f"plan: x must be a C-contiguous {dt.name} "
                             f"array")
        cdef ptrdiff_t xs = cnp.PyArray_SIZE(<cnp.ndarray>x)
        if xs % z.in_ or xs == 0:
            raise ValueError(f"plan: x must hold n images of "
                             f"{z.in_} elements, got {xs}")
        cdef ptrdiff_t nn = xs // z.in_, ch
        _check_size("plan arena", (nn, z.arena))
        cdef double *pt = NULL
        if times is not None:
            if not (cnp.PyArray_Check(times) and times.dtype == np.float64
                    and times.size == self.nsteps + 1 and
                    cnp.PyArray_ISCARRAY(<cnp.ndarray>times)):
                raise ValueError(f"plan: times must be a writeable "
                                 f"C-contiguous float64 array of "
                                 f"{self.nsteps + 1} elements")
            pt = <double *>cnp.PyArray_DATA(<cnp.ndarray>times)
            chunk = 0
        if chunk is None:
            ch = self._chunk(&z, nn, nt)
        else:
            ch = chunk
            if ch < 0:
                raise ValueError(f"plan: chunk must be >= 0, got {chunk}")
        for a, size, what in ((y, nn * z.out, "y"),
                              (arena, cnnkit_plan_arena(&z, nn, ch),
                               "arena"),
                              (work, self._workspace(&z, nn, ch, nt),
                               "work")):
            if not (cnp.PyArray_Check(a) and a.dtype == dt and
                    cnp.PyArray_ISCARRAY(<cnp.ndarray>a) and
                    cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a)) or \
                    cnp.PyArray_SIZE(<cnp.ndarray>a) < size:
                raise ValueError(f"plan: {what} must be a writeable "
                                 f"C-contiguous {dt.name} array of at "
                                 f"least {size} elements")
        if cnp.PyArray_SIZE(<cnp.ndarray>y) != nn * z.out:
            raise ValueError(f"plan: y must have {nn * z.out} "
                             f"elements, got {y.size}")
        if probabilities and self.logits < 0:
            raise ValueError("plan: compiled without room for logits")
        arrays = (x, y, arena, work) + (() if times is None else (times,))
        if _any_overlap(arrays):
            raise ValueError("plan: x, y, the arena, the work and the times "
                             "must not overlap")
        cdef ptrdiff_t lg = self.logits if probabilities else -1
        if dt == np.float32:
            _plan_run(_F32, self.steps, self.nsteps, &z, x, y, arena, work,
                      lg, z.out, nn, ch, nt, pt)
        else:
            _plan_run(_F64, self.steps, self.nsteps, &z, x, y, arena, work,
                      lg, z.out, nn, ch, nt, pt)
        return y




cdef inline void memset_step(cnnkit_plan_step *s) noexcept:
    memset(s, 0, sizeof(cnnkit_plan_step))


# --------------------------------------------------------------------------
# compiled training steps
# --------------------------------------------------------------------------
cdef enum:
    _TS_CONV = 1
    _TS_DENSE = 2
    _TS_RELU = 3
    _TS_MAX_POOL = 4

cdef enum:
    _TG_WHOLE = 0       # the batch's parameter gradients
    _TG_PARTS = 1       # each run of samples' into its part
    _TG_TREE = 2        # dense: the runs' weight gradients' tree sum, the
                        # bias gradients per run

_TRAIN_OPS = {"conv": _TS_CONV, "dense": _TS_DENSE, "relu": _TS_RELU,
              "max_pool": _TS_MAX_POOL}
_TRAIN_GRADS = {"whole": _TG_WHOLE, "parts": _TG_PARTS, "tree": _TG_TREE}

def _max_pool_places(in_shape, pool_size, stride, padding,
                     bint ceil_mode):
    """Whether a compiled training step keeps the winners of max pooling
    (N, C, H, W) inputs of ``in_shape`` as their places in the windows
    (uint8) instead of int64 indices: disjoint 2x2 windows of stride 2,
    each of two whole rows and columns (TrainProgram's ``idx``)."""
    cdef cnnkit_pool2d_geom g
    _pool_geom(&g, tuple(in_shape), pool_size, stride, padding,
               "max_pool2d", ceil_mode)
    return bool(cnnkit_max_pool2x2_fits(&g))


cdef struct _tstep:
    int op
    int fwd                 # run in the forward pass
    int bwd                 # run in the backward pass
    int relu                # conv: ReLU epilogue; max pool: its backward
                            # goes on through the ReLU before it
    int grads               # _TG_*
    cnnkit_conv2d_geom g
    cnnkit_pool2d_geom pool, unpool
    ptrdiff_t n, f, o, size, wstride, bstride
    const void *x           # NULL: the step's input
    void *y
    const void *w
    const void *b
    void *gx                # NULL: no input gradient
    const void *gy
    void *gw
    void *gb
    int64_t *idx            # max pool: its indices, or NULL with taps
    uint8_t *taps           # 2x2 max pool: its winners' places (0-3)


cdef class TrainProgram:
    """One training step of a chain of layers -- forward pass, softmax
    cross-entropy, backward pass -- for batches of ``m`` samples, run by
    one call that releases the GIL once: the kernels the layers call, with
    the same arguments, so the same bits.

    ``specs`` lists the layers' steps in forward order, each a dict of
    its op ("conv", "dense", "relu", "max_pool"), flags ``fwd`` and
    ``bwd``, the per-sample ``in_shape``, the arrays ``x`` (None: the
    step's input), ``y``, ``gy``, ``gx`` (None: no input gradient), and
    per op: conv: ``weight``, ``bias``, ``stride``, ``padding`` (4),
    ``dilation``, ``groups``, ``relu``, ``grads`` ("whole" or "parts"),
    ``gw``, ``gb``; dense: ``weight``, ``bias``, ``grads`` ("whole",
    "parts" or "tree"), ``gw``, ``gb``; max_pool: ``pool_size``,
    ``stride``, ``padding``, ``ceil_mode``, ``idx`` (int64 indices; for
    2x2 windows of stride 2 without padding, each of two whole rows and
    columns, uint8 places of the winners in their windows), ``relu``.  With
    "parts", ``gw`` and ``gb`` are (runs,) + parameter shape, one run
    per ``[bounds[q], bounds[q+1])``; with "tree" ``gw`` has the weight's
    shape.  ``logits`` is the last step's output, ``grad`` the loss's
    gradient (the last step's ``gy``).  A run writes the program's arrays:
    one run at a time."""

    cdef _tstep *steps
    cdef readonly Py_ssize_t nsteps
    cdef ptrdiff_t m, classes, in_size, nparts
    cdef readonly object dtype
    cdef readonly object logits, grad, losses, hit
    cdef object bounds
    cdef list keep
    cdef object work
    cdef int work_nt
    cdef object xin              # the batch gathered from rows
    cdef object shard_work       # per-thread workspaces of _train_rows
    cdef int shard_nt
    cdef ptrdiff_t shard_per     # elements of each thread's workspace
    cdef bint shardable          # small parameters, every run non-empty
    cdef readonly bint sharded   # the last run took a thread per run
    cdef bint ready

    def __cinit__(self):
        self.steps = NULL

    def __dealloc__(self):
        PyMem_Free(self.steps)

    def __init__(self, list specs, dtype, tuple input_shape, ptrdiff_t m,
                 logits, grad, bounds=None):
        # (again on a made program: nothing of the old one is kept)
        self.ready = False
        PyMem_Free(self.steps)
        self.steps = NULL
        self.nsteps = 0
        dt = self.dtype = np.dtype(dtype)
        if dt != np.float32 and dt != np.float64:
            raise ValueError(f"train: dtype must be float32 or float64, "
                             f"got {dt}")
        if m < 1 or not specs:
            raise ValueError("train: needs a batch and at least one step")
        self.m = m
        self.keep = []
        self.in_size = math_prod(input_shape)
        self.nparts = 0
        self.bounds = None
        if bounds is not None:
            # a copy of its own, read-only: checked once, never changed
            b = np.array(_parts_args("train", bounds, m, None, (1,), None,
                                     dt, True)[0], dtype=np.int64)
            b.setflags(write=False)
            self.bounds = b
            self.nparts = b.shape[0] - 1
        if not (cnp.PyArray_Check(logits) and logits.ndim == 2):
            raise ValueError("train: logits must be a 2-D array")
        self.logits = _require(logits, (m, logits.shape[1]), dt, True,
                               "train", "logits")
        self.classes = self.logits.shape[1]
        self.grad = _require(grad, (m, self.classes), dt, True, "train",
                             "grad")
        self.steps = <_tstep *>PyMem_Malloc(len(specs) * sizeof(_tstep))
        if self.steps == NULL:
            raise MemoryError()
        for i, spec in enumerate(specs):
            memset(&self.steps[i], 0, sizeof(_tstep))
            self._fill(&self.steps[i], spec, i)
        cdef _tstep *last = &self.steps[len(specs) - 1]
        if last.y != cnp.PyArray_DATA(<cnp.ndarray>self.logits) or \
                (last.bwd and last.gy != cnp.PyArray_DATA(
                    <cnp.ndarray>self.grad)):
            raise ValueError("train: the last step must write logits and "
                             "read grad")
        self.losses = np.empty(m, dtype=np.float64)
        self.hit = np.empty(m, dtype=np.bool_)
        self.work = np.empty(0, dtype=dt)
        self.work_nt = 0
        self.shard_work = None
        self.shard_nt = 0
        self.sharded = False
        self.xin = None
        self.nsteps = len(specs)
        self.shardable = self._shardable(specs)
        self.ready = True

    cdef object _rows(self, rows, ptrdiff_t n):
        """rows as m int64 indices into n samples, checked."""
        r = np.ascontiguousarray(rows, dtype=np.int64)
        if r.shape != (self.m,):
            raise ValueError(f"train: rows must be {self.m} indices, got "
                             f"shape {r.shape}")
        cdef const int64_t[::1] v = r
        cdef Py_ssize_t i
        for i in range(self.m):
            if not 0 <= v[i] < n:
                raise ValueError(f"train: rows[{i}] = {v[i]} is not an "
                                 f"index of {n} samples")
        return r

    cdef bint _shardable(self, list specs):
        """Whether a run may take its runs of samples one thread each
        (_train_rows): every run holds samples, every step with
        parameters writes the runs' gradients, and the parameters are
        small enough (SHARD_PARAM_BYTES) that each thread reading all of
        them for each of its runs costs less than the barriers between
        the batch's kernels."""
        if self.nparts < 2:
            return False
        b = self.bounds
        if bool((b[1:] <= b[:-1]).any()):
            return False
        cdef ptrdiff_t nbytes = 0
        cdef Py_ssize_t i
        for i in range(self.nsteps):
            if self.steps[i].op in (_TS_CONV, _TS_DENSE):
                if self.steps[i].grads == _TG_WHOLE:
                    return False
                nbytes += specs[i]["weight"].nbytes
                if specs[i]["bias"] is not None:
                    nbytes += specs[i]["bias"].nbytes
        return nbytes <= SHARD_PARAM_BYTES

    cdef ptrdiff_t _shard_workspace(self, int nt) except -1:
        """Elements of workspace one thread needs for _train_rows on the
        largest task of _train_run_shards on nt threads (the kernels on
        one thread)."""
        cdef ptrdiff_t need = 1, k, rows = 0
        cdef Py_ssize_t i, q
        cdef _tstep *s
        cdef cnnkit_conv2d_geom g
        cdef const int64_t *pb = _int64_data(self.bounds)
        cdef ptrdiff_t group = _shard_group(self.nparts, min(nt, 64))
        for q in range(0, self.nparts, group):
            rows = max(rows, pb[min(self.nparts, q + group)] - pb[q])
        for i in range(self.nsteps):
            s = &self.steps[i]
            if s.op == _TS_CONV:
                g = s.g
                g.n = rows
                k = cnnkit_conv2d_workspace(&g, CNNKIT_CONV_FORWARD, 1)
                need = max(need, k)
                if s.bwd:
                    if s.gx != NULL:
                        k = cnnkit_conv2d_workspace(
                            &g, CNNKIT_CONV_BACKWARD_DATA, 1)
                        need = max(need, k)
                    k = cnnkit_conv2d_workspace(
                        &g, CNNKIT_CONV_BACKWARD_WEIGHT_PARTS, 1)
                    need = max(need, k)
            elif s.op == _TS_DENSE:
                need = max(need, cnnkit_dense_workspace(rows, s.f, s.o, 1))
        # whole cache lines apart, so that threads never share one
        need = (need + 15) // 16 * 16
        _check_size("workspace", (need,))
        return need

    cdef void *_arr(self, object a, ptrdiff_t size, str what, Py_ssize_t i,
                    bint nullable=False) except? NULL:
        """The data of a, a C-contiguous array of the program's dtype and
        size elements (None: NULL where allowed)."""
        if a is None:
            if nullable:
                return NULL
            raise ValueError(f"train: step {i} needs {what}")
        if not (cnp.PyArray_Check(a) and a.dtype == self.dtype and
                a.size == size and cnp.PyArray_ISCARRAY(<cnp.ndarray>a) and
                cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a)):
            raise ValueError(
                f"train: step {i}'s {what} must be a writeable C-contiguous "
                f"{self.dtype.name} array of {size} elements, got "
                f"{getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')}")
        self.keep.append(a)
        return cnp.PyArray_DATA(<cnp.ndarray>a)

    cdef object _fill(self, _tstep *s, dict spec, Py_ssize_t i):
        dt = self.dtype
        op = spec["op"]
        if op not in _TRAIN_OPS:
            raise ValueError(f"train: unknown step {op!r}")
        s.op = _TRAIN_OPS[op]
        s.fwd, s.bwd = bool(spec["fwd"]), bool(spec["bwd"])
        xs = (self.m,) + tuple(spec["in_shape"])
        cdef ptrdiff_t insize = self.m * math_prod(spec["in_shape"])
        s.x = self._arr(spec["x"], insize, "x", i, True)
        if s.x == NULL and (i > 0 or insize != self.m * self.in_size):
            raise ValueError(f"train: step {i} cannot read the step's "
                             f"input (of {self.in_size} elements per "
                             f"sample; the step takes {xs[1:]})")
        cdef ptrdiff_t wstride = 0, bstride = 0
        if s.op == _TS_CONV or s.op == _TS_DENSE:
            w = spec["weight"]
            wshape = tuple(w.shape)
            s.w = self._arr(w, w.size, "weight", i)
            s.b = self._arr(spec["bias"], wshape[0], "bias", i, True)
            if s.op == _TS_CONV:
                if len(xs) != 4:
                    raise ValueError(f"train: step {i}: conv needs (C, H, W)")
                oshape = _conv_geom(&s.g, xs, wshape, spec["stride"],
                                    spec["padding"], spec["dilation"], True,
                                    spec["groups"])
                s.relu = bool(spec["relu"])
            else:
                if len(xs) != 2 or len(wshape) != 2 or xs[1] != wshape[1]:
                    raise ValueError(f"train: step {i}: dense shapes {xs} "
                                     f"and {wshape}")
                s.n, s.f, s.o = self.m, wshape[1], wshape[0]
                oshape = (self.m, wshape[0])
            s.grads = _TRAIN_GRADS[spec["grads"]]
            if s.grads == _TG_WHOLE:
                s.gw = self._arr(spec["gw"], w.size, "gw", i)
                s.gb = self._arr(spec["gb"], wshape[0], "gb", i,
                                 s.b == NULL)
            else:
                if self.bounds is None:
                    raise ValueError(f"train: step {i} writes parts but "
                                     f"the program has no bounds")
                if s.grads == _TG_TREE and s.op != _TS_DENSE:
                    raise ValueError(f"train: step {i}: only dense steps "
                                     f"add their runs in the tree")
                tree = s.grads == _TG_TREE
                _, wstride, bstride = _parts_args(
                    "train", self.bounds, self.m,
                    None if tree else spec["gw"], wshape, spec["gb"], dt,
                    tree)
                if tree:
                    s.gw = self._arr(spec["gw"], w.size, "gw", i)
                elif spec["gw"].shape[0]:
                    s.gw = cnp.PyArray_DATA(<cnp.ndarray>spec["gw"])
                if spec["gb"] is not None and spec["gb"].shape[0]:
                    s.gb = cnp.PyArray_DATA(<cnp.ndarray>spec["gb"])
                if (s.b == NULL) != (spec["gb"] is None):
                    raise ValueError(f"train: step {i}: a bias gradient "
                                     f"without a bias, or the reverse")
                self.keep.extend((spec["gw"], spec["gb"]))
                s.wstride, s.bstride = wstride, bstride
        elif s.op == _TS_RELU:
            oshape = xs
            s.size = insize
        else:
            if len(xs) != 4:
                raise ValueError(f"train: step {i}: max pool needs (C, H, "
                                 f"W)")
            oshape = _pool_geom(&s.pool, xs, spec["pool_size"],
                                spec["stride"], spec["padding"],
                                "max_pool2d", spec["ceil_mode"])
            s.unpool.planes, s.unpool.h, s.unpool.w = \
                s.pool.planes, s.pool.h, s.pool.w
            s.unpool.oh, s.unpool.ow = s.pool.oh, s.pool.ow
            s.unpool.kh = s.unpool.kw = 1
            s.unpool.stride_h = s.unpool.stride_w = 1
            s.unpool.pad_h = s.unpool.pad_w = 0
            s.relu = bool(spec["relu"])
            # 2x2 windows of stride 2: each winner's place in its window
            # (uint8), an eighth of the indices' bytes to write and read
            idx = spec["idx"]
            taps = cnnkit_max_pool2x2_fits(&s.pool)
            want = np.uint8 if taps else np.int64
            if not (cnp.PyArray_Check(idx) and idx.dtype == want and
                    idx.size == math_prod(oshape) and
                    cnp.PyArray_ISCARRAY(<cnp.ndarray>idx)):
                raise ValueError(f"train: step {i}'s idx must be a C-"
                                 f"contiguous {np.dtype(want).name} array "
                                 f"of {math_prod(oshape)} elements")
            self.keep.append(idx)
            if taps:
                s.taps = <uint8_t *>cnp.PyArray_DATA(<cnp.ndarray>idx)
            else:
                s.idx = <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>idx)
        cdef ptrdiff_t osize = math_prod(oshape)
        s.y = self._arr(spec["y"], osize, "y", i)
        s.gy = self._arr(spec["gy"], osize, "gy", i, not s.bwd)
        s.gx = self._arr(spec["gx"], insize, "gx", i, True)
        if s.bwd and s.op in (_TS_RELU, _TS_MAX_POOL) and s.gx == NULL:
            raise ValueError(f"train: step {i} needs gx")

    cdef ptrdiff_t _workspace(self, int nt) except -1:
        """Elements of workspace the steps need on nt threads."""
        cdef ptrdiff_t need = 1, k
        cdef Py_ssize_t i
        cdef _tstep *s
        for i in range(self.nsteps):
            s = &self.steps[i]
            if s.op == _TS_CONV:
                k = cnnkit_conv2d_workspace(&s.g, CNNKIT_CONV_FORWARD, nt)
                need = max(need, k)
                if s.bwd:
                    if s.gx != NULL:
                        k = cnnkit_conv2d_workspace(
                            &s.g, CNNKIT_CONV_BACKWARD_DATA, nt)
                        need = max(need, k)
                    k = cnnkit_conv2d_workspace(
                        &s.g, CNNKIT_CONV_BACKWARD_WEIGHT if
                        s.grads == _TG_WHOLE else
                        CNNKIT_CONV_BACKWARD_WEIGHT_PARTS, nt)
                    need = max(need, k)
            elif s.op == _TS_DENSE:
                k = cnnkit_dense_workspace(s.n, s.f, s.o, nt)
                need = max(need, k)
                if s.bwd and s.grads == _TG_TREE:
                    k = cnnkit_dense_tree_workspace(
                        _int64_data(self.bounds), self.nparts, s.f, s.o, nt)
                    need = max(need, k)
        _check_size("workspace", (need,))
        return need

    def run(self, x, labels, sample_weight, double normalizer,
            double label_smoothing, times=None, int nthreads=0, rows=None):
        """One step on the batch x (m samples) with int labels and
        optional float64 sample weights: the logits, the loss gradient
        (of the weighted mean with divisor ``normalizer``), each sample's
        weighted loss (``losses``), whether its largest logit is its label
        (``hit``), and the parameter gradients.  With ``times``, a float64
        array of 2 * nsteps + 1 elements, each step's forward seconds, the
        loss's and each step's backward seconds are added to it.  The
        kernels run on ``nthreads`` threads (at most the default count;
        0: the default count).  With ``rows`` (m int64 indices), the batch
        is ``x[rows]``, gathered by the run into its own array (``x`` a
        C-contiguous array of samples), each run of samples by the thread
        that runs it."""
        cdef double *pt = NULL
        if times is not None:
            if not (cnp.PyArray_Check(times) and times.dtype == np.float64
                    and times.size == 2 * self.nsteps + 1 and
                    cnp.PyArray_ISCARRAY(<cnp.ndarray>times)):
                raise ValueError(f"train: times must be a writeable "
                                 f"C-contiguous float64 array of "
                                 f"{2 * self.nsteps + 1} elements")
            pt = <double *>cnp.PyArray_DATA(<cnp.ndarray>times)
        if not self.ready:
            raise ValueError("train: the program is not set up")
        if nthreads < 0:
            raise ValueError(f"train: nthreads must be >= 0, got {nthreads}")
        cdef int nt = _nthreads()
        if 0 < nthreads < nt:
            nt = nthreads
        dt = self.dtype
        cdef ptrdiff_t nsrc = self.m
        if rows is not None:
            if not (cnp.PyArray_Check(x) and x.ndim >= 1 and x.size and
                    x.size == x.shape[0] * self.in_size):
                raise ValueError(f"train: x must be an array of samples of "
                                 f"{self.in_size} elements")
            nsrc = x.shape[0]
            rows = self._rows(rows, nsrc)
        if not (cnp.PyArray_Check(x) and x.dtype == dt and
                cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>x) and
                cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>x) and
                x.size == nsrc * self.in_size):
            raise ValueError(f"train: x must be a C-contiguous {dt.name} "
                             f"array of {nsrc} samples of {self.in_size} "
                             f"elements")
        if rows is not None:
            if self.xin is None:
                self.xin = aligned_empty((self.m, self.in_size), dt)
            src, x = x, self.xin
        else:
            src = None
        if not (0.0 <= label_smoothing <= 1.0):
            raise ValueError(f"train: label_smoothing must be in [0, 1], "
                             f"got {label_smoothing!r}")
        zshape = (self.m, self.classes)
        lab = _labels(labels, self.m, self.classes, zshape)
        sw = (_sample_weight(sample_weight, self.m, zshape)
              if sample_weight is not None else None)
        if nt != self.work_nt:       # its own, not the thread's shared one
            self.work = aligned_empty(self._workspace(nt), dt)
            self.work_nt = nt
        cdef bint shards = (self.shardable and nt > 1 and pt == NULL and
                            normalizer > 0 and self.nparts >= nt)
        self.sharded = shards
        if shards and nt != self.shard_nt:
            self.shard_per = self._shard_workspace(nt)
            self.shard_work = aligned_empty(self.shard_per * nt, dt)
            self.shard_nt = nt
        if shards:
            if dt == np.float32:
                _train_run_shards(_F32, self.steps, self.nsteps, x, src,
                                  rows, self.in_size, self.logits,
                                  self.grad, lab, sw, normalizer,
                                  label_smoothing, self.losses, self.hit,
                                  self.m, self.classes, self.bounds,
                                  self.nparts, self.work, self.shard_work,
                                  self.shard_per, nt)
            else:
                _train_run_shards(_F64, self.steps, self.nsteps, x, src,
                                  rows, self.in_size, self.logits,
                                  self.grad, lab, sw, normalizer,
                                  label_smoothing, self.losses, self.hit,
                                  self.m, self.classes, self.bounds,
                                  self.nparts, self.work, self.shard_work,
                                  self.shard_per, nt)
            return
        if src is not None:
            if dt == np.float32:
                _gather(_F32, x, src, rows, 0, self.m, self.in_size)
            else:
                _gather(_F64, x, src, rows, 0, self.m, self.in_size)
        if dt == np.float32:
            _train_run(_F32, self.steps, self.nsteps, x, self.logits,
                       self.grad, lab, sw, normalizer, label_smoothing,
                       self.losses, self.hit, self.m, self.classes,
                       self.bounds, self.nparts, self.work, nt, pt)
        else:
            _train_run(_F64, self.steps, self.nsteps, x, self.logits,
                       self.grad, lab, sw, normalizer, label_smoothing,
                       self.losses, self.hit, self.m, self.classes,
                       self.bounds, self.nparts, self.work, nt, pt)


#: Parameter bytes at most of a program whose runs of samples go one
#: thread each (TrainProgram._shardable): LeNet-5's are 247 KB.
SHARD_PARAM_BYTES = 1 << 20
cdef enum:
    SHARD_GROUP = 4             # runs of a task of _train_run_shards


cdef inline ptrdiff_t _shard_group(ptrdiff_t nparts, int nt) noexcept nogil:
    """Runs per task of _train_run_shards: at most SHARD_GROUP, and two
    tasks for each thread at least, to share out what a thread slowed by
    other work leaves."""
    return max(1, min(<ptrdiff_t>SHARD_GROUP, nparts // (2 * nt)))


cdef inline void _hits(const floating *z, const int64_t *pl, char *ph,
                       ptrdiff_t r0, ptrdiff_t r1,
                       ptrdiff_t c) noexcept nogil:
    """ph[r] = whether row r's largest logit is its label, for r in [r0,
    r1): np.argmax's choice, the first largest, NaN first."""
    cdef ptrdiff_t r, j, best
    cdef floating v, bv
    for r in range(r0, r1):
        best = 0
        for j in range(1, c):
            v, bv = z[r * c + j], z[r * c + best]
            if v > bv or (v != v and bv == bv):
                best = j
        ph[r] = best == pl[r]


cdef inline void _conv_rows(_tstep *s, ptrdiff_t rows, cnnkit_conv2d_geom *g,
                           ptrdiff_t *per_in,
                           ptrdiff_t *per_out) noexcept nogil:
    """Step s's convolution on rows samples: its geometry and the
    elements of a sample's input and output."""
    g[0] = s.g
    g.n = rows
    per_in[0] = g.c * g.h * g.w
    per_out[0] = g.k * g.oh * g.ow


cdef inline void _pool_rows(const cnnkit_pool2d_geom *base, ptrdiff_t m,
                           ptrdiff_t rows, cnnkit_pool2d_geom *pg,
                           ptrdiff_t *per_in,
                           ptrdiff_t *per_out) noexcept nogil:
    """A pooling geometry of m samples (base) on rows samples, and the
    elements of a sample's input and output."""
    cdef ptrdiff_t planes = base.planes // m
    pg[0] = base[0]
    pg.planes = planes * rows
    per_in[0] = planes * base.h * base.w
    per_out[0] = planes * base.oh * base.ow


cdef void _train_rows(floating *t, _tstep *steps, Py_ssize_t ns,
                      const floating *x0, floating *z, floating *gz,
                      const int64_t *pl, const double *pw, double norm,
                      double smoothing, double *pls, char *ph, ptrdiff_t m,
                      ptrdiff_t c, ptrdiff_t r0, ptrdiff_t r1,
                      const int64_t *lb, ptrdiff_t nq, ptrdiff_t q0,
                      floating *pk, int nt, double *times) noexcept nogil:
    """Samples [r0, r1) of a training step of m samples on nt threads:
    each kernel on those samples as a batch of their own (which gives
    each sample the bits it has in the whole batch), and the parameter
    gradients of the runs [q0, q0 + nq), their bounds lb relative to r0
    (or, for steps of "whole" gradients, of all the samples).  The dense
    steps that add their runs in the tree leave it to _train_trees.  With
    times, each step's seconds are added to it (see TrainProgram.run)."""
    cdef ptrdiff_t rows = r1 - r0, per_in = 0, per_out = 0
    cdef Py_ssize_t i
    cdef _tstep *s
    cdef const floating *xin
    cdef cnnkit_conv2d_geom g
    cdef cnnkit_pool2d_geom pg
    cdef double t0 = 0
    for i in range(ns):
        s = &steps[i]
        if not s.fwd:
            continue
        if times != NULL:
            t0 = cnnkit_seconds()
        xin = x0 if s.x == NULL else <const floating *>s.x
        if s.op == _TS_CONV:
            _conv_rows(s, rows, &g, &per_in, &per_out)
            cnnkit_conv2d_forward(<floating *>s.y + r0 * per_out,
                                  xin + r0 * per_in, <const floating *>s.w,
                                  <const floating *>s.b, s.relu, pk, &g, nt)
        elif s.op == _TS_DENSE:
            cnnkit_dense_forward(<floating *>s.y + r0 * s.o, xin + r0 * s.f,
                                 <const floating *>s.w,
                                 <const floating *>s.b, pk, rows, s.f, s.o,
                                 nt)
        elif s.op == _TS_RELU:
            per_in = s.size // m
            cnnkit_relu_forward(<floating *>s.y + r0 * per_in,
                                xin + r0 * per_in, rows * per_in, nt)
        else:
            _pool_rows(&s.pool, m, rows, &pg, &per_in, &per_out)
            if s.taps != NULL:
                cnnkit_max_pool2x2_taps_forward(
                    <floating *>s.y + r0 * per_out, s.taps + r0 * per_out,
                    xin + r0 * per_in, &pg, nt)
            else:
                cnnkit_max_pool2d_forward(
                    <floating *>s.y + r0 * per_out, s.idx + r0 * per_out,
                    xin + r0 * per_in, &pg, nt)
        if times != NULL:
            times[i] += cnnkit_seconds() - t0
    if times != NULL:
        t0 = cnnkit_seconds()
    cnnkit_softmax_xent(gz + r0 * c, z + r0 * c, pl + r0,
                        NULL if pw == NULL else pw + r0, norm, smoothing,
                        pls + r0, rows, c, nt)
    _hits(z, pl, ph, r0, r1, c)
    if times != NULL:
        times[ns] += cnnkit_seconds() - t0
    for i in range(ns - 1, -1, -1):
        s = &steps[i]
        if not s.bwd:
            continue
        if times != NULL:
            t0 = cnnkit_seconds()
        xin = x0 if s.x == NULL else <const floating *>s.x
        if s.op == _TS_CONV:
            _conv_rows(s, rows, &g, &per_in, &per_out)
            if s.gx != NULL:
                cnnkit_conv2d_backward_data(
                    <floating *>s.gx + r0 * per_in,
                    <const floating *>s.gy + r0 * per_out,
                    <const floating *>s.w, pk, &g, nt)
            if s.grads == _TG_WHOLE:
                cnnkit_conv2d_backward_weight(
                    <floating *>s.gw, <floating *>s.gb,
                    <const floating *>s.gy + r0 * per_out,
                    xin + r0 * per_in, pk, &g, nt)
            elif nq:
                cnnkit_conv2d_backward_weight_parts(
                    <floating *>s.gw + q0 * s.wstride, s.wstride,
                    NULL if s.gb == NULL else
                    <floating *>s.gb + q0 * s.bstride, s.bstride,
                    <const floating *>s.gy + r0 * per_out,
                    xin + r0 * per_in, lb, nq, pk, &g, nt)
        elif s.op == _TS_DENSE:
            if s.grads == _TG_WHOLE:
                cnnkit_dense_backward(
                    NULL if s.gx == NULL else <floating *>s.gx + r0 * s.f,
                    <floating *>s.gw, <floating *>s.gb,
                    <const floating *>s.gy + r0 * s.o, xin + r0 * s.f,
                    <const floating *>s.w, pk, rows, s.f, s.o, nt)
            else:
                cnnkit_dense_backward_parts(
                    NULL if s.gx == NULL else <floating *>s.gx + r0 * s.f,
                    NULL if s.grads == _TG_TREE else
                    <floating *>s.gw + q0 * s.wstride, s.wstride,
                    NULL if s.gb == NULL else
                    <floating *>s.gb + q0 * s.bstride, s.bstride,
                    <const floating *>s.gy + r0 * s.o, xin + r0 * s.f,
                    <const floating *>s.w, lb, nq, pk, rows, s.f, s.o, nt)
        elif s.op == _TS_RELU:
            per_in = s.size // m
            cnnkit_relu_backward(<floating *>s.gx + r0 * per_in,
                                 <const floating *>s.gy + r0 * per_in,
                                 <const floating *>s.y + r0 * per_in,
                                 rows * per_in, nt)
        elif s.taps != NULL:
            _pool_rows(&s.pool, m, rows, &pg, &per_in, &per_out)
            cnnkit_max_pool2x2_taps_backward(
                <floating *>s.gx + r0 * per_in,
                <const floating *>s.gy + r0 * per_out, s.taps + r0 * per_out,
                <const floating *>s.y + r0 * per_out if s.relu else NULL,
                &pg, nt)
        else:
            _pool_rows(&s.unpool, m, rows, &pg, &per_in, &per_out)
            cnnkit_max_pool2d_backward(
                <floating *>s.gx + r0 * per_in,
                <const floating *>s.gy + r0 * per_out, s.idx + r0 * per_out,
                <const floating *>s.y + r0 * per_out if s.relu else NULL,
                &pg, nt)
        if times != NULL:
            times[ns + 1 + i] += cnnkit_seconds() - t0


cdef void _train_trees(floating *t, _tstep *steps, Py_ssize_t ns,
                       const floating *x0, const int64_t *pb,
                       ptrdiff_t nparts, floating *pk, int nt,
                       double *times) noexcept nogil:
    """The dense steps' weight gradients added over the runs in the tree
    (cnnkit_dense_weight_tree), their seconds added to the steps' backward
    times."""
    cdef Py_ssize_t i
    cdef _tstep *s
    cdef double t0 = 0
    for i in range(ns - 1, -1, -1):
        s = &steps[i]
        if s.bwd and s.op == _TS_DENSE and s.grads == _TG_TREE:
            if times != NULL:
                t0 = cnnkit_seconds()
            cnnkit_dense_weight_tree(
                <floating *>s.gw, <const floating *>s.gy,
                x0 if s.x == NULL else <const floating *>s.x, pb, nparts,
                pk, s.f, s.o, nt)
            if times != NULL:
                times[ns + 1 + i] += cnnkit_seconds() - t0


cdef void _gather(floating *t, x, src, rows, ptrdiff_t r0, ptrdiff_t r1,
                  ptrdiff_t size) noexcept:
    """x[r] = src[rows[r]] for r in [r0, r1), samples of size elements."""
    cdef floating *px = _data(x, t)
    cdef const floating *ps = _data(src, t)
    cdef const int64_t *pr = _int64_data(rows)
    with nogil:
        _gather_rows(px, ps, pr, r0, r1, size)


cdef inline void _gather_rows(floating *px, const floating *ps,
                              const int64_t *pr, ptrdiff_t r0, ptrdiff_t r1,
                              ptrdiff_t size) noexcept nogil:
    cdef ptrdiff_t r
    for r in range(r0, r1):
        memcpy(px + r * size, ps + pr[r] * size, size * sizeof(floating))


cdef void _train_run_shards(floating *t, _tstep *steps, Py_ssize_t ns, x,
                            src, rows, ptrdiff_t in_size,
                            logits, grad, lab, sw, double norm,
                            double smoothing, losses, hit, ptrdiff_t m,
                            ptrdiff_t c, bounds, ptrdiff_t nparts, work,
                            shard_work, ptrdiff_t per, int nt) noexcept:
    """_train_run with each task of runs of samples on one thread
    (_train_rows on one thread), the tasks handed out one at a time, so
    that a thread slowed by other work takes fewer; then the dense steps'
    trees of the runs on all nt threads (_train_trees).  No barrier
    between the kernels of a task.  With src, each task first gathers its
    samples, x[r] = src[rows[r]]."""
    cdef const floating *x0 = _data(x, t)
    cdef floating *xg = _data(x, t)
    cdef const floating *psrc = _data(src, t)
    cdef const int64_t *prow = _int64_data(rows)
    cdef ptrdiff_t q0, q1, j
    cdef int64_t *lb
    cdef floating *z = _data(logits, t)
    cdef floating *gz = _data(grad, t)
    cdef const int64_t *pl = _int64_data(lab)
    cdef const double *pw = _data(sw, _F64)
    cdef double *pls = _data(losses, _F64)
    cdef char *ph = <char *>cnp.PyArray_DATA(<cnp.ndarray>hit)
    cdef const int64_t *pb = _int64_data(bounds)
    cdef floating *pk = _data(work, t)
    cdef floating *ps = _data(shard_work, t)
    cdef int64_t lbs[64 * (SHARD_GROUP + 1)]   # each thread's bounds
    cdef int64_t *lbp = lbs
    cdef Py_ssize_t q
    if nt > 64:
        nt = 64
    cdef ptrdiff_t group = _shard_group(nparts, nt)
    cdef ptrdiff_t tasks = (nparts + group - 1) // group
    with nogil, parallel(num_threads=nt):
        for q in prange(tasks, schedule="dynamic", chunksize=1):
            q0 = q * group
            q1 = min(nparts, q0 + group)
            if psrc != NULL:
                _gather_rows(xg, psrc, prow, pb[q0], pb[q1], in_size)
            lb = lbp + (SHARD_GROUP + 1) * threadid()
            for j in range(q1 - q0 + 1):
                lb[j] = pb[q0 + j] - pb[q0]
            _train_rows(t, steps, ns, x0, z, gz, pl, pw, norm, smoothing,
                        pls, ph, m, c, pb[q0], pb[q1], lb, q1 - q0, q0,
                        ps + threadid() * per, 1, NULL)
    with nogil:
        _train_trees(t, steps, ns, x0, pb, nparts, pk, nt, NULL)


cdef object math_prod(object shape):
    cdef object p = 1
    for d in shape:
        p = p * int(d)
    return p


cdef void _train_run(floating *t, _tstep *steps, Py_ssize_t ns, x, logits,
                     grad, lab, sw, double norm, double smoothing, losses,
                     hit, ptrdiff_t m, ptrdiff_t c, bounds,
                     ptrdiff_t nparts, work, int nt,
                     double *times) noexcept:
    """The step on the whole batch, each kernel on nt threads."""
    cdef const floating *x0 = _data(x, t)
    cdef floating *z = _data(logits, t)
    cdef floating *gz = _data(grad, t)
    cdef const int64_t *pl = _int64_data(lab)
    cdef const double *pw = _data(sw, _F64)
    cdef double *pls = _data(losses, _F64)
    cdef char *ph = <char *>cnp.PyArray_DATA(<cnp.ndarray>hit)
    cdef const int64_t *pb = _int64_data(bounds)
    cdef floating *pk = _data(work, t)
    with nogil:
        _train_rows(t, steps, ns, x0, z, gz, pl, pw, norm, smoothing, pls,
                    ph, m, c, 0, m, pb, nparts, 0, pk, nt, times)
        _train_trees(t, steps, ns, x0, pb, nparts, pk, nt, times)
