"""
Learning-rate schedules
=======================

A schedule sets the learning rate of every epoch from the optimizer's base
rate.  cnnkit has PyTorch's :class:`~cnnkit.optim.StepLR` and
:class:`~cnnkit.optim.CosineAnnealingLR` in closed form; the trainer tells
the optimizer the epoch before each one, and the rate used is logged in the
history as ``lr``.
"""
import matplotlib.pyplot as plt

import cnnkit
from cnnkit import datasets, layers, optim

# %%
# A schedule is a function of the base rate and the epoch:
step = optim.StepLR(step_size=5, gamma=0.5)
cosine = optim.CosineAnnealingLR(t_max=20, eta_min=1e-4)
epochs = range(20)
fig, ax = plt.subplots(figsize=(6, 3))
ax.step(epochs, [step(0.1, e) for e in epochs], where="post",
        label=repr(step))
ax.plot(epochs, [cosine(0.1, e) for e in epochs], "o-", ms=3,
        label=repr(cosine))
ax.set(xlabel="epoch", ylabel="learning rate", title="base rate 0.1")
ax.legend(fontsize=8)
fig.tight_layout()

# %%
# Train the same network with SGD and momentum, once at a constant rate
# and once with cosine annealing from the same base rate.
x, y = datasets.load_digits()
x_train, x_test, y_train, y_test = datasets.train_test_split(
    x, y, test_size=0.2, seed=0)


def train(schedule):
    model = cnnkit.Sequential([
        layers.Conv2D(16, 3, padding="same"), layers.ReLU(),
        layers.MaxPool2D(2), layers.Flatten(), layers.Dense(10),
    ], input_shape=(1, 8, 8), seed=0)
    opt = optim.SGD(0.05, momentum=0.9, schedule=schedule)
    history = model.fit(x_train, y_train, epochs=20, batch_size=32,
                        optimizer=opt, validation_data=(x_test, y_test),
                        verbose=0)
    return model, history


constant_model, constant = train(None)
cosine_model, annealed = train(optim.CosineAnnealingLR(t_max=20))
for name, model in (("constant", constant_model), ("cosine", cosine_model)):
    print(f"{name:>8}: {model.evaluate(x_test, y_test)}")

fig, (ax_lr, ax_loss) = plt.subplots(1, 2, figsize=(9, 3.5))
for name, history in (("constant", constant), ("cosine", annealed)):
    e = [i + 1 for i in history.epoch]
    ax_lr.plot(e, history.history["lr"], label=name)
    ax_loss.plot(e, history.history["loss"], label=f"{name}, training")
    ax_loss.plot(e, history.history["val_loss"], "--",
                 label=f"{name}, validation")
ax_lr.set(xlabel="epoch", ylabel="learning rate", title="history['lr']")
ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
ax_lr.legend()
ax_loss.legend(fontsize=8)
fig.tight_layout()
