/* gemm_engine.h -- the GEMM engines of the SIMD paths and the dispatcher
 * that picks one; internal to the library.
 *
 * Each path (AVX-512, AVX2+FMA, generic C) compiles the whole engine --
 * packing, block driver, micro-kernel, thread split -- from gemm_impl.h in
 * its own translation unit with its own instruction-set flags, and exports
 * one table of entry points.  gemm.c, compiled with no instruction-set
 * flags, chooses a table once per process from the CPU's features and the
 * CNNKIT_SIMD environment variable. */
#ifndef CNNKIT_GEMM_ENGINE_H
#define CNNKIT_GEMM_ENGINE_H

#include "internal.h"

typedef void (*cnnkit_gemm_f32_fn)(int, int, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                   float, const float *, ptrdiff_t,
                                   const float *, ptrdiff_t, float, float *,
                                   ptrdiff_t, float *);
typedef void (*cnnkit_gemm_f64_fn)(int, int, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                   double, const double *, ptrdiff_t,
                                   const double *, ptrdiff_t, double,
                                   double *, ptrdiff_t, double *);
typedef void (*cnnkit_gemm_par_f32_fn)(int, int, ptrdiff_t, ptrdiff_t,
                                       ptrdiff_t, float, const float *,
                                       ptrdiff_t, const float *, ptrdiff_t,
                                       float, float *, ptrdiff_t, float *,
                                       int);
typedef void (*cnnkit_gemm_par_f64_fn)(int, int, ptrdiff_t, ptrdiff_t,
                                       ptrdiff_t, double, const double *,
                                       ptrdiff_t, const double *, ptrdiff_t,
                                       double, double *, ptrdiff_t, double *,
                                       int);

typedef struct cnnkit_gemm_engine {
    const char *name;   /* "AVX-512", "AVX2+FMA", "generic"  */
    const char *key;    /* its CNNKIT_SIMD value             */
    /* workspace (elements) of one serial call, either type */
    ptrdiff_t (*workspace)(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k);
    cnnkit_gemm_f32_fn gemm_f32;
    cnnkit_gemm_f64_fn gemm_f64;
    cnnkit_gemm_par_f32_fn gemm_parallel_f32;
    cnnkit_gemm_par_f64_fn gemm_parallel_f64;
    /* The direct convolution forward (conv_direct_simd.h), or NULL: the
     * workspace (elements) it needs for g, 0 when it does not compute g.
     * relu != 0 applies a ReLU to the output in the epilogue. */
    ptrdiff_t (*conv_direct_workspace)(const cnnkit_conv2d_geom *g,
                                       int nthreads, int f64);
    void (*conv_direct_f32)(float *y, const float *x, const float *w,
                            const float *packed, const float *bias,
                            int relu, float *work,
                            const cnnkit_conv2d_geom *g, int nthreads);
    void (*conv_direct_f64)(double *y, const double *x, const double *w,
                            const double *packed, const double *bias,
                            int relu, double *work,
                            const cnnkit_conv2d_geom *g, int nthreads);
    /* The direct weight gradient, per run of images (see
     * conv_direct_weight in conv_direct_simd.h), or NULL; its workspace
     * is 0 when it does not compute g. */
    ptrdiff_t (*conv_direct_weight_workspace)(const cnnkit_conv2d_geom *g,
                                              int nthreads, int f64);
    void (*conv_direct_weight_f32)(float *gw, ptrdiff_t wstride,
                                   const float *gy, const float *x,
                                   const int64_t *bounds, ptrdiff_t nparts,
                                   float *work, const cnnkit_conv2d_geom *g,
                                   int nthreads);
    void (*conv_direct_weight_f64)(double *gw, ptrdiff_t wstride,
                                   const double *gy, const double *x,
                                   const int64_t *bounds, ptrdiff_t nparts,
                                   double *work, const cnnkit_conv2d_geom *g,
                                   int nthreads);
    /* The depthwise passes (conv_depthwise_simd.h), or NULL: each returns
     * 0, writing nothing, when it does not compute g. */
    int (*dw_forward_f32)(float *y, const float *x, const float *w,
                          const float *bias, int relu, float *work,
                          const cnnkit_conv2d_geom *g, int nthreads);
    int (*dw_forward_f64)(double *y, const double *x, const double *w,
                          const double *bias, int relu, double *work,
                          const cnnkit_conv2d_geom *g, int nthreads);
    int (*dw_backward_data_f32)(float *gx, const float *gy, const float *w,
                                float *work, const cnnkit_conv2d_geom *g,
                                int nthreads);
    int (*dw_backward_data_f64)(double *gx, const double *gy,
                                const double *w, double *work,
                                const cnnkit_conv2d_geom *g, int nthreads);
    int (*dw_backward_weight_f32)(float *gw, ptrdiff_t wstride,
                                  const float *gy, const float *x,
                                  const int64_t *bounds, ptrdiff_t nparts,
                                  float *work, const cnnkit_conv2d_geom *g,
                                  int nthreads);
    int (*dw_backward_weight_f64)(double *gw, ptrdiff_t wstride,
                                  const double *gy, const double *x,
                                  const int64_t *bounds, ptrdiff_t nparts,
                                  double *work, const cnnkit_conv2d_geom *g,
                                  int nthreads);
    /* The forward's weights packed ahead (conv_direct_pack), or NULL:
     * their size in elements (0: the engine packs none for g), and the
     * packing. */
    ptrdiff_t (*conv_direct_packed_size)(const cnnkit_conv2d_geom *g,
                                         int f64);
    void (*conv_direct_pack_f32)(float *ap, const float *w,
                                 const cnnkit_conv2d_geom *g);
    void (*conv_direct_pack_f64)(double *ap, const double *w,
                                 const cnnkit_conv2d_geom *g);
    /* Winograd's F(2x2, 3x3) forward (winograd_engine.h): its workspace,
     * 0 when it does not compute g, and the pass, which returns 0 without
     * writing y when it does not take g. */
    ptrdiff_t (*wg_workspace)(const cnnkit_conv2d_geom *g, int nthreads,
                              int f64);
    int (*wg_forward_f32)(float *y, const float *x, const float *w,
                          const float *bias, int relu, float *work,
                          const cnnkit_conv2d_geom *g, int nthreads);
    int (*wg_forward_f64)(double *y, const double *x, const double *w,
                          const double *bias, int relu, double *work,
                          const cnnkit_conv2d_geom *g, int nthreads);
    /* Winograd's F(4x4, 3x3) weight gradient (winograd_engine.h), or
     * NULL: its workspace, 0 when it does not compute g, and the pass,
     * which returns 0 without writing gw when it does not take g. */
    ptrdiff_t (*ww_workspace)(const cnnkit_conv2d_geom *g, int nthreads,
                              int f64);
    int (*ww_weight_f32)(float *gw, ptrdiff_t wstride, int *done,
                         const float *gy, const float *x,
                         const int64_t *bounds, ptrdiff_t nparts,
                         ptrdiff_t min_tiles, float *work,
                         const cnnkit_conv2d_geom *g, int nthreads);
    int (*ww_weight_f64)(double *gw, ptrdiff_t wstride, int *done,
                         const double *gy, const double *x,
                         const int64_t *bounds, ptrdiff_t nparts,
                         ptrdiff_t min_tiles, double *work,
                         const cnnkit_conv2d_geom *g, int nthreads);
    /* The dense weight gradient's tree of parts (wtree in gemm_impl.h),
     * or NULL: its workspace for gy of n rows and o columns on nthreads
     * threads (elements of the larger of both types' needs), and the
     * pass. */
    ptrdiff_t (*wtree_workspace)(ptrdiff_t n, ptrdiff_t o, ptrdiff_t nparts,
                                 int nthreads);
    void (*wtree_f32)(float *gw, const float *gy, const float *x,
                      const int64_t *bounds, ptrdiff_t nparts, float *work,
                      ptrdiff_t f, ptrdiff_t o, int nthreads);
    void (*wtree_f64)(double *gw, const double *gy, const double *x,
                      const int64_t *bounds, ptrdiff_t nparts, double *work,
                      ptrdiff_t f, ptrdiff_t o, int nthreads);
    /* The compiled plans' convolution on channel-blocked tensors
     * (conv_blocked_simd.h), or NULL: its lanes per block (0: none), its
     * workspace for g from an input with border pin (CNNKIT_BLOCKED_PLAIN:
     * a plain input) (0 when it does not compute g) and the pass, which
     * returns 0 without writing y when it does not take g. */
    ptrdiff_t (*blocked_lanes)(int f64);
    ptrdiff_t (*blocked_workspace)(const cnnkit_conv2d_geom *g, int wino,
                                   ptrdiff_t pin, int nthreads, int f64);
    int (*conv_blocked_f32)(float *y, const float *x, const float *wt,
                            const float *wino, const float *bias, int relu,
                            const float *res, ptrdiff_t pin, ptrdiff_t pout,
                            float *work, const cnnkit_conv2d_geom *g,
                            int nthreads);
    int (*conv_blocked_f64)(double *y, const double *x, const double *wt,
                            const double *wino, const double *bias,
                            int relu, const double *res, ptrdiff_t pin,
                            ptrdiff_t pout, double *work,
                            const cnnkit_conv2d_geom *g, int nthreads);
    /* Planes [p0, p1) of a 2x2 stride-2 max pooling of two full rows and
     * columns per window (pool_simd.h), or NULL: pool2d.c's values,
     * indices (none where idx is NULL) and winners' places in their
     * windows (none where taps is NULL), bit for bit. */
    void (*max2x2_f32)(float *y, int64_t *idx, uint8_t *taps,
                       const float *x, const cnnkit_pool2d_geom *g,
                       ptrdiff_t p0, ptrdiff_t p1);
    void (*max2x2_f64)(double *y, int64_t *idx, uint8_t *taps,
                       const double *x, const cnnkit_pool2d_geom *g,
                       ptrdiff_t p0, ptrdiff_t p1);
    /* Its backward from the winners' places (pool_simd.h), planes [p0,
     * p1), or NULL: cnnkit_max_pool2x2_taps_backward's bits. */
    void (*max2x2_back_f32)(float *gx, const float *gy,
                            const uint8_t *taps, const float *y,
                            const cnnkit_pool2d_geom *g, ptrdiff_t p0,
                            ptrdiff_t p1);
    void (*max2x2_back_f64)(double *gx, const double *gy,
                            const uint8_t *taps, const double *y,
                            const cnnkit_pool2d_geom *g, ptrdiff_t p0,
                            ptrdiff_t p1);
} cnnkit_gemm_engine;

extern const cnnkit_gemm_engine cnnkit_gemm_engine_generic;
#ifdef CNNKIT_HAVE_GEMM_AVX2
extern const cnnkit_gemm_engine cnnkit_gemm_engine_avx2;
#endif
#ifdef CNNKIT_HAVE_GEMM_AVX512
extern const cnnkit_gemm_engine cnnkit_gemm_engine_avx512;
#endif

/* How the active engine was chosen. */
enum {
    CNNKIT_SIMD_AUTO = 0,        /* CNNKIT_SIMD unset, empty or "auto"     */
    CNNKIT_SIMD_FORCED = 1,      /* CNNKIT_SIMD named a path; it runs      */
    CNNKIT_SIMD_UNSUPPORTED = 2, /* named a path this CPU/build lacks      */
    CNNKIT_SIMD_UNKNOWN = 3      /* a value that names no path             */
};

/* The engine in use (chosen at the first call, thread-safely) and how. */
const cnnkit_gemm_engine *cnnkit_gemm_active(int *how);

/* Bodies shared by the engines' tables. */
#define CNNKIT_ENGINE_WORKSPACE(path)                                       \
    static ptrdiff_t gemm_workspace_##path(ptrdiff_t m, ptrdiff_t n,        \
                                           ptrdiff_t k)                     \
    {                                                                       \
        ptrdiff_t a = workspace_f32_##path(m, n, k);                        \
        ptrdiff_t b = workspace_f64_##path(m, n, k);                        \
        return CNNKIT_MAX(a, b);                                            \
    }

#define CNNKIT_ENGINE_DIRECT(path)                                          \
    static ptrdiff_t conv_direct_workspace_##path(                          \
        const cnnkit_conv2d_geom *g, int nthreads, int f64)                 \
    {                                                                       \
        return f64 ? direct_workspace_f64_##path(g, nthreads)               \
                   : direct_workspace_f32_##path(g, nthreads);              \
    }                                                                       \
    static ptrdiff_t conv_direct_weight_workspace_##path(                   \
        const cnnkit_conv2d_geom *g, int nthreads, int f64)                 \
    {                                                                       \
        return f64 ? direct_weight_workspace_f64_##path(g, nthreads)        \
                   : direct_weight_workspace_f32_##path(g, nthreads);       \
    }

#define CNNKIT_ENGINE_PACKED(path)                                          \
    static ptrdiff_t conv_direct_packed_size_##path(                        \
        const cnnkit_conv2d_geom *g, int f64)                               \
    {                                                                       \
        return f64 ? direct_packed_size_f64_##path(g)                       \
                   : direct_packed_size_f32_##path(g);                      \
    }

#define CNNKIT_ENGINE_WINOGRAD(path)                                        \
    static ptrdiff_t conv_wg_workspace_##path(const cnnkit_conv2d_geom *g,  \
                                              int nthreads, int f64)        \
    {                                                                       \
        return f64 ? wg_workspace_f64_##path(g, nthreads)                   \
                   : wg_workspace_f32_##path(g, nthreads);                  \
    }

#define CNNKIT_ENGINE_WINOGRAD_WEIGHT(path)                                 \
    static ptrdiff_t conv_ww_workspace_##path(const cnnkit_conv2d_geom *g,  \
                                              int nthreads, int f64)        \
    {                                                                       \
        return f64 ? ww_workspace_f64_##path(g, nthreads)                   \
                   : ww_workspace_f32_##path(g, nthreads);                  \
    }

#define CNNKIT_ENGINE_WTREE(path)                                           \
    static ptrdiff_t wtree_workspace_##path(ptrdiff_t n, ptrdiff_t o,       \
                                            ptrdiff_t nparts, int nthreads) \
    {                                                                       \
        ptrdiff_t a = wtree_size_f32_##path(n, o, nparts, nthreads);        \
        ptrdiff_t b = wtree_size_f64_##path(n, o, nparts, nthreads);        \
        return CNNKIT_MAX(a, b);                                            \
    }

#define CNNKIT_ENGINE_BLOCKED(path)                                         \
    static ptrdiff_t blocked_lanes_##path(int f64)                          \
    {                                                                       \
        return f64 ? 8 : 16;                                                \
    }                                                                       \
    static ptrdiff_t blocked_ws_##path(const cnnkit_conv2d_geom *g,        \
                                       int wino, ptrdiff_t pin,             \
                                       int nthreads, int f64)               \
    {                                                                       \
        if (pin == CNNKIT_BLOCKED_PLAIN)                                    \
            return wino ? 0                                                 \
                   : f64 ? (plain_fits_f64_##path(g)                        \
                              ? plain_workspace_f64_##path(g, nthreads)     \
                              : 0)                                          \
                       : (plain_fits_f32_##path(g)                          \
                              ? plain_workspace_f32_##path(g, nthreads)     \
                              : 0);                                         \
        if (f64)                                                            \
            return (wino ? wino_fits_f64_##path(g)                          \
                         : blocked_fits_f64_##path(g))                      \
                       ? blocked_workspace_f64_##path(g, wino, nthreads)    \
                       : 0;                                                 \
        return (wino ? wino_fits_f32_##path(g) : blocked_fits_f32_##path(g)) \
                   ? blocked_workspace_f32_##path(g, wino, nthreads) : 0;   \
    }

#endif /* CNNKIT_GEMM_ENGINE_H */
