/*
 * loss.c -- softmax, log-softmax and mean softmax cross-entropy over rows of
 * logits.
 *
 * For a row z of C logits with maximum m:
 *     lse     = m + log(sum_c exp(z_c - m))       (never overflows)
 *     p_c     = exp(z_c - m) / sum_c' exp(z_c' - m)
 *     loss_n  = log(sum_c exp(z_c - m)) - (z_y - m)   (= lse - z_y, computed
 *               from shifted logits so it stays exact for |z| ~ 1e4)
 *     L       = (1/N) sum_n loss_n
 *     dL/dz_c = (p_c - [c == y]) / N
 * With sample weights w_n (>= 0) the mean is weighted:
 *     L = sum_n w_n loss_n / sum_n w_n,  dL/dz_nc = w_n (p_c - [c == y]) / sum w
 * Label smoothing eps (PyTorch's label_smoothing) replaces the one-hot
 * target by t_c = (1 - eps) [c == y] + eps / C:
 *     loss_n  = lse - sum_c t_c z_c = log(s) - (1-eps) d_y - (eps/C) sum_c d_c
 *               with d_c = z_c - m,
 *     dloss_n/dz_c = p_c - t_c;
 * eps = 0 takes the plain formulas above (the same bits).
 * Softmax backward (gy the gradient of p):  gx_c = p_c (gy_c - sum_c' gy_c' p_c').
 * Log-softmax:  y_c = (z_c - m) - log(sum_c exp(z_c - m))   (the shift makes
 *               it exact near the maximum and finite for any |z|);
 *  backward:    gx_c = gy_c - p_c sum_c' gy_c'.
 * A NaN logit makes its whole row NaN (the row maximum is NaN), as in
 * PyTorch.
 * Row sums are accumulated in double.  Threading: over rows; the per-row
 * losses land in a workspace and are added in row order, so the loss has the
 * same bits for any thread count.
 */
#include <math.h>

#include "internal.h"

#define REAL float
#define SFX(name) name##_f32
#define EXP expf
#include "loss_impl.h"
#undef REAL
#undef SFX
#undef EXP

#define REAL double
#define SFX(name) name##_f64
#define EXP exp
#include "loss_impl.h"
#undef REAL
#undef SFX
#undef EXP
