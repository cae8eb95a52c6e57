"""LeNet-5 training and inference: cnnkit against PyTorch (when installed).

The lenet group of ``benchmarks/run.py`` (``cnnkit bench --only lenet``),
5 repeats unless ``--repeats`` says otherwise.  LeNet-5 on 28x28 images:
conv 6@5x5 pad 2, max pool 2, conv 16@5x5, max pool 2, dense 120, 84, 10,
ReLU between; SGD with momentum 0.9.  Training goes through ``model.fit``
(shuffling, batching, loss, backward, update), the PyTorch loop does the
same per batch; inference goes through ``predict_proba`` at batch 256.  Each
measurement is one pass over a fixed number of images, each framework runs
in its own process, and the frameworks alternate within each repeat.

Usage::

    python benchmarks/bench_lenet.py [--threads N] [--repeats R]
        [--batch-sizes 1 32 64] [--images 2048] [--json PATH]

The last line reports the peak memory of a training epoch at batch 64
(tracemalloc) and the cnnkit process's peak resident size.
"""
import sys

from cnnkit import cli


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    return cli.main(["bench", "--only", "lenet", "--repeats", "5", *argv])


if __name__ == "__main__":
    sys.exit(main())
