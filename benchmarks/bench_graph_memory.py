"""Peak memory of a residual network: inference and a training step.

Builds a small ResNet for 3x32x32 images (a stem convolution, three stages
of two residual blocks with 16, 32 and 64 channels, global average pooling
and a dense head) and measures with :mod:`tracemalloc` (NumPy reports its
array memory to it):

* inference: the peak above the start of ``model.predict_proba`` on a
  batch, against the sum of every call's output (what a runner that kept
  every activation would hold);
* a training step: the peak of the first step of ``fit`` (it allocates the
  arrays the steps keep) and of the steady state (later steps), against
  the same sum.

Usage::

    python benchmarks/bench_graph_memory.py [--batch 64] [--threads N]
"""
import argparse
import math
import time
import tracemalloc

import numpy as np

import cnnkit
from cnnkit import layers as L


def resnet(channels=(16, 32, 64), blocks=2, seed=0):
    def block(x, c, stride):
        y = L.ReLU()(L.Conv2D(c, 3, stride=stride, padding=1)(x))
        y = L.Conv2D(c, 3, padding=1)(y)
        if stride != 1 or x.shape[0] != c:
            x = L.Conv2D(c, 1, stride=stride)(x)       # projection shortcut
        return L.ReLU()(L.Add()([x, y]))

    inp = cnnkit.Input((3, 32, 32))
    x = L.ReLU()(L.Conv2D(channels[0], 3, padding=1)(inp))
    for i, c in enumerate(channels):
        for j in range(blocks):
            x = block(x, c, 2 if (j == 0 and i > 0) else 1)
    out = L.Dense(10)(L.Flatten()(L.GlobalAvgPool2D()(x)))
    return cnnkit.Model(inp, out, seed=seed)


def activations_bytes(model, batch):
    """The bytes of every call's output at this batch size (float32)."""
    config = model.get_config()
    shapes, total = {}, 0
    for layer in model.layers:
        shapes[layer.name] = layer.output_shape
    for node in config["nodes"]:
        total += batch * math.prod(shapes[node["layer"]]) * 4
    return total


class StepPeaks(cnnkit.callbacks.Callback):
    """tracemalloc's peak during each training step, above its start."""

    def __init__(self):
        super().__init__()
        self.peaks, self.base = [], None

    def on_batch_end(self, batch, logs=None):
        if self.base is not None:
            self.peaks.append(tracemalloc.get_traced_memory()[1] - self.base)
        tracemalloc.reset_peak()
        self.base = tracemalloc.get_traced_memory()[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    cnnkit.set_num_threads(args.threads)
    model = resnet()
    b = args.batch
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4 * b, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 4 * b)
    every = activations_bytes(model, b)
    mib = 2.0 ** 20
    print(f"cnnkit {cnnkit.__version__}, {cnnkit.get_num_threads()} "
          f"thread(s); ResNet for 3x32x32: {len(model.get_config()['nodes'])} "
          f"calls, {model.count_params():,} parameters; batch {b}")
    print(f"  every call's output at batch {b}: {every / mib:8.1f} MiB")

    model.predict_proba(x[:b], batch_size=b)          # warm the caches
    tracemalloc.start()
    t0 = time.perf_counter()
    model.predict_proba(x[:b], batch_size=b)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"  inference peak:                {peak / mib:8.1f} MiB "
          f"({peak / every:.2f} of every output; {seconds * 1e3:.0f} ms)")

    probe = StepPeaks()
    tracemalloc.start()
    tracemalloc.reset_peak()
    start = tracemalloc.get_traced_memory()[0]
    model.fit(x, y, epochs=1, batch_size=b, optimizer="sgd", verbose=0,
              callbacks=[probe], shuffle=False)
    tracemalloc.stop()
    first = probe.base - start        # what the steps keep after step 1
    steady = max(probe.peaks) if probe.peaks else float("nan")
    print(f"  training: arrays kept by the steps: {first / mib:8.1f} MiB; "
          f"peak of a later step above them: {steady / mib:.2f} MiB")


if __name__ == "__main__":
    main()
