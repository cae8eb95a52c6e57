/*
 * winograd.c -- 3x3, stride-1 convolutions by Winograd's minimal
 * filtering F(2x2, 3x3) (Lavin and Gray, 2016), or F(4x4, 3x3)
 * (winograd_engine.h has its matrices): the forward pass and, for
 * F(4x4, 3x3), the weight gradient's parts, taken only when asked
 * (cnnkit_conv_winograd_applies says why; Conv2D(winograd=True) asks).
 *
 * The output is cut into 2x2 tiles; tile (i, j) of image n reads the 4x4
 * input patch d whose corner is input pixel (2i - ph, 2j - pw), 0 outside
 * the image.  With
 *
 *     B^T = [1  0 -1  0]    G = [ 1    0    0 ]    A^T = [1  1  1  0]
 *           [0  1  1  0]        [1/2  1/2  1/2]          [0  1 -1 -1]
 *           [0 -1  1  0]        [1/2 -1/2  1/2]
 *           [0  1  0 -1]        [ 0    0    1 ]
 *
 * each filter g (3x3) becomes U = G g G^T and each patch V = B^T d B (4x4
 * each), and the tile of filter k is
 *
 *     Y_k = A^T [ sum_c U_{k,c} (.) V_c ] A        ((.) element by element)
 *
 * The sum over channels is, for each of the 16 positions xi of the 4x4
 * grid, one matrix product M_xi (K, T) = U_xi (K, C) @ V_xi (C, T) over T
 * tiles: 16 products of K*C*T multiply-adds replace the direct
 * convolution's 9 * 4 = 36 per (filter, channel, tile), 2.25 times fewer.
 * The pass lives in each GEMM engine (winograd_engine.h), whose
 * micro-kernel runs the products on operands laid out for it; this file
 * chooses and dispatches.
 *
 * Blocks: the tiles are taken a block of whole tile rows at a time, which
 * may span images (tile row r of the batch is row r % TH of image r / TH);
 * a thread transforms a block's patches (V, tiles on the contiguous axis,
 * each tile row followed by one column no output reads, so that the
 * block's rows lie end to end), runs the 16 products with the engine's
 * micro-kernel and transforms the results back, with the bias and a ReLU,
 * into y.  The transforms vectorize over the block's tiles: the padded
 * input rows are split into even and odd columns, so that tile j reads
 * elements j and j + 1 of each.
 *
 * Rounding: U, V and the output transform add and subtract (G's halves
 * are exact), so each output is the same exact sum as the direct
 * convolution's, rounded differently.  tests/test_winograd.py holds every
 * output to |y - y_exact| <= 4 eps (max|x| sum|w_k| + |b_k|), eps the
 * type's (8 eps for F(4x4), whose larger coefficients and rounded sixths
 * give up to 4.6); measured, F(2x2)'s error is about half the direct
 * path's (float32, 16-64 channels: 1.5-2.5e-8 of that scale against
 * 3-5e-8).  Every
 * output depends only on its own tile: the transforms run in a fixed
 * order, and the GEMM sums each element over the channels
 * in fixed slabs whatever the number of tiles, so the results are
 * bit-identical for any thread count and block size, and an image's
 * output does not depend on its batch.
 */
#include <string.h>

#include "gemm_engine.h"

int cnnkit_conv_winograd_applies(const cnnkit_conv2d_geom *g)
{
    /* Only when asked (g->winograd > 0): its rounding is not the direct
     * sums' (the bound is in the header), so a layer chooses it.  Where
     * the engine has the channel-block route (winograd_engine.h), F(4x4,
     * 3x3) ran at 1.13-2.48x the direct sums' speed (Zen 4, 2 threads,
     * float32, 3x3 layers of 16-128 channels on 7x7 to 56x56 planes,
     * batch 1-128) and F(2x2, 3x3) at 0.84-1.71x; the route that splits
     * input rows into phases, taken where the blocks are not, ran at
     * 0.3-1.2x. */
    if (g->winograd <= 0 || g->im2col_only || g->pool ||
        cnnkit_conv_groups(g) > 1 ||
        g->r != 3 || g->s != 3 || g->stride_h != 1 || g->stride_w != 1 ||
        g->dil_h != 1 || g->dil_w != 1 || g->n < 1 || g->c < 1 ||
        g->k < 1 || g->oh < 1 || g->ow < 1)
        return 0;
    return 1;
}

int cnnkit_conv_winograd_tile(const cnnkit_conv2d_geom *g)
{
    return g->winograd == 2 ? 4 : 2;
}

int cnnkit_conv_winograd_blocks(const cnnkit_conv2d_geom *g, int f64)
{
    cnnkit_conv2d_geom g2;
    ptrdiff_t pin;
    return cnnkit_conv_winograd_applies(g) &&
           cnnkit_winograd_blocks_geom(g, &g2, &pin) &&
           cnnkit_conv_blocked_applies(&g2, pin, 1, f64);
}

/* The active engine's pass (every engine has one). */
ptrdiff_t cnnkit_conv_winograd_workspace_f32(const cnnkit_conv2d_geom *g,
                                             int nthreads)
{
    return cnnkit_gemm_active(NULL)->wg_workspace(g, nthreads, 0);
}

ptrdiff_t cnnkit_conv_winograd_workspace_f64(const cnnkit_conv2d_geom *g,
                                             int nthreads)
{
    return cnnkit_gemm_active(NULL)->wg_workspace(g, nthreads, 1);
}

int cnnkit_conv_winograd_f32(float *y, const float *x, const float *w,
                             const float *bias, int relu, float *work,
                             const cnnkit_conv2d_geom *g, int nthreads)
{
    return cnnkit_gemm_active(NULL)->wg_forward_f32(y, x, w, bias, relu,
                                                    work, g, nthreads);
}

int cnnkit_conv_winograd_f64(double *y, const double *x, const double *w,
                             const double *bias, int relu, double *work,
                             const cnnkit_conv2d_geom *g, int nthreads)
{
    return cnnkit_gemm_active(NULL)->wg_forward_f64(y, x, w, bias, relu,
                                                    work, g, nthreads);
}

ptrdiff_t cnnkit_conv_winograd_weight_workspace(const cnnkit_conv2d_geom *g,
                                                int nthreads, int f64)
{
    const cnnkit_gemm_engine *e = cnnkit_gemm_active(NULL);
    return e->ww_workspace ? e->ww_workspace(g, nthreads, f64) : 0;
}

int cnnkit_conv_winograd_weight_f32(float *gw, ptrdiff_t wstride, int *done,
                                    const float *gy, const float *x,
                                    const int64_t *bounds, ptrdiff_t nparts,
                                    ptrdiff_t min_tiles, float *work,
                                    const cnnkit_conv2d_geom *g,
                                    int nthreads)
{
    const cnnkit_gemm_engine *e = cnnkit_gemm_active(NULL);
    return e->ww_weight_f32 ? e->ww_weight_f32(gw, wstride, done, gy, x,
                                               bounds, nparts, min_tiles,
                                               work, g, nthreads)
                            : 0;
}

int cnnkit_conv_winograd_weight_f64(double *gw, ptrdiff_t wstride,
                                    int *done, const double *gy,
                                    const double *x, const int64_t *bounds,
                                    ptrdiff_t nparts, ptrdiff_t min_tiles,
                                    double *work,
                                    const cnnkit_conv2d_geom *g,
                                    int nthreads)
{
    const cnnkit_gemm_engine *e = cnnkit_gemm_active(NULL);
    return e->ww_weight_f64 ? e->ww_weight_f64(gw, wstride, done, gy, x,
                                               bounds, nparts, min_tiles,
                                               work, g, nthreads)
                            : 0;
}
