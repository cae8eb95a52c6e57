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

ptrdiff_t cnnkit_dense_workspace(ptrdiff_t n, ptrdiff_t f, ptrdiff_t o,
                                 int nthreads)
{
    ptrdiff_t fwd = cnnkit_gemm_workspace(n, o, f);
    ptrdiff_t bx = cnnkit_gemm_workspace(n, f, o);
    ptrdiff_t bw = cnnkit_gemm_workspace(o, f, n);
    return (ptrdiff_t)(nthreads < 1 ? 1 : nthreads) *
           CNNKIT_MAX(fwd, CNNKIT_MAX(bx, bw));
}

#define CNNKIT_IMPL "dense_impl.h"
#include "instantiate.h"
