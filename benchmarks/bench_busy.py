"""LeNet-5 training on an idle and on a busy machine, by thread setting.

Users train beside a browser, an IDE or a test suite.  This benchmark
starts its own competitor -- one CPU-bound process (a Python busy loop,
bounded in time) -- and times a LeNet-5 training epoch (2048 synthetic
1x28x28 images, batch 64, SGD with momentum) with 1 thread, with all
cores, and with cnnkit's default, each in a fresh process, with and
without the competitor, in interleaved rounds.  It prints the median epoch
time of each setting and the ratios that matter:

* busy: the default's speed against the best fixed thread count under
  load (1.0 = as good as the best choice in hindsight);
* idle: the default's speed against all cores, and all cores against one
  thread (the parallel speed-up).

``--env NAME=VALUE`` adds a setting run with that environment, e.g.
``--env OMP_WAIT_POLICY=passive`` for GNU OpenMP's threads that sleep at
once (see ``docs/user_guide/threads.rst``).

    python benchmarks/bench_busy.py [--repeats 9] [--images 4096]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

WORKER = r"""
import json, sys, time
import numpy as np
import cnnkit
from cnnkit import models, optim
from cnnkit.datasets import make_synthetic
threads, images, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if threads:
    cnnkit.set_num_threads(threads)
x, y = make_synthetic(images, (1, 28, 28), 10, seed=0)
model = models.lenet5(seed=0)
opt = optim.SGD(0.01, momentum=0.9)
model.fit(x[:256], y[:256], epochs=1, batch_size=batch, optimizer=opt,
          verbose=0)
t0 = time.perf_counter()
model.fit(x, y, epochs=1, batch_size=batch, optimizer=opt, verbose=0)
print(json.dumps({"seconds": time.perf_counter() - t0,
                  "threads": cnnkit.get_num_threads()}))
"""

SPIN = "import time\nend = time.time() + {s}\nwhile time.time() < end:\n    pass\n"


def run_worker(threads, images, batch, env):
    full = dict(os.environ, **env)
    out = subprocess.run([sys.executable, "-c", WORKER, str(threads),
                          str(images), str(batch)], env=full, check=True,
                         capture_output=True, text=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--env", action="append", default=[],
                   metavar="NAME=VALUE")
    args = p.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    settings = [("1 thread", 1, {}), (f"{cores} threads", cores, {}),
                ("default", 0, {})]
    for item in args.env:
        name, _, value = item.partition("=")
        settings.append((f"default, {item}", 0, {name: value}))
    times = {(label, busy): [] for label, _, _ in settings
             for busy in (False, True)}
    for r in range(args.repeats):
        for busy in (False, True):
            hog = None
            if busy:
                hog = subprocess.Popen([sys.executable, "-c",
                                        SPIN.format(s=600)])
                time.sleep(0.3)
            try:
                order = settings[r % len(settings):] + \
                    settings[:r % len(settings)]
                for label, threads, env in order:
                    times[label, busy].append(run_worker(
                        threads, args.images, args.batch_size, env))
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
            time.sleep(0.5)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"LeNet-5, one epoch of {args.images} images at batch "
          f"{args.batch_size}; {cores} cores; median of {args.repeats}; "
          f"busy = one CPU-bound process beside it")
    print(f"{'setting':34s} {'idle (s)':>10s} {'busy (s)':>10s}")
    for label, _, _ in settings:
        print(f"{label:34s} {med[label, False]:10.3f} {med[label, True]:10.3f}")
    best_busy = min(med[f"{cores} threads", True], med["1 thread", True])
    print(f"busy: default / best fixed thread count      "
          f"{best_busy / med['default', True]:.2f}x")
    print(f"idle: default / {cores} threads                      "
          f"{med[f'{cores} threads', False] / med['default', False]:.2f}x")
    print(f"idle: {cores} threads / 1 thread (speed-up)          "
          f"{med['1 thread', False] / med[f'{cores} threads', False]:.2f}x")
    for label, _, env in settings[3:]:
        print(f"busy: {label} / best fixed   "
              f"{best_busy / med[label, True]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
