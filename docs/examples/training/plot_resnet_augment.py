"""
Train a ResNet with batch norm and data augmentation
====================================================

:func:`cnnkit.models.resnet` builds the CIFAR ResNets of He et al. (2016):
residual blocks of 3x3 convolutions, each followed by batch normalisation
(:class:`~cnnkit.layers.BatchNorm2D`).  Here a small one (depth 8, 8
channels in its first stage) learns the shipped 8x8 digits twice: on the
images as they are, and on images that
:mod:`cnnkit.transforms` shifts by up to one pixel each time they are
seen.  The plot shows both runs' training loss and held-out accuracy.

The same recipe, scaled up, trains ResNet-20 on Fashion-MNIST (see
:doc:`/user_guide/zoo`)::

    cnnkit train --model resnet20 --data /usr/share/datasets/fashion-mnist \\
        --augment crop:2,flip --optimizer adamw --schedule cosine ...
"""
import matplotlib.pyplot as plt

from cnnkit import datasets, models, optim, transforms

x, y = datasets.load_digits()
x_train, x_test, y_train, y_test = datasets.train_test_split(
    x, y, test_size=0.25, seed=0)

# %%
# The network: 8 layers deep, 20k parameters.  Batch normalisation keeps
# running statistics (buffers, not parameters): the summary counts them as
# non-trainable.
net = models.resnet(8, num_classes=10, input_shape=(1, 8, 8), width=8,
                    seed=0)
net.summary()

# %%
# Augmentation: pad each image by one pixel and crop it back at a random
# offset.  The draws depend on the seed, the epoch and the image's index
# only, so the run gives the same weights for any thread count.  A digit
# flipped left to right is another symbol, so there is no flip here.
augment = transforms.RandomCrop(None, padding=1)
histories = {}
for name, aug in (("augmented", augment), ("plain", None)):
    model = net if aug is not None else models.resnet(
        8, num_classes=10, input_shape=(1, 8, 8), width=8, seed=0)
    histories[name] = model.fit(
        x_train, y_train, epochs=25, batch_size=32, augment=aug,
        optimizer=optim.AdamW(3e-3, schedule=optim.CosineAnnealingLR(25)),
        validation_data=(x_test, y_test), verbose=0)
    print(f"{name:9s} test:", model.evaluate(x_test, y_test))

# %%
# The curves: the loss on the (augmented) training batches, and the
# accuracy on the held-out images, which are never augmented.
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
for name, history in histories.items():
    h = history.history
    epochs = [e + 1 for e in history.epoch]
    ax_loss.plot(epochs, h["loss"], label=name)
    ax_acc.plot(epochs, h["val_accuracy"], label=name)
ax_loss.set(xlabel="epoch", ylabel="softmax cross-entropy", yscale="log",
            title="training loss")
ax_acc.set(xlabel="epoch", ylabel="accuracy", title="held-out accuracy",
           ylim=(0.8, 1.0))
ax_acc.legend()
fig.tight_layout()
plt.show()
