"""
Train a residual network on the shipped digits
==============================================

A residual block adds its input to what two convolutions make of it, so
the block learns a correction to the identity (He et al., 2016).  The graph
branches and merges, which a :class:`~cnnkit.Sequential` chain cannot say:
it is written with the functional API -- :func:`cnnkit.Input`, layers
called on tensors, :class:`~cnnkit.layers.Add` -- and trained like any
model.  The plot shows its training curves beside those of a plain chain
of the same layers without the skip connection.
"""
import matplotlib.pyplot as plt

import cnnkit
from cnnkit import datasets, layers as L, optim

x, y = datasets.load_digits()
x_train, x_test, y_train, y_test = datasets.train_test_split(
    x, y, test_size=0.2, seed=0)


# %%
# The network: a 3x3 convolution, a residual block, pooling, a second
# convolution and a dense head.  The block's convolution starts at zero,
# so the block starts as the identity and learns a correction to it (the
# "zero-init" of ResNet training recipes; Goyal et al., 2017).
# ``skip=False`` leaves out the addition, which makes the same layers a
# plain chain.
def network(skip, seed=0):
    inp = cnnkit.Input((1, 8, 8))
    h = L.ReLU()(L.Conv2D(16, 3, padding=1)(inp))
    branch = L.Conv2D(16, 3, padding=1)
    r = branch(h)
    h = L.ReLU()(L.Add()([h, r]) if skip else r)
    h = L.MaxPool2D(2)(h)
    h = L.MaxPool2D(2)(L.ReLU()(L.Conv2D(32, 3, padding=1)(h)))
    out = L.Dense(10)(L.ReLU()(L.Dense(64)(L.Flatten()(h))))
    model = cnnkit.Model(inp, out, seed=seed)
    if skip:
        branch.params["weight"][...] = 0.0
    return model


model = network(skip=True)
model.summary()

# %%
# Train both for 30 epochs with the test set as validation data, the
# settings of ``cnnkit train``.
histories = {}
for skip in (True, False):
    net = model if skip else network(skip=False)
    histories["residual" if skip else "plain"] = net.fit(
        x_train, y_train, epochs=30, batch_size=32, optimizer=optim.Adam(2e-3),
        validation_data=(x_test, y_test), verbose=0)
print("residual network, test:", model.evaluate(x_test, y_test))

# %%
# The curves: the loss on the training batches and the accuracy on the
# held-out images, per epoch.
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
for name, history in histories.items():
    h = history.history
    epochs = [e + 1 for e in history.epoch]
    ax_loss.plot(epochs, h["loss"], label=name)
    ax_acc.plot(epochs, h["val_accuracy"], label=name)
ax_loss.set(xlabel="epoch", ylabel="softmax cross-entropy", yscale="log",
            title="training loss")
ax_acc.set(xlabel="epoch", ylabel="accuracy", title="held-out accuracy",
           ylim=(0.9, 1.0))
ax_acc.legend()
fig.tight_layout()
plt.show()
