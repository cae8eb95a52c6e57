"""Winograd's F(4x4, 3x3) against the direct sums, pass by pass.

For 3x3 convolutions of stride 1 (padding 1), times each pass of
``Conv2D(winograd=True)`` against the same pass by the direct sums, in
interleaved rounds (the median of ``--repeats`` rounds, each the median
of a few back-to-back calls):

* ``fwd``: the forward pass (with the bias);
* ``bwd``: the input, weight and bias gradients as training takes them
  (``backward_parts`` over the 8 fixed runs of images of ``fit``'s
  shards), which the direct path computes in one fused pass;
* ``dw``: the weight and bias gradients alone, by runs.

Then one epoch of ResNet-20 (1024 synthetic 1 x 28 x 28 images, batch 128,
Adam; :func:`cnnkit.models.resnet`) with ``winograd=False`` and ``True``,
alternated.  Ratios above 1: Winograd is faster.  The columns name the
pass the layer takes by F(4x4, 3x3) (``winograd_tiles``: forward, input
gradient, weight gradient); a 0 there means that pass keeps the direct
sums, so its ratio is noise around 1.

    python benchmarks/bench_winograd.py [--threads 2] [--repeats 5]
                                        [--epochs 5] [--dtype float32]
"""
import argparse
import statistics
import time

import numpy as np

import cnnkit
from cnnkit import models, optim
from cnnkit._ops import Conv2DOp
from cnnkit.bench import cpu_name
from cnnkit.datasets import make_synthetic

#: (batch, channels, filters, plane side)
LAYERS = [(32, 16, 16, 56), (32, 32, 32, 28), (32, 64, 64, 14),
          (32, 128, 128, 7), (32, 64, 64, 28), (32, 128, 128, 14),
          (128, 16, 16, 28), (128, 32, 32, 28), (128, 32, 32, 14),
          (128, 64, 64, 14), (128, 64, 64, 7), (128, 128, 128, 7),
          (1, 64, 64, 14), (1, 128, 128, 7)]


def _median_call(f, calls=5):
    f()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def layer_row(n, c, k, h, dtype, repeats):
    """Milliseconds (direct, Winograd) for each pass of one layer."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, h)).astype(dtype)
    w = (rng.standard_normal((k, c, 3, 3)) * 0.1).astype(dtype)
    b = np.zeros(k, dtype)
    g = rng.standard_normal((n, k, h, h)).astype(dtype)
    runs = min(8, n)
    bounds = [n * i // runs for i in range(runs + 1)]
    gw = np.empty((runs,) + w.shape, dtype)
    gb = np.empty((runs, k), dtype)
    ops = {False: Conv2DOp((1, 1), (1,) * 4, (1, 1), 1),
           True: Conv2DOp((1, 1), (1,) * 4, (1, 1), 1, winograd=True)}

    def passes(op):
        return {"fwd": lambda: op.forward(x, w, b),
                "bwd": lambda: op.backward_parts(g, x, w, bounds, gw, gb),
                "dw": lambda: op.backward_parts(g, x, w, bounds, gw, gb,
                                                input_grad=False)}

    times = {}
    for _ in range(repeats):
        for wino, op in ops.items():
            for name, f in passes(op).items():
                times.setdefault((name, wino), []).append(_median_call(f))
    ms = {key: 1e3 * statistics.median(v) for key, v in times.items()}
    return ms, ops[True].winograd_tiles((c, h, h), w.shape, dtype)


def resnet_epochs(epochs):
    """Median seconds of a ResNet-20 epoch, winograd False and True."""
    x, y = make_synthetic(1024, (1, 28, 28), 10, seed=0)
    nets = {wino: models.resnet(20, input_shape=(1, 28, 28), seed=0,
                                winograd=wino) for wino in (False, True)}
    opts = {wino: optim.Adam(1e-3) for wino in nets}
    for wino, net in nets.items():     # the buffers a fit keeps
        net.fit(x[:256], y[:256], epochs=1, batch_size=128,
                optimizer=opts[wino], verbose=0)
    times = {wino: [] for wino in nets}
    for _ in range(epochs):
        for wino, net in nets.items():
            t = time.perf_counter()
            net.fit(x, y, epochs=1, batch_size=128, optimizer=opts[wino],
                    verbose=0)
            times[wino].append(time.perf_counter() - t)
    return {wino: statistics.median(v) for wino, v in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=0,
                   help="threads (0: cnnkit's default)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs", type=int, default=5,
                   help="ResNet-20 epochs of each kind (0: none)")
    p.add_argument("--dtype", default="float32",
                   choices=("float32", "float64"))
    args = p.parse_args(argv)
    if args.threads:
        cnnkit.set_num_threads(args.threads)
    dtype = np.dtype(args.dtype)
    print(f"cnnkit {cnnkit.__version__}, {cpu_name()}, "
          f"{cnnkit.get_num_threads()} threads, {dtype.name}; "
          f"medians of {args.repeats} interleaved rounds; "
          f"ratio = direct / Winograd")
    print(f"{'layer (batch x C->K x side)':28s} {'tiles':10s} "
          + "".join(f"{p + ' D/W ms':>18s} {'ratio':>6s}"
                    for p in ("fwd", "bwd", "dw")))
    for n, c, k, h in LAYERS:
        ms, tiles = layer_row(n, c, k, h, dtype, args.repeats)
        cells = "".join(
            f"{ms[(q, False)]:8.2f}/{ms[(q, True)]:<9.2f} "
            f"{ms[(q, False)] / ms[(q, True)]:6.2f}"
            for q in ("fwd", "bwd", "dw"))
        print(f"{f'{n} x {c}->{k} x {h}':28s} {str(tiles):10s} {cells}")
    if args.epochs:
        sec = resnet_epochs(args.epochs)
        print(f"ResNet-20 epoch (1024 images, batch 128, Adam): direct "
              f"{sec[False] * 1e3:.0f} ms, Winograd {sec[True] * 1e3:.0f} "
              f"ms, ratio {sec[False] / sec[True]:.2f}")


if __name__ == "__main__":
    main()
