r"""
Convolution as a matrix product (im2col)
========================================

cnnkit's convolution kernel does not loop over windows the way the
reference does: it copies the windows of an image into the columns of a
matrix ("im2col") and multiplies that matrix by the filters, reshaped to a
matrix, with a cache-blocked GEMM.  The backward pass is two more matrix
products and the inverse copy ("col2im").  This example builds the matrices
in NumPy for a small case and checks each identity against
:func:`cnnkit.functional.conv2d` and
:func:`cnnkit.functional.conv2d_backward`.  :doc:`/math` has the formulas.
"""
import matplotlib.pyplot as plt
import numpy as np

from cnnkit import functional as F

rng = np.random.default_rng(0)
N, C, H, W = 1, 2, 5, 5          # one image of 2 channels, 5x5
K, R, S = 3, 3, 3                # 3 filters of 3x3
stride, pad = 1, 1
x = rng.standard_normal((N, C, H, W))
w = rng.standard_normal((K, C, R, S))
OH, OW = F.conv2d_output_shape((H, W), (R, S), stride, pad)
print("output size:", (OH, OW))

# %%
# im2col
# ------
#
# Row :math:`(c, r, s)` and column :math:`(i, j)` of the matrix hold the
# input pixel that tap :math:`(r, s)` of channel :math:`c` reads for output
# :math:`(i, j)`: :math:`x_{c,\; i s_h - p_h + r d_h,\; j s_w - p_w + s d_w}`,
# 0 in the padding.  It has :math:`C R S` rows and :math:`OH \cdot OW`
# columns.


def im2col(x, R, S, stride, pad, OH, OW):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    col = np.empty((n, c, R, S, OH, OW), dtype=x.dtype)
    for r in range(R):
        for s in range(S):
            col[:, :, r, s] = xp[:, :, r:r + stride * OH:stride,
                                 s:s + stride * OW:stride]
    return col.reshape(n, c * R * S, OH * OW)


col = im2col(x, R, S, stride, pad, OH, OW)[0]       # (C*R*S, OH*OW)
print("col:", col.shape)

# %%
# Forward: one matrix product, :math:`Y = W_{mat}\, \mathrm{col}`, with the
# filters flattened to a :math:`K \times CRS` matrix (PyTorch's weight layout
# makes that a free reshape).
y_matmul = (w.reshape(K, -1) @ col).reshape(1, K, OH, OW)
y = F.conv2d(x, w, padding=pad)
print("max |difference|:", np.abs(y - y_matmul).max())
assert np.allclose(y, y_matmul)

CRS = C * R * S
fig, axes = plt.subplots(1, 3, figsize=(9, 3.2),
                         gridspec_kw={"width_ratios": [CRS, OH * OW, OH * OW]})
axes[0].imshow(w.reshape(K, -1), cmap="RdBu_r")
axes[0].set_title(f"filters W ({K} x {CRS})")
axes[1].imshow(col, cmap="RdBu_r")
axes[1].set_title(f"im2col ({CRS} x {OH * OW})")
axes[2].imshow(y.reshape(K, -1), cmap="RdBu_r")
axes[2].set_title(f"Y = W @ col ({K} x {OH * OW})")
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()

# %%
# Backward
# --------
#
# With :math:`G` the output gradient as a :math:`K \times OH\,OW` matrix:
#
# * weight gradient: :math:`\partial L / \partial W_{mat} = G\,
#   \mathrm{col}^\top` (summed over the images of a batch);
# * bias gradient: the row sums of :math:`G`;
# * input gradient: :math:`\partial L / \partial \mathrm{col} = W_{mat}^\top
#   G`, then col2im adds every entry back onto the pixel it was copied from
#   (pixels read by several windows collect several terms).
g = rng.standard_normal(y.shape)
G = g.reshape(K, -1)
grad_w = (G @ col.T).reshape(w.shape)
grad_b = G.sum(axis=1)
dcol = (w.reshape(K, -1).T @ G).reshape(C, R, S, OH, OW)
grad_xp = np.zeros((C, H + 2 * pad, W + 2 * pad))
for r in range(R):
    for s in range(S):
        grad_xp[:, r:r + stride * OH:stride, s:s + stride * OW:stride] += \
            dcol[:, r, s]
grad_x = grad_xp[:, pad:pad + H, pad:pad + W][None]

gx, gw, gb = F.conv2d_backward(g, x, w, padding=pad)
for name, mine, theirs in (("grad_x", grad_x, gx), ("grad_w", grad_w, gw),
                           ("grad_b", grad_b, gb)):
    print(f"{name}: max |difference| {np.abs(mine - theirs).max():.2e}")
    assert np.allclose(mine, theirs)

# %%
# The input gradient is itself a convolution
# ------------------------------------------
#
# For stride 1, col2im of :math:`W^\top G` equals a convolution of the
# output gradient, padded by :math:`R - 1 - p`, with the kernel flipped in
# both spatial axes and its in and out channels swapped, the "transposed
# convolution":
w_flipped = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)      # (C, K, R, S)
gx_conv = F.conv2d(g, w_flipped, padding=R - 1 - pad)
print("max |difference|:", np.abs(gx_conv - gx).max())
assert np.allclose(gx_conv, gx)

# %%
# And the weight gradient is a convolution of the input with the output
# gradient, batch and channel axes exchanged:
gw_conv = F.conv2d(x.transpose(1, 0, 2, 3), g.transpose(1, 0, 2, 3),
                   padding=pad).transpose(1, 0, 2, 3)
print("max |difference|:", np.abs(gw_conv - gw).max())
assert np.allclose(gw_conv, gw)
