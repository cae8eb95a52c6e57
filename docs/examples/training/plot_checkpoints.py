"""
Checkpoints, saving and resuming
================================

:class:`~cnnkit.callbacks.ModelCheckpoint` saves the model during training;
a saved file holds the architecture, the weights and the optimizer's state,
so :func:`cnnkit.load_model` gives back a model that predicts the same and
can go on training where it stopped.  The file is a safetensors file: an
8-byte header length, a JSON header, then the raw tensor bytes.
"""
import json
import os
import struct
import tempfile

import matplotlib.pyplot as plt
import numpy as np

import cnnkit
from cnnkit import callbacks, datasets, layers, optim

x, y = datasets.load_digits()
x_train, x_test, y_train, y_test = datasets.train_test_split(
    x, y, test_size=0.2, seed=0)
folder = tempfile.mkdtemp()

model = cnnkit.Sequential([
    layers.Conv2D(8, 3, padding="same"), layers.ReLU(), layers.MaxPool2D(2),
    layers.Flatten(), layers.Dense(10),
], input_shape=(1, 8, 8), seed=0)

# %%
# Train 8 epochs, saving a checkpoint whenever the validation loss improves.
# The path may use ``{epoch}`` and any key of the epoch's logs.
checkpoint = callbacks.ModelCheckpoint(
    os.path.join(folder, "digits-{epoch:02d}-{val_loss:.3f}.cnnkit"),
    save_best_only=True)
first = model.fit(x_train, y_train, epochs=8, batch_size=32,
                  optimizer=optim.Adam(3e-3),
                  validation_data=(x_test, y_test),
                  callbacks=[checkpoint], verbose=0)
for path in checkpoint.saved:
    print(os.path.basename(path), os.path.getsize(path), "bytes")

# %%
# What is inside: the header names every tensor (PyTorch's ``state_dict``
# names, then the optimizer's state) and keeps the architecture as JSON in
# its ``__metadata__``.  No pickle anywhere.
last = checkpoint.saved[-1]
with open(last, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
meta = header.pop("__metadata__")
for name, entry in header.items():
    print(f"{name:<22} {entry['dtype']} {entry['shape']}")
print({k: v for k, v in meta.items() if k != "config"})
print(json.dumps(json.loads(meta["config"]), indent=1)[:300], "...")

# %%
# Load the best checkpoint and go on for 8 more epochs.  ``initial_epoch``
# numbers the epochs (and the learning-rate schedule) from where the first
# run stopped; the optimizer's moment estimates come from the file.
resumed = cnnkit.load_model(last)
print("loaded:", type(resumed.optimizer).__name__,
      resumed.optimizer.iterations, "steps taken")
second = resumed.fit(x_train, y_train, initial_epoch=8, epochs=16,
                     batch_size=32, validation_data=(x_test, y_test),
                     verbose=0)
print("after resuming:", resumed.evaluate(x_test, y_test))

fig, ax = plt.subplots(figsize=(6, 3.5))
for label, h in (("first run", first), ("resumed", second)):
    e = [i + 1 for i in h.epoch]
    ax.plot(e, h.history["loss"], label=f"{label}, training")
    ax.plot(e, h.history["val_loss"], "--", label=f"{label}, validation")
ax.set(xlabel="epoch", ylabel="loss", yscale="log",
       title="training resumed from a checkpoint")
ax.legend(fontsize=8)
fig.tight_layout()

# %%
# Saving is atomic: the file is written under a temporary name, flushed to
# disk and renamed over the target, so a crash never leaves half a model.
resumed.save(os.path.join(folder, "final.cnnkit"))
again = cnnkit.load_model(os.path.join(folder, "final.cnnkit"))
assert all(np.array_equal(a, b) for a, b in
           zip(again.get_weights(), resumed.get_weights()))
assert (again.predict(x_test) == resumed.predict(x_test)).all()
print(sorted(os.listdir(folder)))
