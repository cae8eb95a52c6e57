/*
 * gemm.c -- the GEMM entry points and the choice of SIMD path.
 *
 * Design
 * ------
 * C (m, n) = alpha * op(A) (m, k) @ op(B) (k, n) + beta * C, row-major: the
 * engine under conv2d and dense.  Each SIMD path is a complete engine built
 * from gemm_impl.h (three-level blocking: KC-deep slabs of k, NC-wide
 * panels of op(B) packed into NR-wide strips, MC-tall blocks of op(A)
 * packed into MR-tall strips, an MR x NR register-tiled micro-kernel) in
 * its own translation unit with its own instruction-set flags:
 *
 *   path      file            float: tile  KC   MC   double: tile  KC   MC
 *   avx512    gemm_avx512.c   12 x 32      512  96           12 x 16  256  120
 *   avx2      gemm_avx2.c      6 x 16      512  96            6 x 8   256   96
 *   generic   gemm_generic.c   6 x 16      256  96            6 x 8   256   96
 *   (NC = 1024 everywhere)
 *
 * This file is compiled with no instruction-set flags.  At the first GEMM
 * (or the first question about the path) it picks the best engine the CPU
 * and the OS support (__builtin_cpu_supports checks both), or the one that
 * CNNKIT_SIMD=avx512|avx2|generic asks for; a request the machine cannot
 * honour falls back to the best supported path and is reported by
 * cnnkit_simd_path().  The choice never changes afterwards.
 *
 * Determinism: every element of C is computed as
 *     c = beta*c + alpha*acc(slab 0);  c += alpha*acc(slab 1); ...
 * with each acc summed over its slab in increasing k by the same
 * operations wherever the element's tile lies (partial tiles run the same
 * code on fewer rows / masked lanes).  That order depends on k and on the
 * path alone, never on how C is tiled or split over threads, so results
 * are bit-identical for any thread count and a row of C does not depend on
 * m.  Different paths may differ in the last bits (FMA rounds once).
 */
#include <stdlib.h>
#include <string.h>

#include "gemm_engine.h"

static int cnnkit_path_supported(const cnnkit_gemm_engine *e)
{
#ifdef CNNKIT_HAVE_GEMM_AVX512
    if (e == &cnnkit_gemm_engine_avx512) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma");
    }
#endif
#ifdef CNNKIT_HAVE_GEMM_AVX2
    if (e == &cnnkit_gemm_engine_avx2) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma");
    }
#endif
    return e == &cnnkit_gemm_engine_generic;
}

/* The engines built, best first. */
static const cnnkit_gemm_engine *const cnnkit_engines[] = {
#ifdef CNNKIT_HAVE_GEMM_AVX512
    &cnnkit_gemm_engine_avx512,
#endif
#ifdef CNNKIT_HAVE_GEMM_AVX2
    &cnnkit_gemm_engine_avx2,
#endif
    &cnnkit_gemm_engine_generic,
};
#define CNNKIT_N_ENGINES (sizeof cnnkit_engines / sizeof cnnkit_engines[0])

/* The keys CNNKIT_SIMD accepts, best first (whether built or not). */
static const char *const cnnkit_simd_keys[] = {"avx512", "avx2", "generic"};

static int cnnkit_key_is(const char *s, const char *key)
{
    /* case-insensitive comparison, ASCII only */
    for (; *s && *key; s++, key++) {
        char ch = *s;
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (ch != *key)
            return 0;
    }
    return *s == 0 && *key == 0;
}

static const cnnkit_gemm_engine *cnnkit_select(int *how)
{
    const cnnkit_gemm_engine *best = &cnnkit_gemm_engine_generic;
    for (size_t i = 0; i < CNNKIT_N_ENGINES; i++)
        if (cnnkit_path_supported(cnnkit_engines[i])) {
            best = cnnkit_engines[i];
            break;
        }
    const char *req = getenv("CNNKIT_SIMD");
    if (req == NULL || req[0] == 0 || cnnkit_key_is(req, "auto")) {
        *how = CNNKIT_SIMD_AUTO;
        return best;
    }
    if (cnnkit_key_is(req, "baseline"))
        req = "generic";
    int known = 0;
    for (size_t i = 0; i < sizeof cnnkit_simd_keys / sizeof *cnnkit_simd_keys;
         i++)
        known |= cnnkit_key_is(req, cnnkit_simd_keys[i]);
    if (!known) {
        *how = CNNKIT_SIMD_UNKNOWN;
        return best;
    }
    for (size_t i = 0; i < CNNKIT_N_ENGINES; i++)
        if (cnnkit_key_is(req, cnnkit_engines[i]->key) &&
            cnnkit_path_supported(cnnkit_engines[i])) {
            *how = CNNKIT_SIMD_FORCED;
            return cnnkit_engines[i];
        }
    *how = CNNKIT_SIMD_UNSUPPORTED;
    return best;
}

/* The choice, published once.  Racing first calls compute the same answer
 * (it depends only on the CPU and the environment) and store it atomically;
 * `how` is stored before the engine and read after it. */
static const cnnkit_gemm_engine *cnnkit_active_engine = NULL;
static int cnnkit_active_how = 0;

const cnnkit_gemm_engine *cnnkit_gemm_active(int *how)
{
#if defined(__GNUC__) || defined(__clang__)
    const cnnkit_gemm_engine *e =
        __atomic_load_n(&cnnkit_active_engine, __ATOMIC_ACQUIRE);
    if (e == NULL) {
        int h = 0;
        e = cnnkit_select(&h);
        __atomic_store_n(&cnnkit_active_how, h, __ATOMIC_RELAXED);
        __atomic_store_n(&cnnkit_active_engine, e, __ATOMIC_RELEASE);
    }
    if (how)
        *how = __atomic_load_n(&cnnkit_active_how, __ATOMIC_RELAXED);
#else
    /* other compilers: aligned pointer and int stores are atomic on the
     * platforms they target, and every racing writer stores the same */
    const cnnkit_gemm_engine *volatile *slot =
        (const cnnkit_gemm_engine *volatile *)&cnnkit_active_engine;
    const cnnkit_gemm_engine *e = *slot;
    if (e == NULL) {
        int h = 0;
        e = cnnkit_select(&h);
        *(volatile int *)&cnnkit_active_how = h;
        *slot = e;
    }
    if (how)
        *how = *(volatile int *)&cnnkit_active_how;
#endif
    return e;
}

ptrdiff_t cnnkit_gemm_workspace(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k)
{
    return cnnkit_gemm_active(NULL)->workspace(m, n, k);
}

void cnnkit_gemm_f32(int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n,
                     ptrdiff_t k, float alpha, const float *a, ptrdiff_t lda,
                     const float *b, ptrdiff_t ldb, float beta, float *c,
                     ptrdiff_t ldc, float *work)
{
    cnnkit_gemm_active(NULL)->gemm_f32(trans_a, trans_b, m, n, k, alpha, a,
                                       lda, b, ldb, beta, c, ldc, work);
}

void cnnkit_gemm_f64(int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n,
                     ptrdiff_t k, double alpha, const double *a,
                     ptrdiff_t lda, const double *b, ptrdiff_t ldb,
                     double beta, double *c, ptrdiff_t ldc, double *work)
{
    cnnkit_gemm_active(NULL)->gemm_f64(trans_a, trans_b, m, n, k, alpha, a,
                                       lda, b, ldb, beta, c, ldc, work);
}

void cnnkit_gemm_parallel_f32(int trans_a, int trans_b, ptrdiff_t m,
                              ptrdiff_t n, ptrdiff_t k, float alpha,
                              const float *a, ptrdiff_t lda, const float *b,
                              ptrdiff_t ldb, float beta, float *c,
                              ptrdiff_t ldc, float *work, int nthreads)
{
    cnnkit_gemm_active(NULL)->gemm_parallel_f32(trans_a, trans_b, m, n, k,
                                                alpha, a, lda, b, ldb, beta,
                                                c, ldc, work, nthreads);
}

void cnnkit_gemm_parallel_f64(int trans_a, int trans_b, ptrdiff_t m,
                              ptrdiff_t n, ptrdiff_t k, double alpha,
                              const double *a, ptrdiff_t lda,
                              const double *b, ptrdiff_t ldb, double beta,
                              double *c, ptrdiff_t ldc, double *work,
                              int nthreads)
{
    cnnkit_gemm_active(NULL)->gemm_parallel_f64(trans_a, trans_b, m, n, k,
                                                alpha, a, lda, b, ldb, beta,
                                                c, ldc, work, nthreads);
}

/* ---- direct convolution ------------------------------------------------
 * The direct paths run where the active engine has them and they apply to
 * g, unless g->im2col_only asks for the lowering onto GEMM. */

/* An engine's workspace function for one direct pass (NULL when it has
 * none), as (g, nthreads, f64) -> elements, 0 when it does not compute g. */
typedef ptrdiff_t (*cnnkit_direct_ws_fn)(const cnnkit_conv2d_geom *, int,
                                         int);

/* The larger of the two element types' needs (workspaces are sized before
 * the type is known); 0 when the pass never takes the direct path. */
static ptrdiff_t cnnkit_direct_ws(cnnkit_direct_ws_fn ws,
                                  const cnnkit_conv2d_geom *g, int nthreads)
{
    if (!ws || g->im2col_only)
        return 0;
    return CNNKIT_MAX(ws(g, nthreads, 0), ws(g, nthreads, 1));
}

static int cnnkit_direct_allowed(cnnkit_direct_ws_fn ws,
                                 const cnnkit_conv2d_geom *g, int nthreads,
                                 int f64)
{
    return !g->im2col_only && ws && ws(g, nthreads, f64) > 0;
}

ptrdiff_t cnnkit_conv_direct_workspace(const cnnkit_conv2d_geom *g,
                                       int nthreads)
{
    return cnnkit_direct_ws(cnnkit_gemm_active(NULL)->conv_direct_workspace,
                            g, nthreads);
}

ptrdiff_t cnnkit_conv_direct_weight_workspace(const cnnkit_conv2d_geom *g,
                                              int nthreads)
{
    return cnnkit_direct_ws(
        cnnkit_gemm_active(NULL)->conv_direct_weight_workspace, g, nthreads);
}

int cnnkit_conv_direct_applies(const cnnkit_conv2d_geom *g, int nthreads,
                               int f64)
{
    return cnnkit_direct_allowed(
        cnnkit_gemm_active(NULL)->conv_direct_workspace, g, nthreads, f64);
}

int cnnkit_conv_direct_weight_applies(const cnnkit_conv2d_geom *g,
                                      int nthreads, int f64)
{
    return cnnkit_direct_allowed(
        cnnkit_gemm_active(NULL)->conv_direct_weight_workspace, g, nthreads,
        f64);
}

/* The passes themselves, per element type: 0 (nothing written) when the
 * direct path does not compute g. */
#define CNNKIT_DIRECT_ENTRIES(T, SUF, F64)                                  \
    int cnnkit_conv_direct_##SUF(T *y, const T *x, const T *w,             \
                                 const T *packed, const T *bias, int relu, \
                                 T *work, const cnnkit_conv2d_geom *g,     \
                                 int nthreads)                             \
    {                                                                       \
        if (!cnnkit_conv_direct_applies(g, nthreads, F64))                  \
            return 0;                                                       \
        cnnkit_gemm_active(NULL)->conv_direct_##SUF(                        \
            y, x, w, packed, bias, relu, work, g, nthreads);                \
        return 1;                                                           \
    }                                                                       \
    void cnnkit_conv_direct_pack_##SUF(T *ap, const T *w,                  \
                                       const cnnkit_conv2d_geom *g)        \
    {                                                                       \
        cnnkit_gemm_active(NULL)->conv_direct_pack_##SUF(ap, w, g);         \
    }                                                                       \
    int cnnkit_conv_direct_weight_##SUF(                                    \
        T *gw, ptrdiff_t wstride, const T *gy, const T *x,                  \
        const int64_t *bounds, ptrdiff_t nparts, T *work,                   \
        const cnnkit_conv2d_geom *g, int nthreads)                          \
    {                                                                       \
        if (!cnnkit_conv_direct_weight_applies(g, nthreads, F64))           \
            return 0;                                                       \
        cnnkit_gemm_active(NULL)->conv_direct_weight_##SUF(                 \
            gw, wstride, gy, x, bounds, nparts, work, g, nthreads);         \
        return 1;                                                           \
    }

/* ---- the plans' blocked convolution ------------------------------------ */

ptrdiff_t cnnkit_blocked_lanes(int f64)
{
    const cnnkit_gemm_engine *e = cnnkit_gemm_active(NULL);
    return e->blocked_lanes ? e->blocked_lanes(f64) : 0;
}

int cnnkit_conv_blocked_applies(const cnnkit_conv2d_geom *g, ptrdiff_t pin,
                                int wino, int f64)
{
    /* the workspace is 0 where the pass does not take g (from a plain
     * input: never with wino) */
    return cnnkit_conv_blocked_workspace(g, wino, pin, 1, f64) > 0 &&
           (pin == CNNKIT_BLOCKED_PLAIN ||
            cnnkit_blocked_border_holds(g, pin));
}

ptrdiff_t cnnkit_conv_blocked_workspace(const cnnkit_conv2d_geom *g,
                                        int wino, ptrdiff_t pin,
                                        int nthreads, int f64)
{
    const cnnkit_gemm_engine *e = cnnkit_gemm_active(NULL);
    if (pin < 0 && pin != CNNKIT_BLOCKED_PLAIN)
        return 0;
    return e->blocked_workspace
               ? e->blocked_workspace(g, wino, pin, nthreads, f64) : 0;
}

#define CNNKIT_BLOCKED_ENTRY(T, SUF)                                        \
    int cnnkit_conv_blocked_##SUF(T *y, const T *x, const T *wt,           \
                                  const T *wino, const T *bias, int relu,  \
                                  const T *res, ptrdiff_t pin,             \
                                  ptrdiff_t pout, T *work,                 \
                                  const cnnkit_conv2d_geom *g,             \
                                  int nthreads)                            \
    {                                                                       \
        const cnnkit_gemm_engine *e = cnnkit_gemm_active(NULL);             \
        return e->conv_blocked_##SUF &&                                     \
               e->conv_blocked_##SUF(y, x, wt, wino, bias, relu, res, pin,  \
                                     pout, work, g, nthreads);              \
    }
CNNKIT_BLOCKED_ENTRY(float, f32)
CNNKIT_BLOCKED_ENTRY(double, f64)
#undef CNNKIT_BLOCKED_ENTRY

ptrdiff_t cnnkit_conv_direct_packed_size(const cnnkit_conv2d_geom *g,
                                         int f64)
{
    const cnnkit_gemm_engine *e = cnnkit_gemm_active(NULL);
    return e->conv_direct_packed_size ? e->conv_direct_packed_size(g, f64)
                                      : 0;
}

CNNKIT_DIRECT_ENTRIES(float, f32, 0)
CNNKIT_DIRECT_ENTRIES(double, f64, 1)
#undef CNNKIT_DIRECT_ENTRIES

#define CNNKIT_POOL_ENTRY(T, SUF)                                           \
    void cnnkit_max2x2_simd_##SUF(T *y, int64_t *idx, uint8_t *taps,       \
                                  const T *x, const cnnkit_pool2d_geom *g,  \
                                  ptrdiff_t p0, ptrdiff_t p1)               \
    {                                                                       \
        cnnkit_gemm_active(NULL)->max2x2_##SUF(y, idx, taps, x, g, p0, p1); \
    }                                                                       \
    void cnnkit_max2x2_back_simd_##SUF(T *gx, const T *gy,                 \
                                       const uint8_t *taps, const T *y,     \
                                       const cnnkit_pool2d_geom *g,         \
                                       ptrdiff_t p0, ptrdiff_t p1)          \
    {                                                                       \
        cnnkit_gemm_active(NULL)->max2x2_back_##SUF(gx, gy, taps, y, g, p0, \
                                                    p1);                    \
    }
CNNKIT_POOL_ENTRY(float, f32)
CNNKIT_POOL_ENTRY(double, f64)
#undef CNNKIT_POOL_ENTRY

int cnnkit_max2x2_simd(int f64)
{
    const cnnkit_gemm_engine *e = cnnkit_gemm_active(NULL);
    return f64 ? e->max2x2_f64 && e->max2x2_back_f64
               : e->max2x2_f32 && e->max2x2_back_f32;
}

/* The depthwise passes of the active engine: 0 (nothing written) where it
 * has none or they do not compute g. */
#define CNNKIT_DEPTHWISE_ENTRIES(T, SUF)                                    \
    int cnnkit_conv_dw_forward_##SUF(T *y, const T *x, const T *w,         \
                                     const T *bias, int relu, T *work,     \
                                     const cnnkit_conv2d_geom *g,          \
                                     int nthreads)                         \
    {                                                                       \
        const cnnkit_gemm_engine *e = cnnkit_gemm_active(NULL);             \
        return e->dw_forward_##SUF &&                                       \
               e->dw_forward_##SUF(y, x, w, bias, relu, work, g, nthreads); \
    }                                                                       \
    int cnnkit_conv_dw_backward_data_##SUF(T *gx, const T *gy, const T *w, \
                                           T *work,                         \
                                           const cnnkit_conv2d_geom *g,     \
                                           int nthreads)                    \
    {                                                                       \
        const cnnkit_gemm_engine *e = cnnkit_gemm_active(NULL);             \
        return e->dw_backward_data_##SUF &&                                 \
               e->dw_backward_data_##SUF(gx, gy, w, work, g, nthreads);     \
    }                                                                       \
    int cnnkit_conv_dw_backward_weight_##SUF(                               \
        T *gw, ptrdiff_t wstride, const T *gy, const T *x,                  \
        const int64_t *bounds, ptrdiff_t nparts, T *work,                   \
        const cnnkit_conv2d_geom *g, int nthreads)                          \
    {                                                                       \
        const cnnkit_gemm_engine *e = cnnkit_gemm_active(NULL);             \
        return e->dw_backward_weight_##SUF &&                               \
               e->dw_backward_weight_##SUF(gw, wstride, gy, x, bounds,      \
                                           nparts, work, g, nthreads);      \
    }

CNNKIT_DEPTHWISE_ENTRIES(float, f32)
CNNKIT_DEPTHWISE_ENTRIES(double, f64)
#undef CNNKIT_DEPTHWISE_ENTRIES

/* ---- reporting (show_config) ------------------------------------------ */
const char *cnnkit_simd_path(void)
{
    return cnnkit_gemm_active(NULL)->name;
}

const char *cnnkit_simd_request(void)
{
    int how = 0;
    cnnkit_gemm_active(&how);
    switch (how) {
    case CNNKIT_SIMD_FORCED:
        return "forced";
    case CNNKIT_SIMD_UNSUPPORTED:
        return "unsupported";
    case CNNKIT_SIMD_UNKNOWN:
        return "unknown";
    default:
        return "auto";
    }
}

const char *cnnkit_simd_paths_built(void)
{
#if defined(CNNKIT_HAVE_GEMM_AVX512) && defined(CNNKIT_HAVE_GEMM_AVX2)
    return "avx512 avx2 generic";
#elif defined(CNNKIT_HAVE_GEMM_AVX512)
    return "avx512 generic";
#elif defined(CNNKIT_HAVE_GEMM_AVX2)
    return "avx2 generic";
#else
    return "generic";
#endif
}

const char *cnnkit_simd_paths_supported(void)
{
    static const char *const names[] = {
        "avx512 avx2 generic", "avx512 generic", "avx2 generic", "generic"};
    int has512 = 0, has2 = 0;
    for (size_t i = 0; i < CNNKIT_N_ENGINES; i++) {
        if (!cnnkit_path_supported(cnnkit_engines[i]))
            continue;
        if (strcmp(cnnkit_engines[i]->key, "avx512") == 0)
            has512 = 1;
        else if (strcmp(cnnkit_engines[i]->key, "avx2") == 0)
            has2 = 1;
    }
    return names[has512 && has2 ? 0 : has512 ? 1 : has2 ? 2 : 3];
}

/* The dense weight gradient's tree of parts in the engine, or 0 (nothing
 * written) when the engine has none (dense_impl.h's tiles then serve). */
ptrdiff_t cnnkit_gemm_wtree_workspace(ptrdiff_t n, ptrdiff_t o,
                                      ptrdiff_t nparts, int nthreads)
{
    const cnnkit_gemm_engine *e = cnnkit_gemm_active(NULL);
    if (!e->wtree_workspace)
        return 0;
    return e->wtree_workspace(n, o, nparts, nthreads);
}

#define CNNKIT_WTREE_ENTRY(T, SUF)                                          \
    int cnnkit_gemm_wtree_##SUF(T *gw, const T *gy, const T *x,             \
                                const int64_t *bounds, ptrdiff_t nparts,    \
                                T *work, ptrdiff_t f, ptrdiff_t o,          \
                                int nthreads)                               \
    {                                                                       \
        const cnnkit_gemm_engine *e = cnnkit_gemm_active(NULL);             \
        if (!e->wtree_##SUF)                                                \
            return 0;                                                       \
        e->wtree_##SUF(gw, gy, x, bounds, nparts, work, f, o, nthreads);    \
        return 1;                                                           \
    }
CNNKIT_WTREE_ENTRY(float, f32)
CNNKIT_WTREE_ENTRY(double, f64)
