/*
 * dense.c -- fully connected layer, forward and backward.
 *
 * x (N, F), w (O, F) as in PyTorch's nn.Linear, bias (O,):
 *     y  = x @ w^T + bias                       (N, O)
 *     gx = gy @ w                               (N, F)
 *     gw = gy^T @ x                             (O, F)
 *     gb = sum over rows of gy                  (O,)
 * Threading: the GEMMs split their output into tiles (each thread owns its
 * tiles); the bias gradient splits over O.  The summation order of every
 * element depends only on the inner dimension, so the bits do not depend on
 * the thread count, and a row of y does not depend on its batch.
 */
#include "internal.h"

ptrdiff_t cnnkit_dense_workspace(int nthreads)
{
    return (ptrdiff_t)(nthreads < 1 ? 1 : nthreads) * cnnkit_gemm_workspace();
}

#define REAL float
#define SFX(name) name##_f32
#include "dense_impl.h"
#undef REAL
#undef SFX

#define REAL double
#define SFX(name) name##_f64
#include "dense_impl.h"
#undef REAL
#undef SFX
