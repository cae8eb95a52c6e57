"""What the fixed shards cost a training step, network by network.

``fit`` computes each batch's gradient in 8 fixed shards added in a fixed
tree (``DataParallel(shards=8)``, the default), so that a run gives the
same bits on any number of MPI ranks.  This benchmark times one epoch of
each network with the default shards and with one shard
(``DataParallel(shards=1)``, the whole batch at once), in interleaved
rounds -- the last epoch of three in one ``fit``, so that what a fit sets
up once is left out -- and prints the medians and the cost of the shards
in per cent of the one-shard epoch.

The networks: the medium network (:func:`cnnkit.bench.medium_cnnkit`:
conv 5x5 32 - pool - conv 5x5 64 - pool - dense 1024 - dropout - dense 10
on 28x28, 3.3M parameters, most of them in one dense layer), LeNet-5 and
a ResNet-8 on 32x32 RGB, all at batch 64, synthetic data, Adam.

    python benchmarks/bench_shards.py [--repeats 7] [--threads 2]
"""
import argparse
import statistics
import sys

import cnnkit
from cnnkit import models, optim
from cnnkit.bench import medium_cnnkit as medium
from cnnkit.datasets import make_synthetic
from cnnkit.distributed import DataParallel


#: (name, model factory, input shape, images per epoch)
NETWORKS = [
    ("medium (dense 3136x1024)", medium, (1, 28, 28), 1024),
    ("LeNet-5", lambda: models.lenet5(seed=0), (1, 28, 28), 2048),
    ("ResNet-8", lambda: models.resnet(8, seed=0), (3, 32, 32), 512),
]


def epoch_seconds(make, x, y, batch, shards):
    """The seconds of a steady epoch: the last of three in one ``fit``
    (the first pays for the buffers a fit sets up once)."""
    model = make()
    history = model.fit(x, y, epochs=3, batch_size=batch, verbose=0,
                        optimizer=optim.Adam(1e-3),
                        distributed=DataParallel(shards=shards))
    return history.history["seconds"][-1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=0,
                   help="threads (0: cnnkit's default)")
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)
    if args.threads:
        cnnkit.set_num_threads(args.threads)
    print(f"cnnkit {cnnkit.__version__}, {cnnkit.get_num_threads()} "
          f"threads, batch {args.batch_size}, median of {args.repeats} "
          f"interleaved epochs")
    print(f"{'network':28s} {'1 shard (s)':>12s} {'8 shards (s)':>13s} "
          f"{'cost':>7s}")
    for name, make, shape, n in NETWORKS:
        x, y = make_synthetic(n, shape, 10, seed=0)
        times = {1: [], 8: []}
        for r in range(args.repeats):
            for shards in ((1, 8) if r % 2 == 0 else (8, 1)):
                times[shards].append(epoch_seconds(make, x, y,
                                                   args.batch_size, shards))
        one, eight = (statistics.median(times[s]) for s in (1, 8))
        print(f"{name:28s} {one:12.3f} {eight:13.3f} "
              f"{100 * (eight / one - 1):+6.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
