"""
Confusion matrix and misclassified digits
=========================================

Where does a trained model err?  The confusion matrix counts, for every
true digit, what the model predicted; the misclassified test images show
what the errors look like, with the model's probability for its answer.
"""
import matplotlib.pyplot as plt
import numpy as np

import cnnkit
from cnnkit import datasets, layers, optim

x, y = datasets.load_digits()
x_train, x_test, y_train, y_test = datasets.train_test_split(
    x, y, test_size=0.2, seed=0)

model = cnnkit.Sequential([
    layers.Conv2D(16, 3, padding="same"), layers.ReLU(), layers.MaxPool2D(2),
    layers.Flatten(), layers.Dense(10),
], input_shape=(1, 8, 8), seed=0)
model.fit(x_train, y_train, epochs=10, batch_size=32,
          optimizer=optim.Adam(1e-2), verbose=0)

# %%
# :meth:`~cnnkit.Sequential.predict` gives class indices,
# :meth:`~cnnkit.Sequential.predict_proba` the softmax probabilities.
proba = model.predict_proba(x_test)
pred = model.predict(x_test)
assert (pred == proba.argmax(axis=1)).all()
print(f"test accuracy: {(pred == y_test).mean():.4f} "
      f"({(pred != y_test).sum()} errors in {len(y_test)} images)")

# %%
# The confusion matrix: row ``t``, column ``p`` counts the test images of
# digit ``t`` predicted as ``p``; the diagonal holds the correct ones.
confusion = np.zeros((10, 10), dtype=int)
np.add.at(confusion, (y_test, pred), 1)

fig, ax = plt.subplots(figsize=(5, 4.5))
ax.imshow(confusion, cmap="Blues")
for t in range(10):
    for p in range(10):
        if confusion[t, p]:
            ax.text(p, t, confusion[t, p], ha="center", va="center",
                    color="white" if confusion[t, p] > 20 else "black",
                    fontsize=8)
ax.set(xticks=range(10), yticks=range(10), xlabel="predicted digit",
       ylabel="true digit", title="confusion matrix on the test set")
fig.tight_layout()

# %%
# The misclassified images, each with its true digit, the prediction and
# the probability the model gave it:
wrong = np.flatnonzero(pred != y_test)
n = min(len(wrong), 12)
fig, axes = plt.subplots(2, 6, figsize=(8, 3.2))
for ax in axes.flat:
    ax.set_axis_off()
for ax, i in zip(axes.flat, wrong[:n]):
    ax.imshow(x_test[i, 0], cmap="gray_r")
    ax.set_title(f"{y_test[i]} as {pred[i]} ({proba[i, pred[i]]:.0%})",
                 fontsize=8)
fig.suptitle("misclassified test digits: true as predicted (probability)")
fig.tight_layout()
