/* internal.h -- helpers shared by the kernel files; not part of the API. */
#ifndef CNNKIT_INTERNAL_H
#define CNNKIT_INTERNAL_H

#include "cnnkit.h"

#ifdef CNNKIT_HAVE_OPENMP
#include <omp.h>
#define CNNKIT_PRAGMA(x) _Pragma(#x)
#define CNNKIT_OMP(x) CNNKIT_PRAGMA(omp x)
#else
#define CNNKIT_OMP(x)
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
#endif

#define CNNKIT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define CNNKIT_MAX(a, b) ((a) > (b) ? (a) : (b))

static inline ptrdiff_t cnnkit_ceil_div(ptrdiff_t a, ptrdiff_t b)
{
    return (a + b - 1) / b;
}

/* How many threads are worth waking for `work` units (about one flop or one
 * element each) split into `tasks` independent pieces: each one should get
 * at least CNNKIT_GRAIN units.  A parallel region costs about 1-2 us while
 * the idle threads still spin (libgomp's default wait), which 16384 units
 * (a few microseconds of work) repay: LeNet-5 at batch 64 trains 1.2-1.4x
 * faster on 2 threads than with 262144.  Results never depend on this
 * choice (see the determinism notes of each kernel). */
#define CNNKIT_GRAIN 16384.0

static inline int cnnkit_team(double work, ptrdiff_t tasks, int nthreads)
{
    double by_work = work / CNNKIT_GRAIN;
    int nt = nthreads;
    if (by_work < nt)
        nt = by_work < 1 ? 1 : (int)by_work;
    if (tasks < nt)
        nt = tasks < 1 ? 1 : (int)tasks;
    return nt;
}

/* A monotonic clock, in seconds (runtime.c). */
double cnnkit_seconds(void);

/* The group count of a convolution (a zeroed field is one group). */
static inline ptrdiff_t cnnkit_conv_groups(const cnnkit_conv2d_geom *g)
{
    return g->groups > 1 ? g->groups : 1;
}

/* Whether a blocked input with a border of pin pixels holds every tap of
 * g: the padding inside the border, the last row and column read inside
 * it too (the border is the convolution's zero padding). */
static inline int cnnkit_blocked_border_holds(const cnnkit_conv2d_geom *g,
                                              ptrdiff_t pin)
{
    if (g->pad_h < 0 || g->pad_w < 0 || pin < g->pad_h || pin < g->pad_w ||
        g->oh < 1 || g->ow < 1)
        return 0;
    /* in double: huge dilations and strides do not overflow */
    const double last_h = (double)(g->oh - 1) * g->stride_h - g->pad_h +
                          (double)(g->r - 1) * g->dil_h;
    const double last_w = (double)(g->ow - 1) * g->stride_w - g->pad_w +
                          (double)(g->s - 1) * g->dil_w;
    return last_h <= (double)(g->h - 1 + pin) &&
           last_w <= (double)(g->w - 1 + pin);
}

/* The geometry of Winograd's route through channel blocks (see
 * winograd_engine.h): g2, g with its output's sides rounded up to whole
 * tiles of cnnkit_conv_winograd_tile(g), and *pin, the border of the
 * blocked input that holds every tile's patch.  0 where g's padding is
 * negative. */
static inline int cnnkit_winograd_blocks_geom(const cnnkit_conv2d_geom *g,
                                              cnnkit_conv2d_geom *g2,
                                              ptrdiff_t *pin)
{
    const ptrdiff_t m = cnnkit_conv_winograd_tile(g);
    if (g->pad_h < 0 || g->pad_w < 0 || g->oh < 1 || g->ow < 1)
        return 0;
    *g2 = *g;
    g2->oh = cnnkit_ceil_div(g->oh, m) * m;
    g2->ow = cnnkit_ceil_div(g->ow, m) * m;
    g2->pool = 0;
    g2->res = NULL;
    /* the last tile's patch reads input row oh2 + 1 - pad_h */
    ptrdiff_t p = CNNKIT_MAX(g->pad_h, g->pad_w);
    p = CNNKIT_MAX(p, g2->oh + 2 - g->pad_h - g->h);
    p = CNNKIT_MAX(p, g2->ow + 2 - g->pad_w - g->w);
    *pin = p;
    return cnnkit_blocked_border_holds(g2, p);
}

/* The direct convolution forward of the active GEMM engine (gemm.c): the
 * workspace it may need for g (0 if it never computes g), and the forward
 * pass, which returns 0 without touching y when it does not compute g (the
 * caller then takes the im2col path). */
ptrdiff_t cnnkit_conv_direct_workspace(const cnnkit_conv2d_geom *g,
                                       int nthreads);
/* The dense weight gradient's tree of parts in the GEMM engine (gemm.c):
 * its workspace for gy of n rows and o columns on nthreads threads (0
 * without one), and the pass, which returns 0 without writing when the
 * engine has none. */
ptrdiff_t cnnkit_gemm_wtree_workspace(ptrdiff_t n, ptrdiff_t o,
                                      ptrdiff_t nparts, int nthreads);
int cnnkit_gemm_wtree_f32(float *gw, const float *gy, const float *x,
                          const int64_t *bounds, ptrdiff_t nparts,
                          float *work, ptrdiff_t f, ptrdiff_t o,
                          int nthreads);
int cnnkit_gemm_wtree_f64(double *gw, const double *gy, const double *x,
                          const int64_t *bounds, ptrdiff_t nparts,
                          double *work, ptrdiff_t f, ptrdiff_t o,
                          int nthreads);


int cnnkit_conv_direct_f32(float *y, const float *x, const float *w,
                           const float *packed, const float *bias, int relu,
                           float *work, const cnnkit_conv2d_geom *g,
                           int nthreads);
int cnnkit_conv_direct_f64(double *y, const double *x, const double *w,
                           const double *packed, const double *bias,
                           int relu, double *work,
                           const cnnkit_conv2d_geom *g, int nthreads);
/* The direct weight gradient likewise: for each non-empty run of images
 * [bounds[q], bounds[q+1]), gw + q*wstride = its weight gradient. */
ptrdiff_t cnnkit_conv_direct_weight_workspace(const cnnkit_conv2d_geom *g,
                                              int nthreads);
int cnnkit_conv_direct_weight_applies(const cnnkit_conv2d_geom *g,
                                      int nthreads, int f64);
int cnnkit_conv_direct_weight_f32(float *gw, ptrdiff_t wstride,
                                  const float *gy, const float *x,
                                  const int64_t *bounds, ptrdiff_t nparts,
                                  float *work, const cnnkit_conv2d_geom *g,
                                  int nthreads);
int cnnkit_conv_direct_weight_f64(double *gw, ptrdiff_t wstride,
                                  const double *gy, const double *x,
                                  const int64_t *bounds, ptrdiff_t nparts,
                                  double *work, const cnnkit_conv2d_geom *g,
                                  int nthreads);

/* Whether the active engine has its own 2x2 stride-2 max pooling
 * (gemm.c) for float64 (f64) or float32: then the two below may be
 * called.  Planes [p0, p1): the values, indices (unless idx is NULL) and
 * winners' places (unless taps is NULL) of pool2d.c's loops; and the
 * backward from the winners' places. */
int cnnkit_max2x2_simd(int f64);
void cnnkit_max2x2_simd_f32(float *y, int64_t *idx, uint8_t *taps,
                            const float *x, const cnnkit_pool2d_geom *g,
                            ptrdiff_t p0, ptrdiff_t p1);
void cnnkit_max2x2_simd_f64(double *y, int64_t *idx, uint8_t *taps,
                            const double *x, const cnnkit_pool2d_geom *g,
                            ptrdiff_t p0, ptrdiff_t p1);
void cnnkit_max2x2_back_simd_f32(float *gx, const float *gy,
                                 const uint8_t *taps, const float *y,
                                 const cnnkit_pool2d_geom *g, ptrdiff_t p0,
                                 ptrdiff_t p1);
void cnnkit_max2x2_back_simd_f64(double *gx, const double *gy,
                                 const uint8_t *taps, const double *y,
                                 const cnnkit_pool2d_geom *g, ptrdiff_t p0,
                                 ptrdiff_t p1);

/* The depthwise passes of the active engine (gemm.c), for groups == C:
 * each returns 0 without writing anything when the engine has none or they
 * do not compute g (the caller then runs the plain C kernel).  Workspace:
 * as sized by cnnkit_conv2d_workspace for the pass. */
int cnnkit_conv_dw_forward_f32(float *y, const float *x, const float *w,
                               const float *bias, int relu, float *work,
                               const cnnkit_conv2d_geom *g, int nthreads);
int cnnkit_conv_dw_forward_f64(double *y, const double *x, const double *w,
                               const double *bias, int relu, double *work,
                               const cnnkit_conv2d_geom *g, int nthreads);
int cnnkit_conv_dw_backward_data_f32(float *gx, const float *gy,
                                     const float *w, float *work,
                                     const cnnkit_conv2d_geom *g,
                                     int nthreads);
int cnnkit_conv_dw_backward_data_f64(double *gx, const double *gy,
                                     const double *w, double *work,
                                     const cnnkit_conv2d_geom *g,
                                     int nthreads);
int cnnkit_conv_dw_backward_weight_f32(float *gw, ptrdiff_t wstride,
                                       const float *gy, const float *x,
                                       const int64_t *bounds,
                                       ptrdiff_t nparts, float *work,
                                       const cnnkit_conv2d_geom *g,
                                       int nthreads);
int cnnkit_conv_dw_backward_weight_f64(double *gw, ptrdiff_t wstride,
                                       const double *gy, const double *x,
                                       const int64_t *bounds,
                                       ptrdiff_t nparts, double *work,
                                       const cnnkit_conv2d_geom *g,
                                       int nthreads);

#endif /* CNNKIT_INTERNAL_H */
