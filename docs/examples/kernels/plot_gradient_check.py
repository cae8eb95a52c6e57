r"""
Checking gradients with finite differences
==========================================

A backward pass can be checked without knowing its formula: nudge one
parameter by :math:`\pm\varepsilon`, recompute the loss, and compare the
slope with the gradient,

.. math::

    \frac{\partial L}{\partial \theta_i} \approx
    \frac{L(\theta + \varepsilon e_i) - L(\theta - \varepsilon e_i)}
         {2 \varepsilon},

whose error is :math:`O(\varepsilon^2)`.  In float64 with
:math:`\varepsilon = 10^{-6}` the two agree to about 8 digits.  cnnkit's
test suite does this for every kernel; here it is done for every parameter
array of a whole model with stride, padding, dilation, max and average
pooling, through :meth:`~cnnkit.Sequential.forward` and
:meth:`~cnnkit.Sequential.backward`.
"""
import matplotlib.pyplot as plt
import numpy as np

import cnnkit
from cnnkit import functional as F
from cnnkit import layers

rng = np.random.default_rng(0)
x = rng.standard_normal((4, 2, 9, 9))
y = rng.integers(0, 5, 4)

# float64 parameters: finite differences need the precision
model = cnnkit.Sequential([
    layers.Conv2D(4, 3, stride=2, padding=1), layers.ReLU(),
    layers.Conv2D(6, 3, padding="same", dilation=2), layers.ReLU(),
    layers.MaxPool2D(2, stride=1), layers.AvgPool2D(2),
    layers.Flatten(), layers.Dense(5),
], input_shape=(2, 9, 9), seed=0, dtype="float64")
model.summary()


def loss_of_params():
    loss, _ = F.softmax_cross_entropy(model.forward(x), y)
    return float(loss)


# %%
# The analytic gradients: one forward pass in training mode, the loss's
# gradient with respect to the logits, one backward pass.
logits = model.forward(x, training=True)
loss, grad_logits = F.softmax_cross_entropy(logits, y)
model.backward(grad_logits)
analytic = {name: g.copy() for (name, _), g in
            zip(model.named_parameters(), model.gradients())}
print(f"loss {loss:.6f}")

# %%
# Central differences on 20 random entries of every parameter array:
eps = 1e-6
errors = {}
for name, p in model.named_parameters():
    errs = []
    for flat in rng.choice(p.size, size=min(20, p.size), replace=False):
        i = np.unravel_index(flat, p.shape)
        old = p[i]
        p[i] = old + eps
        up = loss_of_params()
        p[i] = old - eps
        down = loss_of_params()
        p[i] = old
        numeric = (up - down) / (2 * eps)
        scale = max(abs(numeric), abs(analytic[name][i]), 1e-8)
        errs.append(abs(numeric - analytic[name][i]) / scale)
    errors[name] = np.array(errs)
    print(f"{name:>9}: largest relative error {errors[name].max():.1e}")
    assert errors[name].max() < 1e-5

fig, ax = plt.subplots(figsize=(6, 3))
for k, (name, errs) in enumerate(errors.items()):
    ax.semilogy(np.full(errs.size, k), np.maximum(errs, 1e-16), "o",
                alpha=0.6)
ax.set(xticks=range(len(errors)), xticklabels=list(errors),
       ylabel="relative error", title="finite differences vs backward pass")
ax.tick_params(axis="x", labelsize=8)
fig.tight_layout()

# %%
# The same check for the gradient with respect to the input, which a
# model's first layer returns from :meth:`~cnnkit.Sequential.backward`:
model.forward(x, training=True)
grad_x = model.backward(grad_logits)
i = (1, 0, 4, 5)
old = x[i]
x[i] = old + eps
up = loss_of_params()
x[i] = old - eps
down = loss_of_params()
x[i] = old
print(f"dL/dx{list(i)}: backward {grad_x[i]:.8f}, "
      f"finite difference {(up - down) / (2 * eps):.8f}")
