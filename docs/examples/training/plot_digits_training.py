"""
Train a CNN on the shipped digits
=================================

The 8x8 handwritten digits ship inside the package, so this runs offline:
load them, hold out a stratified fifth for testing, build a small CNN,
train it with validation data and early stopping, and plot the training
curves that :meth:`~cnnkit.Sequential.fit` returns in its
:class:`~cnnkit.callbacks.History`.
"""
import matplotlib.pyplot as plt

import cnnkit
from cnnkit import callbacks, datasets, layers, optim

x, y = datasets.load_digits()
x_train, x_test, y_train, y_test = datasets.train_test_split(
    x, y, test_size=0.2, seed=0)
print("train:", x_train.shape, "test:", x_test.shape)

# %%
# Two blocks of 3x3 convolution, ReLU and 2x2 max pooling, then a dense
# layer with one output per class.  ``input_shape`` is the shape of one
# sample; the model infers every layer's shapes from it.
model = cnnkit.Sequential([
    layers.Conv2D(16, 3, padding="same"), layers.ReLU(), layers.MaxPool2D(2),
    layers.Conv2D(32, 3, padding="same"), layers.ReLU(), layers.MaxPool2D(2),
    layers.Flatten(), layers.Dense(10),
], input_shape=(1, 8, 8), seed=0)
model.summary()

# %%
# Train for at most 30 epochs; :class:`~cnnkit.callbacks.EarlyStopping`
# stops when the validation loss has not improved for 4 epochs and puts the
# best weights back.  (The test set doubles as validation set here, to keep
# the example short; hold out a separate one when choosing models.)
stop = callbacks.EarlyStopping(patience=4, restore_best_weights=True)
history = model.fit(x_train, y_train, epochs=30, batch_size=32,
                    optimizer=optim.Adam(3e-3),
                    validation_data=(x_test, y_test),
                    callbacks=[stop], verbose=0)
print(f"{len(history.epoch)} epochs, best epoch {stop.best_epoch + 1}")
print("test:", model.evaluate(x_test, y_test))

# %%
# ``history.history`` holds one value per epoch for each key: loss and
# accuracy on the training batches, the same on the validation data, the
# learning rate, the seconds and the images per second.
h = history.history
epochs = [e + 1 for e in history.epoch]
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
ax_loss.plot(epochs, h["loss"], label="training")
ax_loss.plot(epochs, h["val_loss"], label="validation")
ax_loss.set(xlabel="epoch", ylabel="softmax cross-entropy", yscale="log",
            title="loss")
ax_acc.plot(epochs, h["accuracy"], label="training")
ax_acc.plot(epochs, h["val_accuracy"], label="validation")
ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
for ax in (ax_loss, ax_acc):
    ax.axvline(stop.best_epoch + 1, color="0.7", linestyle="--", lw=1)
    ax.legend()
fig.tight_layout()

# %%
# Training speed on the machine that built this page:
print(f"{sum(h['images_per_s']) / len(h['images_per_s']):.0f} images/s, "
      f"{sum(h['seconds']):.2f} s in all, {cnnkit.get_num_threads()} threads")
