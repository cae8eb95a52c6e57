"""Two builds of cnnkit's kernels side by side in one process.

On a shared machine whose speed swings from minute to minute, a change to
a kernel is best measured against the build before it in the same
process, calls alternated: both then see the same machine.  This script
imports two (or more) copies of the compiled ``cnnkit._kernels``
extension from the given files, runs each workload with every copy in
turn over ``--rounds`` rounds, and prints the median time of each copy,
the ratio of the first copy's time to each other's (above 1: the other is
faster) and whether their outputs are the same bits.

Build each version and keep its extension aside, for example::

    git checkout <old> && pip install --no-build-isolation -e .
    cp build/*/_kernels*.so /tmp/old.so
    git checkout <new> && pip install --no-build-isolation -e .
    cp build/*/_kernels*.so /tmp/new.so
    python benchmarks/ab_builds.py /tmp/old.so /tmp/new.so --only dense

Workload groups (``--only``):

``dense``
    The dense layer's backward (input and weight gradients) at 8-64
    samples on LeNet-5's layers and wider ones, its weight gradient over a
    training step's 8 shards added in the fixed tree (even parts, and
    uneven ones with an empty part), and its forward pass of one
    sample (the GEMM's paths for few rows) and of batches of 32-128.
``conv``
    Convolutions forward: 1x1 layers (a plain matrix product) and 3x3 and
    5x5 layers of small and medium networks; and the backward pass (input
    and weight gradients, into kept arrays) of the 3x3 and 5x5 ones, and
    their weight gradient alone over a training step's 8 shards.
``gemm``
    Square matrix products of 512-2048 (a dense layer's forward pass
    without bias, into a kept array).
``depthwise``
    Depthwise convolutions forward (bias and ReLU), stride 2 and 1.
``pool``
    2x2 max pooling of small and medium networks' planes: forward with
    indices, and backward through the ReLU before it.

    python benchmarks/ab_builds.py OLD.so NEW.so
        [--only dense conv gemm depthwise pool]
        [--threads 1] [--rounds 9] [--dtype float32] [--match TEXT]
"""
import argparse
import importlib.machinery
import importlib.util
import os
import shutil
import statistics
import tempfile
import time

import numpy as np

import cnnkit  # noqa: F401  (the package the copies belong to)

DENSE_BACKWARD = [(f, o, n) for f, o in ((400, 120), (120, 84), (84, 10),
                                          (1024, 10), (512, 512),
                                          (3136, 1024))
                  for n in (8, 16, 32, 64)] + \
    [(3136, 1024, 128), (4096, 4096, 32), (4096, 4096, 128),
     (1024, 1024, 128)]
#: (in, out, batch) of the weight gradients summed over 8 shards
TREE = [(400, 120, 64), (3136, 1024, 64), (3136, 1024, 32), (1024, 10, 64),
        (512, 512, 128), (84, 10, 64)]
#: (batch, in, out) of forward passes: one sample (the GEMM's one-row
#: paths) and batches (the packed product)
DENSE_FORWARD = [(1, 400, 120), (1, 120, 84), (1, 84, 10), (1, 1100, 77),
                 (1, 3136, 1024), (1, 4096, 4096),
                 (8, 400, 120), (8, 120, 84), (8, 84, 10), (8, 3136, 1024),
                 (32, 3136, 1024), (64, 3136, 1024), (128, 3136, 1024),
                 (32, 4096, 4096), (128, 1024, 1024), (64, 512, 512),
                 (64, 400, 120)]
#: (batch, in channels, side, filters, kernel, padding)
CONV = [(64, 16, 32, 16, 1, 0), (64, 32, 16, 64, 1, 0), (64, 64, 8, 16, 1, 0),
        (64, 32, 14, 64, 5, 2), (64, 16, 32, 16, 3, 1),
        (128, 64, 8, 64, 3, 1), (64, 6, 14, 16, 5, 0), (128, 32, 14, 32, 3, 1),
        (128, 64, 7, 64, 3, 1)]
#: sides of the square matrix products
GEMM = [512, 1024, 2048]
#: depthwise (batch, channels, side, kernel, stride, padding, multiplier)
DEPTHWISE = [(1, 128, 28, 3, 2, 1, 1), (32, 128, 28, 3, 2, 1, 1),
             (32, 32, 56, 3, 2, 1, 1), (8, 64, 112, 3, 2, 1, 1),
             (32, 256, 14, 3, 2, 1, 1), (16, 32, 27, 3, 2, 0, 1),
             (16, 32, 29, 5, 2, 2, 1), (16, 16, 28, 3, 2, 1, 2),
             (8, 32, 96, 3, 2, 1, 1), (8, 16, 224, 3, 2, 1, 1),
             (32, 64, 56, 3, 1, 1, 1)]
#: 2x2 max pooling (batch, channels, side)
POOL = [(64, 6, 28), (64, 16, 10), (32, 32, 28), (32, 64, 14), (1, 6, 28),
        (128, 16, 32)]


def load(path, directory, tag):
    """A separate module object for the extension in ``path`` (copied to a
    path of its own, so that the dynamic loader maps it again; the
    module's name keeps its init function, PyInit__kernels)."""
    sub = os.path.join(directory, tag)
    os.makedirs(sub)
    target = os.path.join(
        sub, "_kernels" + importlib.machinery.EXTENSION_SUFFIXES[0])
    shutil.copy(path, target)
    loader = importlib.machinery.ExtensionFileLoader("cnnkit._kernels",
                                                     target)
    spec = importlib.util.spec_from_file_location("cnnkit._kernels", target,
                                                  loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def workloads(groups, dtype):
    """(label, flops, function of a module returning its outputs)."""
    rng = np.random.default_rng(0)
    out = []
    if "dense" in groups:
        for f, o, n in DENSE_BACKWARD:
            x = rng.standard_normal((n, f)).astype(dtype)
            w = rng.standard_normal((o, f)).astype(dtype)
            g = rng.standard_normal((n, o)).astype(dtype)
            out.append((f"dense backward {n}x{f} -> {o}", 4.0 * n * f * o,
                        lambda k, x=x, w=w, g=g: k.dense_backward(
                            g, x, w, True, False)[:2]))
        # the weight gradient of a training step's 8 shards, added in
        # the fixed tree inside the kernel (one part empty in the second)
        for f, o, n in TREE:
            x = rng.standard_normal((n, f)).astype(dtype)
            w = np.empty((o, f), dtype)
            g = rng.standard_normal((n, o)).astype(dtype)
            for bounds in (np.linspace(0, n, 9).astype(np.int64),
                           np.array([0, 0] + list(range(n // 7, n, n // 7))[:6]
                                    + [n], np.int64)):
                gb = np.empty((len(bounds) - 1, o), dtype)
                gt = np.empty_like(w)
                label = "even" if bounds[1] else "uneven"
                out.append((f"dense tree {label} {n}x{f} -> {o}",
                            2.0 * n * f * o,
                            lambda k, x=x, w=w, g=g, b=bounds, gb=gb, gt=gt: (
                                k.dense_backward_parts(g, x, w, b, None, gb,
                                                       False, None, gt),
                                gt.copy())[1:]))
        for n, f, o in DENSE_FORWARD:
            x = rng.standard_normal((n, f)).astype(dtype)
            w = rng.standard_normal((o, f)).astype(dtype)
            b = rng.standard_normal(o).astype(dtype)
            out.append((f"dense forward {n}x{f} -> {o}", 2.0 * n * f * o,
                        lambda k, x=x, w=w, b=b: (k.dense_forward(x, w, b),)))
    if "conv" in groups:
        for n, c, h, kf, r, p in CONV:
            x = rng.standard_normal((n, c, h, h)).astype(dtype)
            w = (rng.standard_normal((kf, c, r, r)) * 0.1).astype(dtype)
            oh = h + 2 * p - r + 1
            out.append((f"conv forward {n}x{c}x{h}x{h} -> {kf} {r}x{r}",
                        2.0 * n * kf * oh * oh * c * r * r,
                        lambda k, x=x, w=w, p=p: (k.conv2d_forward(
                            x, w, None, (1, 1), (p,) * 4, (1, 1)),)))
            if r == 1:
                continue
            gy = rng.standard_normal((n, kf, oh, oh)).astype(dtype)
            gx, gw = np.empty_like(x), np.empty_like(w)
            out.append((f"conv backward {n}x{c}x{h}x{h} -> {kf} {r}x{r}",
                        4.0 * n * kf * oh * oh * c * r * r,
                        lambda k, x=x, w=w, p=p, gy=gy, gx=gx, gw=gw:
                        k.conv2d_backward(gy, x, w, (1, 1), (p,) * 4,
                                          (1, 1), True, False, gx, gw)[:2]))
            # the weight gradient alone, over a training step's 8 shards
            b8 = np.linspace(0, n, 9).astype(np.int64)
            gw8 = np.empty((8,) + w.shape, dtype)
            out.append((f"conv weight 8 shards {n}x{c}x{h}x{h} -> {kf} "
                        f"{r}x{r}", 2.0 * n * kf * oh * oh * c * r * r,
                        lambda k, x=x, w=w, p=p, gy=gy, b8=b8, gw8=gw8: (
                            k.conv2d_backward_parts(
                                gy, x, w, (1, 1), (p,) * 4, (1, 1), b8, gw8,
                                None, False), gw8.copy())[1:]))
    if "gemm" in groups:
        for n in GEMM:
            a = rng.standard_normal((n, n)).astype(dtype)
            b = rng.standard_normal((n, n)).astype(dtype)
            # an output array of each build's own, kept between calls
            c = {}
            out.append((f"gemm {n}^3", 2.0 * n ** 3,
                        lambda k, a=a, b=b, c=c: (k.dense_forward(
                            a, b, None, out=c.setdefault(
                                id(k), np.empty((len(a), len(b)), a.dtype))),
                        )))
    if "depthwise" in groups:
        for n, c, h, r, st, p, mult in DEPTHWISE:
            x = rng.standard_normal((n, c, h, h)).astype(dtype)
            w = rng.standard_normal((c * mult, 1, r, r)).astype(dtype)
            b = rng.standard_normal(c * mult).astype(dtype)
            oh = (h + 2 * p - r) // st + 1
            out.append((f"depthwise {n}x{c}x{h}x{h} {r}x{r} s{st} p{p}"
                        + (f" x{mult}" if mult > 1 else ""),
                        2.0 * n * c * mult * oh * oh * r * r,
                        lambda k, x=x, w=w, b=b, st=st, p=p, c=c: (
                            k.conv2d_forward(x, w, b, (st, st), (p,) * 4,
                                             (1, 1), True, groups=c),)))
    if "pool" in groups:
        for n, c, h in POOL:
            x = rng.standard_normal((n, c, h, h)).astype(dtype)
            g = rng.standard_normal((n, c, h // 2, h // 2)).astype(dtype)
            y, idx = cnnkit._kernels.max_pool2d_forward(x, (2, 2), (2, 2),
                                                        (0, 0))
            # into kept arrays, as in training (no page faults)
            yo, io, gx = np.empty_like(y), np.empty_like(idx), np.empty_like(x)
            out.append((f"max pool forward {n}x{c}x{h}x{h}", x.size,
                        lambda k, x=x, yo=yo, io=io: k.max_pool2d_forward(
                            x, (2, 2), (2, 2), (0, 0), out=yo,
                            indices_out=io)))
            out.append((f"max pool backward {n}x{c}x{h}x{h}", x.size,
                        lambda k, g=g, idx=idx, y=y, x=x, gx=gx: (
                            k.max_pool2d_backward(g, idx, x.shape, out=gx,
                                                  relu_pooled=y),)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("builds", nargs="+", help="extension files (.so)")
    ap.add_argument("--only", nargs="+",
                    choices=("dense", "conv", "gemm", "depthwise", "pool"),
                    default=["dense", "conv", "gemm", "depthwise", "pool"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--dtype", choices=("float32", "float64"),
                    default="float32")
    ap.add_argument("--match", default="",
                    help="only the workloads whose label contains this")
    args = ap.parse_args(argv)
    if len(args.builds) < 2:
        ap.error("give at least two builds")
    with tempfile.TemporaryDirectory() as tmp:
        mods = [load(p, tmp, f"b{i}") for i, p in enumerate(args.builds)]
        for m in mods:
            m.set_num_threads(args.threads)
        names = [os.path.basename(p) for p in args.builds]
        print(f"{args.threads} thread(s), {args.dtype}, median of "
              f"{args.rounds} alternated rounds; ratio: {names[0]}'s time "
              f"/ each other's (above 1: faster)")
        for label, flops, run in workloads(args.only, np.dtype(args.dtype)):
            if args.match not in label:
                continue
            outs = [run(m) for m in mods]
            same = all(len(o) == len(outs[0]) and
                       all(a.tobytes() == b.tobytes()
                           for a, b in zip(o, outs[0])) for o in outs[1:])
            start = time.perf_counter()
            run(mods[0])
            once = max(time.perf_counter() - start, 1e-7)
            reps = max(3, int(0.02 / once))
            times = [[] for _ in mods]
            for _ in range(args.rounds):
                for i, m in enumerate(mods):
                    start = time.perf_counter()
                    for _ in range(reps):
                        run(m)
                    times[i].append((time.perf_counter() - start) / reps)
            med = [statistics.median(t) for t in times]
            cells = "  ".join(f"{n}: {t * 1e6:9.1f} us" for n, t in
                              zip(names, med))
            ratios = " ".join(f"{med[0] / t:.2f}x" for t in med[1:])
            print(f"{label:42s} {cells}  {ratios}  "
                  f"{'same bits' if same else 'BITS DIFFER'}  "
                  f"({flops / med[-1] / 1e9:.1f} GFLOP/s)", flush=True)


if __name__ == "__main__":
    main()
