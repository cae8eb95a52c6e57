"""
Threads, determinism and speed
==============================

cnnkit's kernels split their work over OpenMP threads along axes that own
their outputs, and add partial sums in a fixed order, so every result has
the same bits whatever the thread count.  This example checks that for the
forward and backward pass of a convolution and for a whole training run,
times the kernels with each thread count, and compares them with the
pure-NumPy reference.  The timings are those of the machine that built this
page.
"""
import os
import time

import matplotlib.pyplot as plt
import numpy as np

import cnnkit
from cnnkit import datasets, layers
from cnnkit import functional as F
from cnnkit import reference as R

print("default threads:", cnnkit.get_num_threads())
counts = sorted({1, 2, cnnkit.get_num_threads(), os.cpu_count() or 1})

rng = np.random.default_rng(0)
x = rng.standard_normal((32, 16, 28, 28), dtype=np.float32)
w = rng.standard_normal((32, 16, 3, 3), dtype=np.float32)
g = rng.standard_normal((32, 32, 28, 28), dtype=np.float32)


def best_time(f, repeats=5):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


# %%
# The same convolution with every thread count: identical bits, and the
# time of each.
results, seconds = {}, {}
for n in counts:
    cnnkit.set_num_threads(n)
    results[n] = (F.conv2d(x, w, padding=1),
                  *F.conv2d_backward(g, x, w, padding=1))
    seconds[n] = (best_time(lambda: F.conv2d(x, w, padding=1)),
                  best_time(lambda: F.conv2d_backward(g, x, w, padding=1)))
    same = all(np.array_equal(a, b) for a, b in zip(results[n],
                                                   results[counts[0]]))
    print(f"{n} thread(s): forward {seconds[n][0] * 1e3:6.2f} ms, "
          f"backward {seconds[n][1] * 1e3:6.2f} ms, "
          f"bit-identical to 1 thread: {same}")
    assert same

fig, ax = plt.subplots(figsize=(6, 3))
width = 0.35
pos = np.arange(len(counts))
ax.bar(pos - width / 2, [seconds[n][0] * 1e3 for n in counts], width,
       label="forward")
ax.bar(pos + width / 2, [seconds[n][1] * 1e3 for n in counts], width,
       label="backward")
ax.set(xticks=pos, xticklabels=[str(n) for n in counts], xlabel="threads",
       ylabel="milliseconds",
       title="conv2d (32, 16, 28, 28) * (32, 16, 3, 3), float32")
ax.legend()
fig.tight_layout()

# %%
# A whole training run: the same seed gives the same weights with one
# thread and with all of them.
xd, yd = datasets.load_digits()
weights = {}
for n in (1, counts[-1]):
    cnnkit.set_num_threads(n)
    model = cnnkit.Sequential([
        layers.Conv2D(8, 3, padding="same"), layers.ReLU(),
        layers.MaxPool2D(2), layers.Flatten(), layers.Dense(10),
    ], input_shape=(1, 8, 8), seed=0)
    model.fit(xd, yd, epochs=2, batch_size=64, verbose=0)
    weights[n] = model.get_weights()
print("same weights after training:",
      all(np.array_equal(a, b) for a, b in zip(*weights.values())))

# %%
# Against the reference: the pure-NumPy twin computes the same values
# (within float32 rounding) and is written for reading, not speed.
cnnkit.set_num_threads(0)                  # back to the default
small = x[:8]
t_kernel = best_time(lambda: F.conv2d(small, w, padding=1))
t_ref = best_time(lambda: R.conv2d(small, w, padding=1), repeats=2)
diff = np.abs(F.conv2d(small, w, padding=1) -
              R.conv2d(small, w, padding=1)).max()
print(f"cnnkit.functional.conv2d {t_kernel * 1e3:.2f} ms, "
      f"cnnkit.reference.conv2d {t_ref * 1e3:.2f} ms "
      f"({t_ref / t_kernel:.0f}x), max |difference| {diff:.1e}")
