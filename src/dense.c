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
#include <string.h>

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

/* The tree-summed weight gradient (cnnkit_dense_weight_tree) works on
 * tiles of dense_tree_rows rows x TREE_TJ columns of gw: each part's tile,
 * then their tree, in a thread's scratch.  Rows per tile shrink as parts
 * grow so that the scratch stays in L2. */
#define TREE_TJ 256
#define TREE_TILE_ELEMS 65536  /* all parts' tiles together, at most */

static ptrdiff_t dense_tree_rows(ptrdiff_t nparts, ptrdiff_t o)
{
    ptrdiff_t ti = TREE_TILE_ELEMS / TREE_TJ / (nparts < 1 ? 1 : nparts);
    ti = CNNKIT_MAX((ptrdiff_t)1, CNNKIT_MIN(ti, (ptrdiff_t)32));
    return CNNKIT_MIN(ti, CNNKIT_MAX(o, (ptrdiff_t)1));
}

/* Levels of scratch the tree over nparts rows needs (tree_range.h). */
static ptrdiff_t dense_tree_levels(ptrdiff_t nparts)
{
    ptrdiff_t levels = 1;
    while (((ptrdiff_t)1 << levels) < nparts)
        levels++;
    return levels + 1;
}

/* Elements (of the smaller REAL, float) that hold nparts row pointers. */
static ptrdiff_t dense_tree_ptrs(ptrdiff_t nparts)
{
    return cnnkit_ceil_div(nparts * (ptrdiff_t)sizeof(void *), 64) * 16;
}

/* Elements of one thread's scratch: the row pointers, the parts' tiles,
 * the tree's levels, the GEMM's workspace (the largest part's inner
 * dimension). */
static ptrdiff_t dense_tree_per_thread(const int64_t *bounds, ptrdiff_t nparts,
                                       ptrdiff_t f, ptrdiff_t o)
{
    ptrdiff_t m = 0;
    for (ptrdiff_t q = 0; q < nparts; q++)
        m = CNNKIT_MAX(m, (ptrdiff_t)(bounds[q + 1] - bounds[q]));
    const ptrdiff_t ti = dense_tree_rows(nparts, o);
    const ptrdiff_t tile = ti * CNNKIT_MIN(f, (ptrdiff_t)TREE_TJ);
    const ptrdiff_t gws = cnnkit_gemm_workspace(ti, TREE_TJ, CNNKIT_MAX(m, 1));
    /* each region a multiple of 16 elements (64-byte alignment kept) */
    return dense_tree_ptrs(nparts) +
           cnnkit_ceil_div((nparts + dense_tree_levels(nparts)) * tile, 16) *
               16 + gws;
}

ptrdiff_t cnnkit_dense_tree_workspace(const int64_t *bounds,
                                      ptrdiff_t nparts, ptrdiff_t f,
                                      ptrdiff_t o, int nthreads)
{
    if (nparts < 1 || f < 1 || o < 1)
        return 0;
    const ptrdiff_t tiles = cnnkit_ceil_div(o, dense_tree_rows(nparts, o)) *
                            cnnkit_ceil_div(f, (ptrdiff_t)TREE_TJ);
    const ptrdiff_t t = CNNKIT_MIN((ptrdiff_t)(nthreads < 1 ? 1 : nthreads),
                                   tiles);
    return CNNKIT_MAX(t * dense_tree_per_thread(bounds, nparts, f, o),
                      cnnkit_gemm_wtree_workspace(bounds[nparts], o, nparts,
                                                  nthreads));
}

#define CNNKIT_IMPL "dense_impl.h"
#include "instantiate.h"
