"""Run by tests/test_distributed.py under mpiexec: train a small CNN
data-parallel and write each rank's weights and history to OUT/rank<r>.npz.

usage: python -m mpi4py mpi_worker.py OUT REDUCTION
           [fail|mismatch|graph|bn|augment]
"""
import sys

import numpy as np

import cnnkit
from cnnkit import distributed, layers


def build(seed=0, dtype="float32"):
    return cnnkit.Sequential([
        layers.Conv2D(4, 3, padding=1), layers.ReLU(), layers.MaxPool2D(2),
        layers.Dropout(0.1), layers.Flatten(), layers.Dense(16),
        layers.ReLU(), layers.Dense(10),
    ], input_shape=(1, 8, 8), seed=seed, dtype=dtype)


def build_graph(seed=0, dtype="float32"):
    """A residual block, a tensor read by three layers, a layer called
    twice and dropout: every way gradients meet in a graph."""
    inp = cnnkit.Input((1, 8, 8))
    x = layers.ReLU()(layers.Conv2D(4, 3, padding=1)(inp))
    shared = layers.Conv2D(4, 3, padding=1)
    y = shared(layers.ReLU()(shared(x)))
    x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.Concatenate()([layers.MaxPool2D(2)(x),
                              layers.AvgPool2D(2)(x)])
    x = layers.Dropout(0.1)(layers.Flatten()(x))
    out = layers.Dense(10)(x)
    return cnnkit.Model(inp, out, seed=seed, dtype=dtype)


def build_bn(seed=0, dtype="float32"):
    """Batch normalisation after a convolution and after a dense layer:
    statistics of the global batch, exchanged in the forward and backward
    passes."""
    return cnnkit.Sequential([
        layers.Conv2D(4, 3, padding=1), layers.BatchNorm2D(), layers.ReLU(),
        layers.MaxPool2D(2), layers.Flatten(), layers.Dense(16),
        layers.BatchNorm1D(momentum=0.3), layers.ReLU(), layers.Dense(10),
    ], input_shape=(1, 8, 8), seed=seed, dtype=dtype)


def buffers(model):
    """Every buffer of the model, as float64, in one array."""
    return np.concatenate([np.asarray(b, dtype=np.float64).ravel()
                           for b in model.buffers()] or [np.zeros(0)])


def data():
    x, y = cnnkit.datasets.load_digits()
    return x[:300], y[:300], x[300:400], y[300:400]


def augment():
    from cnnkit.transforms import parse
    return parse("crop:1,flip,translate:0.25")


def train(model, distributed_arg, callbacks=(), augment=None):
    x, y, xv, yv = data()
    w = np.linspace(0.5, 1.5, x.shape[0])
    return model.fit(x, y, epochs=3, batch_size=27, optimizer="adam",
                     validation_data=(xv, yv), sample_weight=w,
                     verbose=0, distributed=distributed_arg,
                     callbacks=callbacks, augment=augment)


def main():
    out, reduction = sys.argv[1], sys.argv[2]
    distributed.init()
    mode = sys.argv[3] if len(sys.argv) > 3 else ""
    if mode == "fail":
        if distributed.rank() == 1:
            raise RuntimeError("rank 1 fails on purpose")
        distributed.barrier()          # the other ranks wait here
    if mode == "mismatch":             # rank 1 asks for another batch size
        x, y, _, _ = data()
        build().fit(x, y, batch_size=27 + distributed.rank(), verbose=0,
                    distributed="mpi")
    # Each rank starts from different weights: fit takes rank 0's.
    model = {"graph": build_graph, "bn": build_bn}.get(mode, build)(
        seed=distributed.rank())
    if not distributed.is_root():
        model.rng.random(7)            # and from rank 0's random state
    # each rank names its own file: only rank 0's may appear
    ckpt = cnnkit.callbacks.ModelCheckpoint(
        f"{out}/ckpt{distributed.rank()}-{{epoch}}.cnnkit")
    hist = train(model, distributed.DataParallel(reduction=reduction),
                 [ckpt], augment() if mode == "augment" else None)
    np.savez(f"{out}/rank{distributed.rank()}.npz",
             params=model.flat_params, size=distributed.size(),
             buffers=buffers(model),
             **{k: np.asarray(v) for k, v in hist.history.items()})


if __name__ == "__main__":
    main()
