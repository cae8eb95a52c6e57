"""LeNet-5 training and inference: cnnkit against PyTorch (when installed).

LeNet-5 on 28x28 images: conv 6@5x5 pad 2, max pool 2, conv 16@5x5, max
pool 2, dense 120, 84, 10, ReLU between; SGD with momentum 0.9.  Training
goes through ``model.fit`` (shuffling, batching, loss, backward, update), the
PyTorch loop does the same per batch.  Each measurement is one pass over a
fixed number of images; frameworks alternate within each repeat and the
medians are compared.

Usage::

    python benchmarks/bench_lenet.py [--threads N] [--repeats R]
        [--batch-sizes 1 32 64] [--images 2048]

The last line reports the peak memory of a training epoch at batch 64
(tracemalloc) and the process's peak resident size.
"""
import argparse
import platform
import statistics
import time

import numpy as np

import cnnkit
from cnnkit import layers as L
from cnnkit.datasets import make_synthetic

try:
    import torch
    from torch import nn
except ImportError:  # PyTorch is optional
    torch = None

SETTLE = 0.12   # let idle OpenMP / BLAS threads stop spinning between runs


def cnnkit_lenet(seed=0):
    return cnnkit.Sequential([
        L.Conv2D(6, 5, padding=2), L.ReLU(), L.MaxPool2D(2),
        L.Conv2D(16, 5), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
        L.Dense(120), L.ReLU(), L.Dense(84), L.ReLU(), L.Dense(10)],
        input_shape=(1, 28, 28), seed=seed)


def torch_lenet():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 64])
    ap.add_argument("--images", type=int, default=2048,
                    help="images per training measurement (batch 1 uses a "
                         "quarter)")
    args = ap.parse_args(argv)
    cnnkit.set_num_threads(args.threads)
    nt = cnnkit.get_num_threads()
    if torch is not None:
        torch.set_num_threads(nt)
    print(f"cnnkit {cnnkit.__version__} ({cnnkit._kernels.build_info()['simd_path']}), "
          f"PyTorch {torch.__version__ if torch else 'not installed'}, "
          f"{nt} threads, {platform.machine()}")
    x, y = make_synthetic(args.images, (1, 28, 28), 10, seed=0)

    for bs in args.batch_sizes:
        n = args.images // 4 if bs == 1 else args.images
        xs, ys = x[:n], y[:n]
        model = cnnkit_lenet()
        opt = cnnkit.optim.SGD(0.01, momentum=0.9)

        def run_cnnkit():
            model.fit(xs, ys, epochs=1, batch_size=bs, optimizer=opt,
                      verbose=0)

        runs = {"cnnkit": run_cnnkit}
        if torch is not None:
            tnet = torch_lenet()
            topt = torch.optim.SGD(tnet.parameters(), lr=0.01, momentum=0.9)
            tx, ty = torch.from_numpy(xs), torch.from_numpy(ys)
            loss_fn = nn.CrossEntropyLoss()

            def run_torch():
                perm = torch.randperm(n)
                for i in range(0, n, bs):
                    idx = perm[i:i + bs]
                    topt.zero_grad(set_to_none=True)
                    loss = loss_fn(tnet(tx[idx]), ty[idx])
                    loss.backward()
                    topt.step()

            runs["torch"] = run_torch
        rates = _measure(runs, n, args.repeats)
        _report(f"train   batch {bs:>3}", rates)

    model = cnnkit_lenet()
    xi = x[:1024]
    runs = {"cnnkit": lambda: model.predict_proba(xi, batch_size=256)}
    if torch is not None:
        tnet = torch_lenet().eval()
        txi = torch.from_numpy(xi)

        def infer_torch():
            with torch.inference_mode():
                for i in range(0, 1024, 256):
                    torch.softmax(tnet(txi[i:i + 256]), dim=1)

        runs["torch"] = infer_torch
    _report("predict batch 256", _measure(runs, 1024, args.repeats))
    _memory(x, y, 64)


def _memory(x, y, bs):
    """Peak memory that a training epoch adds on top of the model, the data
    and the kernels' kept scratch buffers (all allocated by a warm-up
    epoch), as tracemalloc sees it: Python objects and NumPy arrays."""
    import resource
    import tracemalloc
    model = cnnkit_lenet()
    opt = cnnkit.optim.SGD(0.01, momentum=0.9)
    model.fit(x[:4 * bs], y[:4 * bs], epochs=1, batch_size=bs, optimizer=opt,
              verbose=0)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    model.fit(x, y, epochs=1, batch_size=bs, optimizer=opt, verbose=0)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = model.count_params() * 4
    print(f"memory  batch {bs:>3}: an epoch peaks {peak / 2**20:.1f} MiB above "
          f"its start (parameters {params / 2**20:.2f} MiB, {len(x)} "
          f"images {x.nbytes / 2**20:.1f} MiB); process peak RSS "
          f"{rss:.0f} MiB", flush=True)


def _measure(runs, n, repeats):
    for fn in runs.values():       # warm up
        fn()
    times = {k: [] for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            time.sleep(SETTLE)
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: n / statistics.median(v) for k, v in times.items()}


def _report(label, rates):
    line = f"{label}: cnnkit {rates['cnnkit']:9.0f} img/s"
    if "torch" in rates:
        line += (f"   torch {rates['torch']:9.0f} img/s   cnnkit/torch "
                 f"x{rates['cnnkit'] / rates['torch']:.2f}")
    print(line, flush=True)


if __name__ == "__main__":
    main()
