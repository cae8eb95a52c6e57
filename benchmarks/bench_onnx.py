"""LeNet-5 inference: cnnkit against onnxruntime running the exported model.

The LeNet-5 of ``bench_lenet.py`` (28x28 images: conv 6@5x5 pad 2, max pool
2, conv 16@5x5, max pool 2, dense 120, 84, 10) is exported with
:func:`cnnkit.onnx.export` and run by onnxruntime's CPU provider with its
default graph optimisations.  Both use the same number of threads
(``cnnkit.set_num_threads`` and onnxruntime's ``intra_op_num_threads``;
one inter-op thread).  cnnkit is timed through ``model(x)`` and
onnxruntime through ``session.run``, both returning logits; the two outputs
are checked to agree before timing.

Each measurement runs a fixed number of images in batches of the given
size; the two runtimes alternate within each repeat.  The table shows the
median time of each, and the median over the repeats of the ratio of the
two times measured side by side (more robust on a shared, noisy machine
than the ratio of the medians); a ratio below 1 means cnnkit is slower.

Usage::

    python benchmarks/bench_onnx.py [--threads 2] [--repeats 15]
        [--batch-sizes 1 256] [--images 2048]
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np

import cnnkit
from cnnkit.bench import cpu_name, lenet_cnnkit as lenet
from cnnkit.datasets import make_synthetic

SETTLE = 0.05   # let idle OpenMP threads stop spinning between runs


def main(argv=None):
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256])
    ap.add_argument("--images", type=int, default=2048,
                    help="images per measurement (batch 1 uses an eighth)")
    args = ap.parse_args(argv)

    cnnkit.set_num_threads(args.threads)
    nt = cnnkit.get_num_threads()
    model = lenet()
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "lenet.onnx")
    cnnkit.onnx.export(model, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = nt
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options,
                                   providers=["CPUExecutionProvider"])
    x, _ = make_synthetic(args.images, (1, 28, 28), 10, seed=0)
    x = np.ascontiguousarray(x, dtype=np.float32)
    (check,) = session.run(None, {"input": x[:64]})
    err = float(np.abs(check - model(x[:64])).max())
    assert np.allclose(check, model(x[:64]), rtol=1e-4, atol=1e-4), err

    simd = cnnkit._kernels.build_info().get("simd_path", "?")
    print(f"cnnkit {cnnkit.__version__} ({simd}), onnxruntime "
          f"{ort.__version__}, {nt} threads each, {cpu_name()} "
          f"({os.cpu_count()} CPUs visible)")
    print(f"LeNet-5 on 1x28x28 images, logits; median of {args.repeats} "
          f"interleaved repeats; max |difference| of the logits {err:.1e}")
    print()
    header = (f"{'batch':>5}  {'cnnkit ms/batch':>15}  "
              f"{'onnxruntime ms/batch':>20}  {'cnnkit img/s':>12}  "
              f"{'onnxruntime img/s':>17}  {'cnnkit/onnxruntime':>18}")
    print(header)
    print("-" * len(header))
    for bs in args.batch_sizes:
        n = max(bs, args.images // 8 if bs == 1 else args.images)
        n -= n % bs
        batches = [x[i:i + bs] for i in range(0, n, bs)]

        def run_cnnkit():
            for xb in batches:
                model(xb)

        def run_ort():
            for xb in batches:
                session.run(None, {"input": xb})

        times = _measure({"cnnkit": run_cnnkit, "onnxruntime": run_ort},
                         args.repeats)
        med = {k: statistics.median(v) for k, v in times.items()}
        per = {k: 1e3 * v / len(batches) for k, v in med.items()}
        rate = {k: n / v for k, v in med.items()}
        # onnxruntime time / cnnkit time, per repeat: above 1 means cnnkit
        # is faster
        ratio = statistics.median(
            o / c for o, c in zip(times["onnxruntime"], times["cnnkit"]))
        print(f"{bs:>5}  {per['cnnkit']:>15.3f}  {per['onnxruntime']:>20.3f}"
              f"  {rate['cnnkit']:>12.0f}  {rate['onnxruntime']:>17.0f}  "
              f"{ratio:>17.2f}x", flush=True)


def _measure(runs, repeats):
    """Seconds of each run in each repeat; the runs alternate within a
    repeat."""
    for fn in runs.values():       # warm up
        fn()
    times = {k: [] for k in runs}
    for r in range(repeats):
        order = list(runs.items())
        if r % 2:
            order.reverse()        # neither always goes first
        for k, fn in order:
            time.sleep(SETTLE)
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


if __name__ == "__main__":
    main()
