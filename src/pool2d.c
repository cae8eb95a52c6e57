/*
 * pool2d.c -- 2-D max, average and global max pooling, forward and
 * backward.
 *
 * Layout: (planes, H, W) with planes = N*C; output (planes, OH, OW) with
 *     OH = (H + 2*ph - kh) / sh + 1   (floor), likewise OW,
 * or, with ceil_mode, OH = ceil((H + 2*ph - kh) / sh) + 1, less one when
 * the last window would start in the bottom padding ((OH-1)*sh >= H + ph):
 * PyTorch's rule.  The caller computes OH and OW; the kernels only clip
 * each window to the input, so a last window of ceil_mode that reaches past
 * the padding is read like any other.
 * Forward: y[i,j] = max of the window rows i*sh-ph .. +kh, columns
 * j*sw-pw .. +kw; padding is -inf, so it never wins against a real element
 * (the caller guarantees pad <= kernel/2, so every window holds one).  The
 * window is scanned in row-major order and an element replaces the running
 * maximum when it is greater or NaN: ties keep the first maximum and a NaN
 * propagates (PyTorch's rule).  idx records h*W + w of the winner.
 * Backward: gx[idx[i,j]] += gy[i,j] (overwrites gx first); windows overlap
 * when stride < kernel, so the scatter runs serially inside a plane.
 * Average pooling uses the same geometry with zero padding: y is the window
 * sum (accumulated in double) over a divisor of the window clipped to the
 * padded input (count_include_pad, PyTorch's default: kh*kw but for a last
 * window of ceil_mode) or of the input elements the window covers; backward
 * spreads gy / divisor over the window.
 * Global max pooling is max pooling with one window per plane (the rule
 * above, idx the flat h*W + w of the winner; backward writes gy at idx).
 * Threading: over planes; each plane owns its output.
 */
#include <string.h>

#include "internal.h"

/* Threads for a pass over every plane: work of one window read per output
 * element plus one pass over the input, each element about 4 units (a
 * select and a store, or a load and an add, per element); planes are the
 * tasks. */
static int pool_team(const cnnkit_pool2d_geom *g, int nthreads)
{
    const double ohw = (double)g->oh * g->ow;
    return cnnkit_team(4.0 * (double)g->planes * (ohw * g->kh * g->kw +
                                                  (double)g->h * g->w),
                       g->planes, nthreads);
}

/* Windows 2x2 of stride 2 without padding, each of two full rows and
 * columns (no ceil_mode leftovers): disjoint windows, which the fast paths
 * and the winners' places take plane by plane. */
int cnnkit_max_pool2x2_fits(const cnnkit_pool2d_geom *g)
{
    return g->kh == 2 && g->kw == 2 && g->stride_h == 2 &&
           g->stride_w == 2 && g->pad_h == 0 && g->pad_w == 0 &&
           2 * g->oh <= g->h && 2 * g->ow <= g->w;
}

#define CNNKIT_IMPL "pool2d_impl.h"
#include "instantiate.h"
