"""Time cnnkit's kernels against the NumPy reference and, if installed, PyTorch.

Each case is measured ``--repeats`` times, the implementations interleaved
within a repeat so that machine noise hits all of them alike (one measurement
is a loop of back-to-back calls lasting about 20 ms); the table shows median
times and the ratios ``other / cnnkit`` (above 1: cnnkit is faster).  PyTorch
is optional (``pip install torch``) and runs with the same thread count.

Usage::

    cnnkit bench [--threads N] [--repeats R] [--quick]
    python benchmarks/bench_kernels.py --gemm [--sizes 1024 2048 4096]
        [--threads N] [--repeats R]
    python benchmarks/bench_kernels.py [same options]

``--gemm`` runs a square matrix-multiply sweep instead: C = A @ B^T through
``functional.dense`` (no bias), float32 and float64, against NumPy's
``matmul`` limited to the same thread count (through threadpoolctl, when
installed).  Set ``CNNKIT_SIMD=avx512|avx2|generic`` to time one SIMD path.

On machines whose environment sets OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, unset
both in this command so NumPy's matmul runs its best kernel:
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE cnnkit bench``.
"""
import argparse
import platform
import statistics
import time

import numpy as np

import cnnkit
from cnnkit import functional as F
from cnnkit import reference as R

try:
    import torch
    import torch.nn.functional as TF
except ImportError:  # PyTorch is optional
    torch = None


def _conv_case(n, c, h, k, r, pad, dtype=np.float32):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, h)).astype(dtype)
    w = rng.standard_normal((k, c, r, r)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    y = F.conv2d(x, w, b, padding=pad)
    g = rng.standard_normal(y.shape).astype(dtype)
    flops = 2 * n * k * y.shape[2] * y.shape[3] * c * r * r
    name = f"{n}x{c}x{h}x{h} * {k}x{c}x{r}x{r} p{pad}"
    impls_f = {
        "cnnkit": lambda: F.conv2d(x, w, b, padding=pad),
        "numpy": lambda: R.conv2d(x, w, b, padding=pad),
    }
    impls_b = {
        "cnnkit": lambda: F.conv2d_backward(g, x, w, padding=pad),
        "numpy": lambda: R.conv2d_backward(g, x, w, padding=pad),
    }
    if torch is not None:
        tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))
        tg = torch.from_numpy(g)
        txg = tx.clone().requires_grad_()
        twg = tw.clone().requires_grad_()
        tbg = tb.clone().requires_grad_()

        def torch_bwd():
            out = TF.conv2d(txg, twg, tbg, padding=pad)
            return torch.autograd.grad(out, (txg, twg, tbg), tg)

        impls_f["torch"] = lambda: TF.conv2d(tx, tw, tb, padding=pad)
        impls_b["torch"] = torch_bwd       # includes one forward
    return [("conv2d fwd", name, flops, impls_f),
            ("conv2d bwd", name, 2 * flops, impls_b)]


def _pool_case(n, c, h, dtype=np.float32):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, h)).astype(dtype)
    y, idx = F.max_pool2d(x, 2)
    g = rng.standard_normal(y.shape).astype(dtype)
    name = f"{n}x{c}x{h}x{h} k2"
    impls_f = {"cnnkit": lambda: F.max_pool2d(x, 2),
               "numpy": lambda: R.max_pool2d(x, 2)}
    impls_b = {"cnnkit": lambda: F.max_pool2d_backward(g, idx, x.shape),
               "numpy": lambda: R.max_pool2d_backward(g, idx, x.shape)}
    if torch is not None:
        tx = torch.from_numpy(x)
        ty, ti = TF.max_pool2d(tx, 2, return_indices=True)
        tg = torch.from_numpy(g)
        impls_f["torch"] = lambda: TF.max_pool2d(tx, 2, return_indices=True)
        impls_b["torch"] = lambda: torch.ops.aten.max_pool2d_with_indices_backward(
            tg, tx, [2, 2], [2, 2], [0, 0], [1, 1], False, ti)
    return [("maxpool fwd", name, None, impls_f),
            ("maxpool bwd", name, None, impls_b)]


def _relu_case(shape, dtype=np.float32):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    impls = {"cnnkit": lambda: F.relu(x), "numpy": lambda: R.relu(x)}
    if torch is not None:
        tx = torch.from_numpy(x)
        impls["torch"] = lambda: torch.relu(tx)
    return [("relu", "x".join(map(str, shape)), None, impls)]


def _dense_case(n, f, o, dtype=np.float32):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, f)).astype(dtype)
    w = rng.standard_normal((o, f)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    g = rng.standard_normal((n, o)).astype(dtype)
    name = f"{n}x{f} @ {f}x{o}"
    impls_f = {"cnnkit": lambda: F.dense(x, w, b),
               "numpy": lambda: R.dense(x, w, b)}
    impls_b = {"cnnkit": lambda: F.dense_backward(g, x, w),
               "numpy": lambda: R.dense_backward(g, x, w)}
    if torch is not None:
        tx, tw, tb, tg = (torch.from_numpy(a) for a in (x, w, b, g))
        impls_f["torch"] = lambda: TF.linear(tx, tw, tb)
        impls_b["torch"] = lambda: (tg @ tw, tg.T @ tx, tg.sum(0))
    flops = 2 * n * f * o
    return [("dense fwd", name, flops, impls_f),
            ("dense bwd", name, 2 * flops, impls_b)]


def _gemm_case(size, dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    impls = {"cnnkit": lambda: F.dense(a, b),
             "numpy": lambda: np.matmul(a, b.T)}
    name = f"{size}^3 {np.dtype(dtype).name}"
    return [("gemm", name, 2 * size ** 3, impls)]


def _xent_case(n, c, dtype=np.float32):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, c)).astype(dtype)
    y = rng.integers(0, c, n)
    impls = {"cnnkit": lambda: F.softmax_cross_entropy(z, y),
             "numpy": lambda: R.softmax_cross_entropy(z, y)}
    if torch is not None:
        tz = torch.from_numpy(z).requires_grad_()
        ty = torch.from_numpy(y)

        def torch_xent():
            loss = TF.cross_entropy(tz, ty)
            return torch.autograd.grad(loss, tz)

        impls["torch"] = torch_xent
    return [("softmax xent", f"{n}x{c}", None, impls)]


# Pause before each measurement: OpenBLAS's and OpenMP's idle threads keep
# spinning for a while after a call (OpenBLAS for up to ~0.1 s) and would
# steal the cores from whatever runs next.
SETTLE = 0.12


def _time(fn, number):
    """Seconds per call, over `number` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def _calibrate(fn, target=0.02):
    """Calls per measurement so that one measurement takes ~target s (a
    single call of a fast kernel is dominated by thread wake-up and by the
    spinning thread pool of whatever ran before it)."""
    t = _time(fn, 1)
    return max(1, min(10000, int(target / max(t, 1e-7))))


def run_case(op, name, flops, impls, repeats):
    number = {k: _calibrate(fn) for k, fn in impls.items()}   # + warm-up
    times = {k: [] for k in impls}
    for _ in range(repeats):
        for k, fn in impls.items():
            time.sleep(SETTLE)
            times[k].append(_time(fn, number[k]))
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["cnnkit"]
    cells = [f"{op:<13} {name:<30}", f"{base * 1e3:9.3f} ms"]
    if flops:
        cells.append(f"{flops / base / 1e9:7.1f} GF/s")
    else:
        cells.append(" " * 12)
    for other in ("numpy", "torch"):
        if other in med:
            cells.append(f"{other} x{med[other] / base:7.2f}")
    if flops and op == "gemm":
        cells.append(f"(numpy {flops / med['numpy'] / 1e9:.1f} GF/s)")
    print("  ".join(cells), flush=True)
    return med


def main(argv=None):
    ap = argparse.ArgumentParser(prog="cnnkit bench",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=0,
                    help="threads for cnnkit and torch (default: all)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true",
                    help="small shapes only, 3 repeats")
    ap.add_argument("--gemm", action="store_true",
                    help="square GEMM sweep (float32 and float64) only")
    ap.add_argument("--sizes", type=int, nargs="+",
                    default=[1024, 2048, 4096],
                    help="matrix sizes of the --gemm sweep")
    args = ap.parse_args(argv)
    cnnkit.set_num_threads(args.threads)
    nt = cnnkit.get_num_threads()
    if torch is not None:
        torch.set_num_threads(nt)
    repeats = 3 if args.quick else args.repeats
    print(f"cnnkit {cnnkit.__version__}, {nt} threads, "
          f"{platform.processor() or platform.machine()}, "
          f"SIMD {cnnkit._kernels.build_info()['simd_path']}; NumPy "
          f"{np.__version__}; PyTorch "
          f"{torch.__version__ if torch is not None else 'not installed'}")
    print("times are medians over interleaved repeats; 'numpy xR' / 'torch "
          "xR' = their time / cnnkit's (above 1: cnnkit is faster)\n")
    if args.gemm:
        _gemm_sweep(args.sizes, nt, repeats)
        return
    cases = []
    cases += _conv_case(32, 1, 28, 6, 5, 2)          # LeNet conv1
    cases += _conv_case(32, 6, 14, 16, 5, 0)         # LeNet conv2
    cases += _pool_case(32, 6, 28)
    cases += _relu_case((32, 6, 28, 28))
    cases += _dense_case(32, 400, 120)
    cases += _xent_case(64, 10)
    if not args.quick:
        cases += _conv_case(8, 64, 56, 64, 3, 1)     # a ResNet-style layer
        cases += _dense_case(1024, 1024, 1024)
    for case in cases:
        run_case(*case, repeats)


def _gemm_sweep(sizes, nt, repeats):
    try:
        from threadpoolctl import threadpool_limits
        limit = threadpool_limits(nt, user_api="blas")
    except ImportError:  # NumPy's BLAS then uses its own thread count
        limit = None
    try:
        for dtype in (np.float32, np.float64):
            for size in sizes:
                for case in _gemm_case(size, dtype):
                    run_case(*case, repeats if size < 4096 else
                             min(repeats, 3))
    finally:
        if limit is not None:
            limit.restore_original_limits()


if __name__ == "__main__":
    main()
