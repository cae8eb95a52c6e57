"""The seed notebook's worked example -- the 3x3 image, the 2x2 kernel,
ReLU, max pooling and a dense layer, computed by hand -- step by step and
end to end, in cnnkit.functional and in cnnkit.reference."""
import math

import numpy as np

from cnnkit import functional as F
from cnnkit import reference as ref

SEED_IMAGE = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
SEED_KERNEL = np.array([[1, 0], [0, -1]])
SEED_W = np.array([0.5, -0.2, 0.1, 0.4])


def test_seed_example():
    fmap = F.conv2d(SEED_IMAGE, SEED_KERNEL)
    assert fmap.shape == (2, 2) and fmap.dtype == np.float64
    np.testing.assert_array_equal(fmap, [[-4.0, -4.0], [-4.0, -4.0]])

    act = F.relu(fmap)
    assert act.shape == (2, 2)
    np.testing.assert_array_equal(act, np.zeros((2, 2)))

    pooled, idx = F.max_pool2d(act, 2)
    assert pooled.shape == (1, 1) and idx.shape == (1, 1)
    np.testing.assert_array_equal(pooled, [[0.0]])
    pooled_raw, idx_raw = F.max_pool2d(fmap, 2)
    np.testing.assert_array_equal(pooled_raw, [[-4.0]])
    np.testing.assert_array_equal(idx_raw, [[0]])  # tie: first maximum

    flat = act.flatten()
    y = F.dense(flat, SEED_W, 0.1)
    assert y.shape == () and y.dtype == np.float64
    assert float(y) == 0.1
    y = F.dense(flat.reshape(1, -1), SEED_W.reshape(1, 4), np.array([0.1]))
    assert y.shape == (1, 1)
    np.testing.assert_array_equal(y, [[0.1]])
    y = F.dense(flat, SEED_W.reshape(1, 4), np.array([0.1]))
    assert y.shape == (1,)
    np.testing.assert_array_equal(y, [0.1])
    # with a non-zero input the dense layer does what the notebook does
    x = np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(F.dense(x, SEED_W, 0.1),
                               np.dot(SEED_W, x) + 0.1, rtol=1e-15)


# --------------------------------------------------------------------------
# cnnkit.reference, step by step
# --------------------------------------------------------------------------
def test_reference_seed_convolution_2d():
    out = ref.conv2d(SEED_IMAGE, SEED_KERNEL)
    assert out.shape == (2, 2)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[-4.0, -4.0], [-4.0, -4.0]])


def test_reference_seed_convolution_2d_lists():
    out = ref.conv2d([[1, 2, 3], [4, 5, 6], [7, 8, 9]], [[1, 0], [0, -1]])
    np.testing.assert_array_equal(out, [[-4.0, -4.0], [-4.0, -4.0]])


def test_reference_seed_convolution_matches_notebook_loop():
    output = np.zeros((2, 2))
    for i in range(2):
        for j in range(2):
            region = SEED_IMAGE[i:i + 2, j:j + 2]
            output[i, j] = np.sum(region * SEED_KERNEL)
    np.testing.assert_array_equal(ref.conv2d(SEED_IMAGE, SEED_KERNEL), output)


def test_reference_seed_convolution_4d():
    out = ref.conv2d(SEED_IMAGE[None, None], SEED_KERNEL[None, None])
    assert out.shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(out[0, 0], [[-4.0, -4.0], [-4.0, -4.0]])


def test_reference_seed_convolution_is_not_flipped():
    # a true convolution (flipped kernel) would give +4 everywhere
    flipped = ref.conv2d(SEED_IMAGE, SEED_KERNEL[::-1, ::-1])
    np.testing.assert_array_equal(flipped, [[4.0, 4.0], [4.0, 4.0]])
    assert not np.array_equal(flipped, ref.conv2d(SEED_IMAGE, SEED_KERNEL))


def test_reference_seed_convolution_with_bias():
    out = ref.conv2d(SEED_IMAGE[None, None], SEED_KERNEL[None, None], bias=[0.5])
    np.testing.assert_array_equal(out[0, 0], np.full((2, 2), -3.5))


def test_reference_seed_relu():
    feature_map = ref.conv2d(SEED_IMAGE, SEED_KERNEL)
    out = ref.relu(feature_map)
    np.testing.assert_array_equal(out, np.zeros((2, 2)))
    np.testing.assert_array_equal(ref.relu([-4.0, 0.0, 2.5]), [0.0, 0.0, 2.5])


def test_reference_seed_max_pool_of_relu_output():
    relu_output = ref.relu(ref.conv2d(SEED_IMAGE, SEED_KERNEL))
    y, idx = ref.max_pool2d(relu_output[None, None], 2)
    assert y.shape == (1, 1, 1, 1)
    assert y[0, 0, 0, 0] == 0.0
    assert idx[0, 0, 0, 0] == 0


def test_reference_seed_dense():
    relu_output = ref.relu(ref.conv2d(SEED_IMAGE, SEED_KERNEL))
    x = relu_output.flatten()[None, :]
    W = np.array([[0.5, -0.2, 0.1, 0.4]])
    b = np.array([0.1])
    y = ref.dense(x, W, b)
    assert y.shape == (1, 1)
    np.testing.assert_allclose(y, [[0.1]], rtol=0, atol=1e-15)


def test_reference_seed_dense_nontrivial_input():
    y = ref.dense([[1.0, 2.0, 3.0, 4.0]], [[0.5, -0.2, 0.1, 0.4]], [0.1])
    # 0.5 - 0.4 + 0.3 + 1.6 + 0.1
    np.testing.assert_allclose(y, [[2.1]], rtol=1e-14)
    np.testing.assert_allclose(
        ref.dense([[1.0, 2.0, 3.0, 4.0]], [[0.5, -0.2, 0.1, 0.4]]), [[2.0]], rtol=1e-14
    )


def test_reference_seed_pipeline_end_to_end():
    fm = ref.conv2d(SEED_IMAGE[None, None], SEED_KERNEL[None, None])
    a = ref.relu(fm)
    p, _ = ref.max_pool2d(a, 1)
    logits = ref.dense(p.reshape(1, -1), np.array([[0.5, -0.2, 0.1, 0.4], [0.0, 0.0, 0.0, 1.0]]),
                       np.array([0.1, -0.1]))
    np.testing.assert_allclose(logits, [[0.1, -0.1]], atol=1e-15)
    loss, grad = ref.softmax_cross_entropy(logits, [0])
    expected = -0.1 + math.log(math.exp(0.1) + math.exp(-0.1))
    np.testing.assert_allclose(loss, expected, rtol=1e-14)
    np.testing.assert_allclose(grad.sum(), 0.0, atol=1e-15)
