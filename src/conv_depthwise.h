/* conv_depthwise.h -- the geometry of the depthwise convolution's padded
 * planes (groups == C: one channel per group, K = C * m filters), shared by
 * conv2d.c (the plain C kernels and every workspace size) and
 * conv_depthwise_simd.h (the SIMD paths' kernels); internal.
 *
 * Forward and weight gradient: a zero-padded copy of an input plane whose
 * columns are split by phase mod the column stride: element (row, u) of
 * the padded plane is at
 *     row * (sw * wq) + (u % sw) * wq + u / sw,
 * so that the taps of one output row read sw-strided columns as
 * contiguous runs.
 *
 * Input gradient on the SIMD paths: the m planes of gy of a channel, each
 * row copied between zero margins (dw_glead columns before, the rest of
 * dw_gwp after) and the rows between dw_gtop zero rows above and zero rows
 * below, so that an input row's phase reads every tap's gy row as a
 * contiguous, in-bounds run; then a row of sw phase runs of dw_gtw
 * elements each, and room for a vector read past its end. */
#ifndef CNNKIT_CONV_DEPTHWISE_H
#define CNNKIT_CONV_DEPTHWISE_H

#include "internal.h"

#define DW_LANES 16  /* partial sums per weight-gradient tap (>= any VL) */

/* padded rows that the windows reach, and elements per column phase */
static inline ptrdiff_t dw_rows(const cnnkit_conv2d_geom *g)
{
    return (g->oh - 1) * g->stride_h + (g->r - 1) * g->dil_h + 1;
}

static inline ptrdiff_t dw_wq(const cnnkit_conv2d_geom *g)
{
    return g->ow + (g->s - 1) * g->dil_w / g->stride_w + 1;
}

static inline ptrdiff_t dw_round16(ptrdiff_t n)
{
    return cnnkit_ceil_div(n, 16) * 16;
}

/* elements of one padded plane, rounded to 64 bytes or more */
static inline ptrdiff_t dw_plane(const cnnkit_conv2d_geom *g)
{
    return dw_round16(dw_rows(g) * g->stride_w * dw_wq(g));
}

/* Where tap column s of output column 0 lies in a padded row. */
static inline ptrdiff_t dw_col(const cnnkit_conv2d_geom *g, ptrdiff_t s)
{
    const ptrdiff_t u = s * g->dil_w;
    return (u % g->stride_w) * dw_wq(g) + u / g->stride_w;
}

/* input columns of one phase at most, and the zero columns before a
 * copied gy row */
static inline ptrdiff_t dw_gtw(const cnnkit_conv2d_geom *g)
{
    return cnnkit_ceil_div(g->w, g->stride_w);
}

static inline ptrdiff_t dw_glead(const cnnkit_conv2d_geom *g)
{
    return cnnkit_ceil_div((g->s - 1) * g->dil_w, g->stride_w);
}

/* elements of a copied gy row: the lead, then room for every read (of
 * column t + (phase + pw - s*dw) / sw, t < dw_gtw) and for the OW values */
static inline ptrdiff_t dw_gwp(const cnnkit_conv2d_geom *g)
{
    const ptrdiff_t reach = dw_gtw(g) + (g->stride_w - 1 + g->pad_w) /
                                        g->stride_w;
    return dw_glead(g) + CNNKIT_MAX(reach, g->ow) + 1;
}

/* zero rows above a copied gy plane, and its rows with those below: row
 * (a + ph - r*dh) / sh of every tap of input row a lies in the copy */
static inline ptrdiff_t dw_gtop(const cnnkit_conv2d_geom *g)
{
    return cnnkit_ceil_div((g->r - 1) * g->dil_h, g->stride_h);
}

static inline ptrdiff_t dw_grows(const cnnkit_conv2d_geom *g)
{
    const ptrdiff_t reach = (g->h - 1 + g->pad_h) / g->stride_h + 1;
    return dw_gtop(g) + CNNKIT_MAX(g->oh, reach);
}

static inline ptrdiff_t dw_gplane(const cnnkit_conv2d_geom *g)
{
    return dw_round16(dw_grows(g) * dw_gwp(g));
}

/* Per-thread elements of the depthwise passes, enough for the plain C
 * kernels and the SIMD paths alike: the padded plane (forward), the
 * plane or the m copied gy planes and a phase row (input gradient), the
 * plane and DW_LANES partial sums of each of a channel's m * R * S taps
 * (weight gradient). */
static inline ptrdiff_t dw_per_thread(const cnnkit_conv2d_geom *g, int pass)
{
    const ptrdiff_t m = g->k / g->c;
    if (pass == CNNKIT_CONV_BACKWARD_DATA)
        return CNNKIT_MAX(dw_plane(g),
                          m * dw_gplane(g) +
                          dw_round16(g->stride_w * dw_gtw(g)) + 16);
    if (pass == CNNKIT_CONV_BACKWARD_WEIGHT_PARTS)
        return dw_plane(g) + m * g->r * g->s * DW_LANES;
    return dw_plane(g);
}

#endif /* CNNKIT_CONV_DEPTHWISE_H */
