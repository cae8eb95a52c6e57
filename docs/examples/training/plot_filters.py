"""
What the first layer learns
===========================

The first convolution of a trained network holds small filters that respond
to strokes: edges and bars at different angles.  This trains a small CNN on
the digits, plots its 16 learned 3x3 filters, and then the 16 feature maps
they produce from one test digit (after ReLU).
"""
import matplotlib.pyplot as plt
import numpy as np

import cnnkit
from cnnkit import datasets, layers, optim
from cnnkit import functional as F

x, y = datasets.load_digits()
x_train, x_test, y_train, y_test = datasets.train_test_split(
    x, y, test_size=0.2, seed=0)

model = cnnkit.Sequential([
    layers.Conv2D(16, 3, padding="same"), layers.ReLU(), layers.MaxPool2D(2),
    layers.Conv2D(32, 3, padding="same"), layers.ReLU(), layers.MaxPool2D(2),
    layers.Flatten(), layers.Dense(10),
], input_shape=(1, 8, 8), seed=0)
model.fit(x_train, y_train, epochs=15, batch_size=32,
          optimizer=optim.Adam(3e-3), verbose=0)
print("test accuracy:", model.evaluate(x_test, y_test)["accuracy"])

# %%
# The first layer's weight has PyTorch's layout ``(K, C, R, S)``: 16
# filters of one channel, 3x3 each.  Blue is negative, red positive.
weight = model.layers[0].params["weight"]
print("first-layer weight:", weight.shape, weight.dtype)
limit = np.abs(weight).max()
fig, axes = plt.subplots(2, 8, figsize=(8, 2.4))
for k, ax in enumerate(axes.flat):
    ax.imshow(weight[k, 0], cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_title(f"filter {k}", fontsize=8)
    ax.set_axis_off()
fig.suptitle("learned 3x3 filters of the first Conv2D layer")
fig.tight_layout()

# %%
# Feed one test digit through the first two layers, convolution and ReLU,
# with the functional API and the layer's own parameters:
digit = x_test[:1]
maps = F.relu(F.conv2d(digit, weight, model.layers[0].params["bias"],
                       padding="same"))
print("feature maps:", maps.shape)
assert np.allclose(maps, model.layers[1].forward(model.layers[0].forward(digit)))

fig, axes = plt.subplots(2, 9, figsize=(9, 2.9))
axes[0, 0].imshow(digit[0, 0], cmap="gray_r")
axes[0, 0].set_title(f"digit {y_test[0]}", fontsize=8)
axes[1, 0].set_visible(False)
for k in range(16):
    ax = axes[k % 2, 1 + k // 2]
    ax.imshow(maps[0, k], cmap="magma")
    ax.set_title(f"map {k}", fontsize=8)
for ax in axes.flat:
    ax.set_axis_off()
fig.suptitle("the digit and its 16 feature maps after Conv2D and ReLU")
fig.tight_layout()
