"""
CNNs step by step, through cnnkit
=================================

The teaching example cnnkit grew from, computed three ways: by hand in NumPy,
by the readable reference (:mod:`cnnkit.reference`) and by the compiled
kernels (:mod:`cnnkit.functional`).  Then the backward pass of each step.
"""
import numpy as np

import cnnkit
from cnnkit import functional as F
from cnnkit import reference as ref

np.set_printoptions(precision=4, suppress=True)

# %%
# 1. Convolution: multiply each 2x2 window of the image by the kernel, sum.
image = np.array([[1, 2, 3],
                  [4, 5, 6],
                  [7, 8, 9]], dtype=float)
kernel = np.array([[1, 0],
                   [0, -1]], dtype=float)

by_hand = np.zeros((2, 2))
for i in range(2):
    for j in range(2):
        by_hand[i, j] = np.sum(image[i:i + 2, j:j + 2] * kernel)

feature_map = F.conv2d(image, kernel)
print("convolution, by hand:\n", by_hand)
print("convolution, cnnkit.functional.conv2d:\n", feature_map)
assert np.array_equal(feature_map, by_hand)
assert np.array_equal(ref.conv2d(image, kernel), by_hand)

# %%
# 2. ReLU keeps positive values and zeroes the rest.
activated = F.relu(feature_map)
print("ReLU:\n", activated)
assert np.array_equal(activated, np.maximum(0, by_hand))

# %%
# 3. Max pooling: the largest value of each window (here one 2x2 window),
# and where it was.
pooled, where = F.max_pool2d(feature_map, 2)
print("max pooling of the feature map:", pooled, "at flat index", where)

# %%
# 4. Fully connected layer: flatten, then y = W x + b.
x = activated.flatten()
W = np.array([0.5, -0.2, 0.1, 0.4])
b = 0.1
y = F.dense(x, W, b)
print("dense: y = W x + b =", y)
assert np.isclose(y, np.dot(W, x) + b)

# %%
# 5. A classifier: the 4 features feed C = 3 class scores, softmax turns them
# into probabilities, cross-entropy measures the loss for the true class.
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

# %%
# 6. Backpropagation: each step's backward pass, from the loss down to the
# kernel.  Every feature map value is -4, so ReLU lets no gradient through
# and the kernel would not learn (a "dead" ReLU).
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
# With the kernel negated the feature map is +4 everywhere, ReLU passes it,
# and the gradient reaches the kernel.  The reference agrees.
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

cnnkit.show_config()
