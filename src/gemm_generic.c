/*
 * gemm_generic.c -- the portable GEMM engine: plain C99 that any compiler
 * builds for any CPU (with GNU C, vector extensions that the compiler maps
 * onto the baseline's registers).  It is the whole engine off x86-64 and
 * the fallback on x86-64 CPUs without AVX2+FMA.
 *
 * float: 6 x 16 tile; double: 6 x 8 tile; KC 256, MC 96, NC 1024.
 */
#include <string.h>

#include "gemm_engine.h"

/* The micro-kernel: tile = ap (MR x kc) @ bp (kc x NR) accumulated in
 * registers (or a local array), then the epilogue on the mr x nr corner. */
#if defined(__GNUC__)
#define MICRO_TILE(tile, kc, ap, bp)                                       \
    do {                                                                   \
        SFX(vec_t) acc_[MR];                                               \
        for (int i_ = 0; i_ < MR; i_++)                                    \
            acc_[i_] = (SFX(vec_t)){0};                                    \
        for (ptrdiff_t p_ = 0; p_ < (kc); p_++) {                          \
            SFX(vec_t) bv_;                                                \
            memcpy(&bv_, (bp) + p_ * NR, sizeof bv_);                      \
            const REAL *restrict av_ = (ap) + p_ * MR;                     \
            for (int i_ = 0; i_ < MR; i_++)                                \
                acc_[i_] += av_[i_] * bv_;                                 \
        }                                                                  \
        memcpy((tile), acc_, sizeof acc_);                                 \
    } while (0)
#else
#define MICRO_TILE(tile, kc, ap, bp)                                       \
    do {                                                                   \
        for (int i_ = 0; i_ < MR; i_++)                                    \
            for (int j_ = 0; j_ < NR; j_++)                                \
                (tile)[i_][j_] = 0;                                        \
        for (ptrdiff_t p_ = 0; p_ < (kc); p_++)                            \
            for (int i_ = 0; i_ < MR; i_++)                                \
                for (int j_ = 0; j_ < NR; j_++)                            \
                    (tile)[i_][j_] += (ap)[p_ * MR + i_] * (bp)[p_ * NR + j_]; \
    } while (0)
#endif

#define GENERIC_MICRO                                                      \
    static void SFX(micro)(ptrdiff_t kc, const REAL *ap, const REAL *bp,   \
                           REAL *c, ptrdiff_t ldc, ptrdiff_t mr,           \
                           ptrdiff_t nr, REAL alpha, REAL beta, int first) \
    {                                                                      \
        REAL tile[MR][NR];                                                 \
        MICRO_TILE(tile, kc, ap, bp);                                      \
        for (ptrdiff_t i = 0; i < mr; i++) {                               \
            REAL *restrict ci = c + i * ldc;                               \
            if (!first) {                                                  \
                for (ptrdiff_t j = 0; j < nr; j++)                         \
                    ci[j] += alpha * tile[i][j];                           \
            } else if (beta == 0) {                                        \
                for (ptrdiff_t j = 0; j < nr; j++)                         \
                    ci[j] = alpha * tile[i][j];                            \
            } else {                                                       \
                for (ptrdiff_t j = 0; j < nr; j++)                         \
                    ci[j] = beta * ci[j] + alpha * tile[i][j];             \
            }                                                              \
        }                                                                  \
    }

#define REAL float
#define SFX(name) name##_f32_generic
#define MR 6
#define NR 16
#define KC 256
#define MC 96
#define NC 1024
#if defined(__GNUC__)
typedef REAL SFX(vec_t) __attribute__((vector_size(NR * sizeof(REAL))));
#endif
GENERIC_MICRO
#include "gemm_impl.h"
#include "winograd_engine.h"
#include "gemm_undef.h"

#define REAL double
#define SFX(name) name##_f64_generic
#define MR 6
#define NR 8
#define KC 256
#define MC 96
#define NC 1024
#if defined(__GNUC__)
typedef REAL SFX(vec_t) __attribute__((vector_size(NR * sizeof(REAL))));
#endif
GENERIC_MICRO
#include "gemm_impl.h"
#include "winograd_engine.h"

CNNKIT_ENGINE_WORKSPACE(generic)

CNNKIT_ENGINE_WINOGRAD(generic)

const cnnkit_gemm_engine cnnkit_gemm_engine_generic = {
    "generic", "generic", gemm_workspace_generic,
    gemm_f32_generic, gemm_f64_generic,
    gemm_parallel_f32_generic, gemm_parallel_f64_generic,
    /* no direct convolution: the im2col path serves */
    NULL, NULL, NULL, NULL, NULL, NULL,
    /* the depthwise passes: conv2d.c's plain C kernels */
    NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL,   /* nothing packed ahead */
    conv_wg_workspace_generic, wg_forward_f32_generic, wg_forward_f64_generic,
    NULL, NULL, NULL,   /* no Winograd weight gradient */
    NULL, NULL, NULL,   /* dense.c's tree of whole tiles */
    NULL, NULL, NULL, NULL,   /* no blocked convolution */
    NULL, NULL, NULL, NULL,   /* max pooling: pool2d.c's loops */
};
