/*
 * conv2d.c -- 2-D convolution (cross-correlation), forward and backward.
 *
 * Layout and sizes
 * ----------------
 * x (N, C, H, W), w (K, C, R, S), bias (K,), y (N, K, OH, OW), all
 * C-contiguous.  With top/left padding ph, pw, stride sh, sw, dilation dh, dw:
 *     y[n,k,i,j] = bias[k] + sum_{c,r,s} w[k,c,r,s] * x[n,c,i*sh-ph+r*dh, j*sw-pw+s*dw]
 * where x outside the image is 0.  OH, OW come from the caller, so bottom /
 * right padding may differ from top / left (padding="same").
 *
 * Lowering onto GEMM
 * ------------------
 * Write P = OH*OW and CRS = C*R*S.  im2col of image n is the (CRS, P) matrix
 * col[(c,r,s), (i,j)] = x[n, c, i*sh-ph+r*dh, j*sw-pw+s*dw].  Then
 *     forward          y_n      (K, P)   = w (K, CRS) @ col_n (CRS, P)
 *     backward data    dcol_n   (CRS, P) = w^T (CRS, K) @ gy_n (K, P);
 *                      gx_n = col2im(dcol_n) (adds overlapping windows)
 *     backward weight  gw (K, CRS)       = sum_n gy_n (K, P) @ col_n^T
 *     backward bias    gb[k]             = sum_{n,i,j} gy[n,k,i,j]
 * col is never built for a whole batch: each task builds only the block it
 * multiplies, so the workspace is O(threads * block), not O(N * CRS * P).
 *
 * Threading (each task owns its outputs; no atomics, no races)
 * ---------
 * forward          tasks = (image, block of PB output pixels)
 * backward data    tasks = (image, group of input channels); the group owns
 *                  its planes of gx and walks them in fixed blocks of
 *                  ROWS_BD rows x PIX_BD pixels (bounded scratch), col2im
 *                  adding in a fixed order
 * backward weight  the batch is cut into G = min(N, 8) fixed groups whose
 *                  partial sums are added in group order at the end; tasks =
 *                  (group, tile of JT columns of gw), through the per-run
 *                  kernel that data-parallel training uses; bias: tasks = k
 * On the AVX-512 and AVX2 engines, the direct paths of conv_direct_simd.h
 * replace im2col where they apply (see there), unless g->im2col_only: the
 * forward (with the same bits), the input gradient (as the forward of the
 * unit-stride convolution below) and the weight gradient (the same sums in
 * another order).
 * Block sizes are constants and the GEMM's summation order depends only on
 * its inner dimension, so results are bit-identical for any thread count,
 * and the forward result of an image does not depend on its batch.
 */
#include <string.h>

#include "conv_depthwise.h"
#include "internal.h"

#define PB 256       /* output pixels per forward / weight-gradient block  */
#define JT 192       /* columns of gw per weight-gradient task             */
#define ROWS_BD 96   /* target rows of dcol per backward-data task / block */
#define PIX_BD 1024  /* output pixels per backward-data block              */
#define WGROUPS 8    /* fixed number of batch groups for the weight grad   */

/* Channels and filters of one group, and C/groups*R*S, the inner
 * dimension of a group's GEMM (the whole C*R*S with one group). */
static ptrdiff_t conv_gc(const cnnkit_conv2d_geom *g)
{
    return g->c / cnnkit_conv_groups(g);
}

static ptrdiff_t conv_gk(const cnnkit_conv2d_geom *g)
{
    return g->k / cnnkit_conv_groups(g);
}

static ptrdiff_t conv_gcrs(const cnnkit_conv2d_geom *g)
{
    return conv_gc(g) * g->r * g->s;
}

/* Input channels per backward-data task: never across two groups. */
static ptrdiff_t conv_channel_group(const cnnkit_conv2d_geom *g)
{
    ptrdiff_t rs = g->r * g->s;
    ptrdiff_t cg = ROWS_BD / rs;
    if (cg < 1)
        cg = 1;
    return CNNKIT_MIN(cg, conv_gc(g));
}

static ptrdiff_t conv_wgroups(const cnnkit_conv2d_geom *g)
{
    return CNNKIT_MIN(g->n, (ptrdiff_t)WGROUPS);
}

/* The forward's pixels per im2col task: PB, or, when an image's blocks
 * are fewer than the threads (a batch of one), the image's pixels split
 * over the threads in whole vectors.  An element's sum does not depend on
 * its block, so the bits stay; ResNet-20's 1x1 stride-2 shortcuts at
 * batch 1 on 2 threads ran 8.3 -> 6.5 and 6.4 -> 5.2 us. */
static ptrdiff_t conv_forward_block(const cnnkit_conv2d_geom *g,
                                    int nthreads)
{
    const ptrdiff_t p = g->oh * g->ow;
    const ptrdiff_t nt = nthreads < 1 ? 1 : nthreads;
    ptrdiff_t pb = CNNKIT_MIN(p, (ptrdiff_t)PB);
    if (g->n * cnnkit_conv_groups(g) * cnnkit_ceil_div(p, pb) < nt &&
        p >= 64)
        pb = cnnkit_ceil_div(cnnkit_ceil_div(p, nt), 16) * 16;
    return CNNKIT_MAX(pb, (ptrdiff_t)1);
}

/* Per-thread workspace of each pass: the lowered block it multiplies plus
 * the GEMM's packing buffers for that multiply (the forward's at PB
 * pixels, which holds any conv_forward_block). */
static ptrdiff_t conv_forward_per_thread(const cnnkit_conv2d_geom *g)
{
    ptrdiff_t crs = conv_gcrs(g);
    ptrdiff_t pb = CNNKIT_MIN(g->oh * g->ow, (ptrdiff_t)PB);
    return crs * pb + cnnkit_gemm_workspace(conv_gk(g), pb, crs);
}

static ptrdiff_t conv_data_rows(const cnnkit_conv2d_geom *g)
{
    return CNNKIT_MIN(conv_channel_group(g) * g->r * g->s, (ptrdiff_t)ROWS_BD);
}

static ptrdiff_t conv_data_pixels(const cnnkit_conv2d_geom *g)
{
    return CNNKIT_MIN(g->oh * g->ow, (ptrdiff_t)PIX_BD);
}

static ptrdiff_t conv_data_per_thread(const cnnkit_conv2d_geom *g)
{
    ptrdiff_t rows = conv_data_rows(g), pix = conv_data_pixels(g);
    return rows * pix + cnnkit_gemm_workspace(rows, pix, conv_gk(g));
}

/* The input gradient of a convolution with unit strides is itself a
 * convolution, of gy padded by dil*(R-1) - pad, with the filters flipped
 * and their two channel axes swapped:
 *     gx[n,c,i,j] = sum_{k,r,s} w[k,c,R-1-r,S-1-s] *
 *                   gy[n, k, i - (dh*(R-1) - ph) + r*dh, j - (dw*(S-1) - pw) + s*dw]
 * (with groups, k runs over the filters of c's group: the same groups,
 * C/groups and K/groups swapped).
 * Fills t with that convolution's geometry; returns 0 when it does not
 * exist (a stride above 1, or padding beyond the dilated kernel). */
static int conv_data_as_forward(const cnnkit_conv2d_geom *g,
                                cnnkit_conv2d_geom *t)
{
    if (g->stride_h != 1 || g->stride_w != 1)
        return 0;
    ptrdiff_t ph = g->dil_h * (g->r - 1) - g->pad_h;
    ptrdiff_t pw = g->dil_w * (g->s - 1) - g->pad_w;
    if (ph < 0 || pw < 0)
        return 0;
    *t = *g;
    t->pool = 0;
    t->res = NULL;
    t->c = g->k;
    t->h = g->oh;
    t->w = g->ow;
    t->k = g->c;
    t->oh = g->h;
    t->ow = g->w;
    t->pad_h = ph;
    t->pad_w = pw;
    return 1;
}

/* Elements that the flipped filters of that convolution take in the
 * workspace, ahead of its own workspace (rounded to 64 bytes or more). */
static ptrdiff_t conv_flipped_size(const cnnkit_conv2d_geom *g)
{
    return cnnkit_ceil_div(g->k * conv_gcrs(g), 16) * 16;
}

/* Elements of the fixed groups' weight-gradient rows in the whole-batch
 * weight gradient's workspace (none for one group), rounded up to 16 so
 * that the per-run pass's workspace after them stays 64-byte aligned (it
 * starts with a table of ptrdiff_t offsets). */
static ptrdiff_t conv_wrows_size(const cnnkit_conv2d_geom *g,
                                 ptrdiff_t groups)
{
    return groups > 1 ?
        cnnkit_ceil_div(groups * g->k * conv_gcrs(g), 16) * 16 : 0;
}

/* ---- the depthwise path (groups == C: one channel per group) -----------
 * A task owns one plane: (image, channel) for the forward and the input
 * gradient, (run of images, channel) for the weight gradient, and works on
 * padded copies of it (conv_depthwise.h) so that every inner loop runs
 * along an output row.  The plain C kernels below run on the generic path;
 * the AVX2 and AVX-512 engines bring their own (conv_depthwise_simd.h),
 * explicit vectors along output rows with the same task split (on
 * AVX-512, and AVX2 in float32, some stride-2 passes read the planes in
 * place, with the same bits). */
static int conv_depthwise(const cnnkit_conv2d_geom *g)
{
    return !g->im2col_only && cnnkit_conv_groups(g) > 1 && conv_gc(g) == 1;
}

static ptrdiff_t dw_workspace(const cnnkit_conv2d_geom *g, int pass,
                              int nthreads)
{
    if (!conv_depthwise(g) || g->oh < 1 || g->ow < 1)
        return 0;
    ptrdiff_t t = nthreads < 1 ? 1 : nthreads;
    t = CNNKIT_MIN(t, CNNKIT_MAX(g->n * g->c, 1));
    return t * dw_per_thread(g, pass);
}

static ptrdiff_t conv_data_direct_workspace(const cnnkit_conv2d_geom *g,
                                            int nthreads)
{
    cnnkit_conv2d_geom t;
    if (!conv_data_as_forward(g, &t))
        return 0;
    ptrdiff_t ws = cnnkit_conv_direct_workspace(&t, nthreads);
    return ws > 0 ? conv_flipped_size(g) + ws : 0;
}

static ptrdiff_t conv_weight_per_thread(const cnnkit_conv2d_geom *g)
{
    ptrdiff_t jt = CNNKIT_MIN(conv_gcrs(g), (ptrdiff_t)JT);
    ptrdiff_t pb = CNNKIT_MIN(g->oh * g->ow, (ptrdiff_t)PB);
    return jt * pb + cnnkit_gemm_workspace(conv_gk(g), jt, pb);
}

ptrdiff_t cnnkit_conv2d_workspace(const cnnkit_conv2d_geom *g, int pass,
                                  int nthreads)
{
    /* never more threads than the pass has tasks */
    ptrdiff_t t = nthreads < 1 ? 1 : nthreads;
    ptrdiff_t p = g->oh * g->ow, crs = conv_gcrs(g);
    ptrdiff_t ng = cnnkit_conv_groups(g);
    switch (pass) {
    case CNNKIT_CONV_FORWARD:
        t = CNNKIT_MIN(t, CNNKIT_MAX(
                              g->n * ng * cnnkit_ceil_div(
                                  p, conv_forward_block(g, nthreads)),
                              1));
        return CNNKIT_MAX(
            CNNKIT_MAX(CNNKIT_MAX(t * conv_forward_per_thread(g),
                                  cnnkit_conv_direct_workspace(g, nthreads)),
                       dw_workspace(g, pass, nthreads)),
            CNNKIT_MAX(cnnkit_conv_winograd_workspace_f32(g, nthreads),
                       cnnkit_conv_winograd_workspace_f64(g, nthreads)));
    case CNNKIT_CONV_BACKWARD_DATA:
        t = CNNKIT_MIN(t, CNNKIT_MAX(g->n * ng * cnnkit_ceil_div(
                                              conv_gc(g), conv_channel_group(g)), 1));
        return CNNKIT_MAX(CNNKIT_MAX(t * conv_data_per_thread(g),
                                     conv_data_direct_workspace(g, nthreads)),
                          dw_workspace(g, pass, nthreads));
    case CNNKIT_CONV_BACKWARD_WEIGHT: {
        /* the groups' rows (unless one group), then the per-run pass */
        return conv_wrows_size(g, conv_wgroups(g)) +
               cnnkit_conv2d_workspace(g, CNNKIT_CONV_BACKWARD_WEIGHT_PARTS,
                                       nthreads);
    }
    case CNNKIT_CONV_BACKWARD_WEIGHT_PARTS:
        /* at most one task per (non-empty part, column tile), and the
         * non-empty parts hold distinct images */
        t = CNNKIT_MIN(t, CNNKIT_MAX(g->n * ng * cnnkit_ceil_div(
                                              crs, (ptrdiff_t)JT), 1));
        return CNNKIT_MAX(CNNKIT_MAX(t * conv_weight_per_thread(g),
                                     cnnkit_conv_direct_weight_workspace(
                                         g, nthreads)),
                          dw_workspace(g, pass, nthreads));
    default:
        return 0;
    }
}

#define CNNKIT_IMPL "conv2d_impl.h"
#include "instantiate.h"
