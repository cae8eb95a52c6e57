"""
CNNs step by step
=================

The teaching example cnnkit grew from: a 3x3 image, a 2x2 kernel, ReLU, max
pooling and a dense layer, then softmax over C classes, the loss, and the
backward pass of each step.  Every step is computed three ways: by hand in
NumPy, by the readable reference :mod:`cnnkit.reference` (its code is quoted
at each step) and by the compiled kernels :mod:`cnnkit.functional`; the
script checks that they agree.

The formulas here are the single-image, single-channel case; :doc:`/math`
gives them with batches, channels, stride, padding and dilation.  Run it as
a script with ``python docs/examples/seed_walkthrough.py``.
"""
import numpy as np

import cnnkit
from cnnkit import functional as F
from cnnkit import reference as ref

np.set_printoptions(precision=4, suppress=True)

# %%
# 1. Convolution
# --------------
#
# A convolution slides the kernel :math:`k` (R x S) over the image :math:`x`
# (H x W); each output is the sum of the element-wise product of one window
# with the kernel:
#
# .. math::
#
#     y_{i,j} = \sum_{r=0}^{R-1} \sum_{s=0}^{S-1} x_{i+r,\,j+s}\; k_{r,s},
#     \qquad 0 \le i \le H - R,\quad 0 \le j \le W - S.
#
# The output is :math:`(H - R + 1) \times (W - S + 1)`, here 2 x 2.  The
# kernel is not flipped (strictly, this is a cross-correlation), as in
# PyTorch and every other deep-learning library.  By hand:
image = np.array([[1, 2, 3],
                  [4, 5, 6],
                  [7, 8, 9]], dtype=float)
kernel = np.array([[1, 0],
                   [0, -1]], dtype=float)

by_hand = np.zeros((2, 2))
for i in range(2):
    for j in range(2):
        by_hand[i, j] = np.sum(image[i:i + 2, j:j + 2] * kernel)
print("convolution, by hand:\n", by_hand)

# %%
# Each window gives :math:`x_{i,j} - x_{i+1,j+1} = -4`.  The reference,
# :func:`cnnkit.reference.conv2d`, does the same for a batch of images with
# channels, stride, padding and dilation: one output position at a time, the
# window of every image times every filter, summed over channels and taps:
#
# .. literalinclude:: /../python/cnnkit/reference.py
#    :pyobject: conv2d
#    :start-at: x = np.asarray(x)
#    :dedent: 4
#    :caption: the body of cnnkit.reference.conv2d, after its docstring
#
# The compiled kernel gives the same numbers.  A 2-D image with a 2-D kernel
# is taken as one image with one channel:
feature_map = F.conv2d(image, kernel)
print("convolution, cnnkit.functional.conv2d:\n", feature_map)
assert np.array_equal(feature_map, by_hand)
assert np.array_equal(ref.conv2d(image, kernel), by_hand)

# %%
# 2. ReLU
# -------
#
# The rectified linear unit keeps positive values and zeroes the rest,
#
# .. math:: a = \max(0, y),
#
# which is what makes a stack of layers more than one linear map.
#
# .. literalinclude:: /../python/cnnkit/reference.py
#    :pyobject: relu
#    :start-at: x = np.asarray(x)
#    :dedent: 4
#    :caption: the body of cnnkit.reference.relu, after its docstring
activated = F.relu(feature_map)
print("ReLU:\n", activated)
assert np.array_equal(activated, np.maximum(0, by_hand))

# %%
# Every value of the feature map is negative, so nothing passes.
#
# 3. Max pooling
# --------------
#
# Pooling shrinks the feature map: each output is the largest value of its
# window, and cnnkit also returns where it was (the flat index
# :math:`h W + w` in the input plane), which the backward pass needs:
#
# .. math:: m = \max_{0 \le r < 2,\ 0 \le s < 2} y_{r,s}
#
# Here one 2x2 window covers the whole feature map.  All four values are -4;
# a tie goes to the first maximum in row-major order, index 0.
#
# .. literalinclude:: /../python/cnnkit/reference.py
#    :pyobject: max_pool2d
#    :start-at: x = np.asarray(x)
#    :dedent: 4
#    :caption: the body of cnnkit.reference.max_pool2d, after its docstring
pooled, where = F.max_pool2d(feature_map, 2)
print("max pooling of the feature map:", pooled, "at flat index", where)
assert pooled[0, 0] == np.max(feature_map) and where[0, 0] == 0

# %%
# 4. Flatten and a dense layer
# ----------------------------
#
# The activations are flattened in row-major order into a vector
# :math:`x \in \mathbb{R}^4` and a fully connected layer computes
#
# .. math:: y = W x + b = \sum_f W_f\, x_f + b
#
# with :math:`W = (0.5, -0.2, 0.1, 0.4)` and :math:`b = 0.1`.  Since
# :math:`x = 0`, :math:`y = b = 0.1`.
#
# .. literalinclude:: /../python/cnnkit/reference.py
#    :pyobject: dense
#    :start-at: x = np.asarray(x)
#    :dedent: 4
#    :caption: the body of cnnkit.reference.dense, after its docstring
x = activated.flatten()
W = np.array([0.5, -0.2, 0.1, 0.4])
b = 0.1
y = F.dense(x, W, b)
print("dense: y = W x + b =", y)
assert np.isclose(y, np.dot(W, x) + b)

# %%
# 5. Softmax over C classes, and the loss
# ---------------------------------------
#
# A classifier has one output per class: with :math:`C = 3` classes the
# dense layer's weight is a 3 x 4 matrix :math:`W_3` (its first row is the
# :math:`W` above) and its outputs are the class scores (logits)
# :math:`z = W_3 x + b_3`.  Softmax turns scores into probabilities, and the
# cross-entropy loss of a sample whose true class is :math:`t` is minus the
# log of the probability given to that class:
#
# .. math::
#
#     p_c = \frac{e^{z_c}}{\sum_{c'=1}^{C} e^{z_{c'}}}, \qquad
#     L = -\log p_t = \log \sum_{c'} e^{z_{c'}} - z_t.
#
# Both are computed from :math:`z - \max_c z_c`, which changes nothing
# mathematically and keeps every exponential finite.  For a batch of
# :math:`N` samples the loss is the mean over the batch.
#
# .. literalinclude:: /../python/cnnkit/reference.py
#    :pyobject: softmax
#    :start-at: z = np.asarray(logits)
#    :dedent: 4
#    :caption: the body of cnnkit.reference.softmax, after its docstring
#
# .. literalinclude:: /../python/cnnkit/reference.py
#    :pyobject: softmax_cross_entropy
#    :start-at: z = np.asarray(logits)
#    :dedent: 4
#    :caption: the body of cnnkit.reference.softmax_cross_entropy, after its docstring
#
# The whole forward pass, from the kernel to the class scores:
W3 = np.array([[0.5, -0.2, 0.1, 0.4],
               [0.3, 0.8, -0.5, 0.0],
               [-0.1, 0.2, 0.2, 0.1]])
b3 = np.array([0.1, 0.0, -0.1])
label = np.array([0])


def forward(kernel):
    fmap = F.conv2d(image, kernel)
    act = F.relu(fmap)
    scores = F.dense(act.reshape(1, -1), W3, b3)
    return fmap, act, scores


fmap, act, scores = forward(kernel)
loss, grad_scores = F.softmax_cross_entropy(scores, label)
print("scores:", scores, "\nprobabilities:", F.softmax(scores),
      "\nloss for class 0:", loss)
p = np.exp(scores) / np.exp(scores).sum()
assert np.isclose(loss, -np.log(p[0, 0]))

# %%
# 6. The backward pass
# --------------------
#
# Training changes the kernel and the weights to lower the loss, in the
# direction of the negative gradient.  The chain rule computes the gradient
# one step at a time, from the loss back to the kernel; every backward step
# takes the gradient with respect to its output, :math:`g`, and returns the
# gradient with respect to its input (and its parameters).
#
# **Softmax cross-entropy.**  The gradient with respect to the scores is the
# probabilities minus the one-hot true class (divided by :math:`N` for a
# batch mean):
#
# .. math:: \frac{\partial L}{\partial z_c} = p_c - [c = t]
print("dL/dz:", grad_scores, "= p - onehot(t):", p - np.eye(3)[label])
assert np.allclose(grad_scores, p - np.eye(3)[label])

# %%
# **Dense.**  With :math:`z = W_3 x + b_3` and :math:`g = \partial L /
# \partial z`:
#
# .. math::
#
#     \frac{\partial L}{\partial W_3} = g\, x^\top, \qquad
#     \frac{\partial L}{\partial b_3} = g, \qquad
#     \frac{\partial L}{\partial x} = W_3^\top g.
#
# For a batch, :math:`G` holds one row per sample: :math:`\partial L /
# \partial W = G^\top X`, :math:`\partial L / \partial X = G W`.
#
# .. literalinclude:: /../python/cnnkit/reference.py
#    :pyobject: dense_backward
#    :start-at: grad_out = np.asarray(grad_out)
#    :dedent: 4
#    :caption: the body of cnnkit.reference.dense_backward, after its docstring
#
# **ReLU.**  The gradient passes where the input was positive and is zero
# elsewhere (at exactly 0 too, as in PyTorch):
#
# .. math:: \frac{\partial L}{\partial y} = \frac{\partial L}{\partial a}
#    \cdot [y > 0]
#
# .. literalinclude:: /../python/cnnkit/reference.py
#    :pyobject: relu_backward
#    :start-at: grad_out = np.asarray(grad_out)
#    :dedent: 4
#    :caption: the body of cnnkit.reference.relu_backward, after its docstring
#
# **Convolution.**  Each output :math:`y_{i,j}` used the window at
# :math:`(i, j)`, so the kernel's gradient adds up every window weighted by
# the gradient of its output, and each input pixel gets back the kernel
# taps that read it:
#
# .. math::
#
#     \frac{\partial L}{\partial k_{r,s}} = \sum_{i,j} g_{i,j}\, x_{i+r,\,j+s},
#     \qquad
#     \frac{\partial L}{\partial x_{h,w}} = \sum_{i,j} g_{i,j}\, k_{h-i,\,w-j}.
#
# The first is a convolution of the image with the gradient, the second a
# "full" convolution of the gradient with the flipped kernel (:doc:`/math`
# shows both as matrix products).
#
# .. literalinclude:: /../python/cnnkit/reference.py
#    :pyobject: conv2d_backward
#    :start-at: grad_out = np.asarray(grad_out)
#    :dedent: 4
#    :caption: the body of cnnkit.reference.conv2d_backward, after its docstring
#
# Chained together:


def backward(fmap, act, grad_scores, kernel):
    grad_act, grad_W3, grad_b3 = F.dense_backward(
        grad_scores, act.reshape(1, -1), W3)
    grad_fmap = F.relu_backward(grad_act.reshape(fmap.shape), fmap)
    _, grad_kernel, _ = F.conv2d_backward(grad_fmap, image, kernel)
    return grad_W3, grad_b3, grad_kernel


grad_W3, grad_b3, grad_kernel = backward(fmap, act, grad_scores, kernel)
print("dL/dW:\n", grad_W3, "\ndL/db:", grad_b3, "\ndL/dkernel:\n", grad_kernel)
assert not grad_kernel.any()

# %%
# Every feature map value is -4, so ReLU lets no gradient through and the
# kernel would not learn: a "dead" ReLU.  The dense weights get no gradient
# either (their input is 0); only the bias does.
#
# With the kernel negated the feature map is +4 everywhere, ReLU passes it,
# and the gradient reaches the kernel.  The reference agrees, and so does
# the formula above computed by hand:
flipped = -kernel
fmap, act, scores = forward(flipped)
loss, grad_scores = F.softmax_cross_entropy(scores, label)
grad_W3, grad_b3, grad_kernel = backward(fmap, act, grad_scores, flipped)
print("loss:", loss, "\ndL/dkernel:\n", grad_kernel)
ref_grad_fmap = ref.dense_backward(grad_scores, act.reshape(1, -1), W3)[0]
ref_grad_kernel = ref.conv2d_backward(ref_grad_fmap.reshape(1, 1, 2, 2),
                                      image.reshape(1, 1, 3, 3),
                                      flipped.reshape(1, 1, 2, 2))[1]
assert np.allclose(grad_kernel, ref_grad_kernel[0, 0])
g = ref_grad_fmap.reshape(2, 2)          # dL/dy; ReLU passes all of it here
by_hand = np.array([[np.sum(g * image[r:r + 2, s:s + 2]) for s in range(2)]
                    for r in range(2)])
assert np.allclose(grad_kernel, by_hand)

# %%
# **Max pooling.**  Only the element that won each window gets gradient (the
# others did not affect the output); elements that win several overlapping
# windows add up what they get:
#
# .. math:: \frac{\partial L}{\partial y_{h,w}} =
#    \sum_{\text{windows won by } (h, w)} \frac{\partial L}{\partial m}
#
# .. literalinclude:: /../python/cnnkit/reference.py
#    :pyobject: max_pool2d_backward
#    :start-at: grad_out = np.asarray(grad_out)
#    :dedent: 4
#    :caption: the body of cnnkit.reference.max_pool2d_backward, after its docstring
#
# For the pooling of step 3, the gradient 1 goes to index 0, the first of
# the four tied maxima:
grad_pool = F.max_pool2d_backward(np.ones((1, 1)), where, feature_map.shape)
print("max pooling backward:\n", grad_pool)
assert grad_pool[0, 0] == 1 and grad_pool.sum() == 1

# %%
# 7. The same network as layers
# -----------------------------
#
# :class:`cnnkit.Sequential` chains the same kernels as layers, with
# PyTorch's weight layouts (conv weights ``(K, C, R, S)``, dense weights
# ``(out, in)``).  Loaded with the numbers above, its forward and backward
# passes give the same loss and gradients:
from cnnkit import layers

model = cnnkit.Sequential([layers.Conv2D(1, 2), layers.ReLU(),
                           layers.Flatten(), layers.Dense(3)],
                          input_shape=(1, 3, 3), dtype="float64")
model.set_weights([flipped.reshape(1, 1, 2, 2), np.zeros(1), W3, b3])
scores_m = model.forward(image.reshape(1, 1, 3, 3), training=True)
loss_m, grad_m = F.softmax_cross_entropy(scores_m, label)
model.backward(grad_m)
grads = dict(zip([name for name, _ in model.named_parameters()],
                 model.gradients()))
print("loss:", loss_m, "\ndL/dkernel:\n", grads["0.weight"][0, 0])
assert np.isclose(loss_m, loss)
assert np.allclose(grads["0.weight"][0, 0], grad_kernel)
assert np.allclose(grads["3.weight"], grad_W3)

# %%
# How cnnkit was built and what it runs on:
cnnkit.show_config()
