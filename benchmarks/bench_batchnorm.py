"""The cost of batch normalisation in a training step, and of its
exchanges across ranks: a small CNN with and without BatchNorm2D /
BatchNorm1D after each convolution and dense layer.

    python benchmarks/bench_batchnorm.py            # one process
    OMP_NUM_THREADS=1 mpiexec -n 2 python -m mpi4py benchmarks/bench_batchnorm.py

Prints, per configuration, the time of a step, the time spent exchanging
and adding the shard gradients, and the time spent in the exchanges of
batch statistics (three per batch-norm layer and step; with several ranks
this also absorbs the wait for the slowest rank).
"""
import numpy as np

import cnnkit
from cnnkit import distributed
from cnnkit import layers as L


def build(bn):
    def norm(cls):
        return [cls()] if bn else []
    return cnnkit.Sequential(
        [L.Conv2D(16, 3, padding=1)] + norm(L.BatchNorm2D) +
        [L.ReLU(), L.MaxPool2D(2), L.Conv2D(32, 3, padding=1)] +
        norm(L.BatchNorm2D) + [L.ReLU(), L.MaxPool2D(2), L.Flatten(),
                               L.Dense(64)] + norm(L.BatchNorm1D) +
        [L.ReLU(), L.Dense(10)], input_shape=(1, 28, 28), seed=0)


def main(n=1536, batch_size=64):
    distributed.init()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, n)
    steps = -(-n // batch_size)
    for bn in (False, True):
        model = build(bn)
        model.fit(x[:2 * batch_size], y[:2 * batch_size], epochs=1,
                  batch_size=batch_size, verbose=0, distributed="mpi",
                  optimizer="sgd")                       # warm up
        h = model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0,
                      distributed="mpi", optimizer="sgd")
        if distributed.is_root():
            stats = getattr(h, "batch_sums_seconds", 0.0)
            print(f"ranks={distributed.size()} batch_norm={bn!s:5} "
                  f"step {1000 * h.history['seconds'][0] / steps:7.2f} ms  "
                  f"gradient exchange {1000 * h.exchange_seconds / steps:6.3f}"
                  f" ms  statistics exchange {1000 * stats / steps:6.3f} ms",
                  flush=True)


if __name__ == "__main__":
    main()
