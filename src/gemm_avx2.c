/*
 * gemm_avx2.c -- the GEMM engine for CPUs with AVX2 and FMA.  Built alone
 * with those instruction-set flags; gemm.c calls it only after checking
 * that the CPU and the OS support them.
 *
 * float:  6 x 16 tile, 12 ymm accumulators (2 vectors per row);
 * double: 6 x 8 tile, 12 ymm accumulators.  With the 2 vectors of B and the
 * broadcast of A that makes 15 of the 16 ymm registers.  A packed KC x NR
 * strip of B (32 KiB for float with KC = 512, 16 KiB for double with
 * KC = 256) is reused by every strip of an MC x KC block of A in L2.
 * Partial tiles use vmaskmov loads and stores.
 */
#include <immintrin.h>
#include <string.h>

#include "conv_depthwise.h"
#include "gemm_engine.h"

#define VEC __m256
#define MASK __m256i
#define VL 8
#define VZERO() _mm256_setzero_ps()
#define VSET1(x) _mm256_set1_ps(x)
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VSTREAM(p, v) _mm256_stream_ps((p), (v))
#define VSFENCE() _mm_sfence()
#define VBCAST(p) _mm256_broadcast_ss(p)
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define VMUL(a, b) _mm256_mul_ps((a), (b))
#define VADD(a, b) _mm256_add_ps((a), (b))
#define VSUB(a, b) _mm256_sub_ps((a), (b))
/* v where v > m or v is NaN, else m (max pooling's rule) */
#define VMAXSEL(m, v) _mm256_blendv_ps((m), (v), _mm256_or_ps(           \
    _mm256_cmp_ps((v), (m), _CMP_GT_OQ), _mm256_cmp_ps((v), (v), _CMP_UNORD_Q)))
/* the larger bits as unsigned integers (for values that are +0, positive
 * or NaN: the rule's maximum unless one is NaN); whether a lane is NaN.
 * (No unsigned 64-bit maximum before AVX-512: float64 keeps the rule.) */
#define VMAXU(a, b) _mm256_castsi256_ps(_mm256_max_epu32(                \
    _mm256_castps_si256(a), _mm256_castps_si256(b)))
#define VANYNAN(v)                                                        \
    (_mm256_movemask_ps(_mm256_cmp_ps((v), (v), _CMP_UNORD_Q)) != 0)
/* the larger of two values neither of which is NaN */
#define VMAXF(a, b) _mm256_max_ps((a), (b))
#define VAND(a, b) _mm256_and_ps((a), (b))   /* bitwise */
#define VRELU(v) _mm256_and_ps(                                           \
    _mm256_cmp_ps((v), _mm256_setzero_ps(), _CMP_NLE_UQ), (v))
#define VMASK(n) _mm256_cmpgt_epi32(_mm256_set1_epi32(n), \
                                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define VLOAD_M(p, m) _mm256_maskload_ps((p), (m))
#define VMASK2(a, b) _mm256_andnot_si256(VMASK(a), VMASK(b)) /* [a, b) */
#define VMASKB(b) _mm256_cmpeq_epi32(_mm256_and_si256(                 \
    _mm256_set1_epi32((int)(b)), _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, \
    128)), _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128))
#define VSTORE_M(p, m, v) _mm256_maskstore_ps((p), (m), (v))
#define REAL float
#define SFX(name) name##_f32_avx2
#define MR 6
#define NR 16
#define KC 512
#define MC 96
#define NC 1024
#define WKB 3
#define WQB 4
/* the even elements of a, then of b (2 * VL in all) */
#define VEVEN(a, b) _mm256_castpd_ps(_mm256_permute4x64_pd(                 \
    _mm256_castps_pd(_mm256_shuffle_ps((a), (b), _MM_SHUFFLE(2, 0, 2, 0))), \
    _MM_SHUFFLE(3, 1, 2, 0)))
/* a0 b0 a1 b1 ... of the first, then of the second halves */
#define VZIPLO(a, b) _mm256_permute2f128_ps(_mm256_unpacklo_ps((a), (b)),  \
                                           _mm256_unpackhi_ps((a), (b)), 0x20)
#define VZIPHI(a, b) _mm256_permute2f128_ps(_mm256_unpacklo_ps((a), (b)),  \
                                           _mm256_unpackhi_ps((a), (b)), 0x31)
/* 0, then the odd elements of a and b (a1 a3 a5 a7 b1 b3 b5): columns
 * -1, 1, 3, ... of a row loaded from column 0 (dw_forward_s2; float32
 * only: in float64, vectors of 4 made the 28-wide stride-2 forward
 * 0.66x) */
#define VODDSH(a, b) _mm256_blend_ps(                                      \
    _mm256_permutevar8x32_ps(                                              \
        _mm256_castpd_ps(_mm256_permute4x64_pd(                            \
            _mm256_castps_pd(_mm256_shuffle_ps((a), (b),                   \
                                               _MM_SHUFFLE(3, 1, 3, 1))),  \
            _MM_SHUFFLE(3, 1, 2, 0))),                                     \
        _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6)),                        \
    _mm256_setzero_ps(), 1)
#define GEMM_ROW_T 1    /* gemm_row_t (gemm_impl.h), measured on this path */
#define RT_BYTES (2 << 20)  /* the whole b up to which it runs */
#include "gemm_micro_simd.h"
#include "gemm_impl.h"
#include "conv_direct_simd.h"
#include "conv_blocked_simd.h"
#include "winograd_engine.h"
#include "conv_depthwise_simd.h"
#undef VEVEN
#undef VODDSH
#undef VZIPLO
#undef VZIPHI
#include "gemm_undef.h"

#define VEC __m256d
#define MASK __m256i
#define VL 4
#define VZERO() _mm256_setzero_pd()
#define VSET1(x) _mm256_set1_pd(x)
#define VLOAD(p) _mm256_loadu_pd(p)
#define VSTORE(p, v) _mm256_storeu_pd((p), (v))
#define VSTREAM(p, v) _mm256_stream_pd((p), (v))
#define VSFENCE() _mm_sfence()
#define VBCAST(p) _mm256_broadcast_sd(p)
#define VFMA(a, b, c) _mm256_fmadd_pd((a), (b), (c))
#define VMUL(a, b) _mm256_mul_pd((a), (b))
#define VADD(a, b) _mm256_add_pd((a), (b))
#define VSUB(a, b) _mm256_sub_pd((a), (b))
#define VMAXSEL(m, v) _mm256_blendv_pd((m), (v), _mm256_or_pd(           \
    _mm256_cmp_pd((v), (m), _CMP_GT_OQ), _mm256_cmp_pd((v), (v), _CMP_UNORD_Q)))
#define VANYNAN(v)                                                        \
    (_mm256_movemask_pd(_mm256_cmp_pd((v), (v), _CMP_UNORD_Q)) != 0)
#define VMAXF(a, b) _mm256_max_pd((a), (b))
#define VAND(a, b) _mm256_and_pd((a), (b))   /* bitwise */
#define VRELU(v) _mm256_and_pd(                                           \
    _mm256_cmp_pd((v), _mm256_setzero_pd(), _CMP_NLE_UQ), (v))
#define VMASK(n) _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), \
                                    _mm256_setr_epi64x(0, 1, 2, 3))
#define VLOAD_M(p, m) _mm256_maskload_pd((p), (m))
#define VMASK2(a, b) _mm256_andnot_si256(VMASK(a), VMASK(b)) /* [a, b) */
#define VMASKB(b) _mm256_cmpeq_epi64(_mm256_and_si256(                 \
    _mm256_set1_epi64x((long long)(b)), _mm256_setr_epi64x(1, 2, 4, 8)),   \
    _mm256_setr_epi64x(1, 2, 4, 8))
#define VSTORE_M(p, m, v) _mm256_maskstore_pd((p), (m), (v))
#define REAL double
#define SFX(name) name##_f64_avx2
#define MR 6
#define NR 8
#define KC 256
#define MC 96
#define NC 1024
#define WKB 3
#define WQB 4
/* the even elements of a, then of b (2 * VL in all) */
#define VEVEN(a, b) _mm256_permute4x64_pd(_mm256_unpacklo_pd((a), (b)),   \
                                          _MM_SHUFFLE(3, 1, 2, 0))
/* a0 b0 a1 b1 ... of the first, then of the second halves */
#define VZIPLO(a, b) _mm256_permute2f128_pd(_mm256_unpacklo_pd((a), (b)),  \
                                           _mm256_unpackhi_pd((a), (b)), 0x20)
#define VZIPHI(a, b) _mm256_permute2f128_pd(_mm256_unpacklo_pd((a), (b)),  \
                                           _mm256_unpackhi_pd((a), (b)), 0x31)
#define GEMM_ROW_T 1    /* gemm_row_t (gemm_impl.h), measured on this path */
#define RT_BYTES (2 << 20)  /* the whole b up to which it runs */
#include "gemm_micro_simd.h"
#include "gemm_impl.h"
#include "conv_direct_simd.h"
#include "conv_blocked_simd.h"
#include "winograd_engine.h"
#include "conv_depthwise_simd.h"
#undef VEVEN
#undef VZIPLO
#undef VZIPHI
#undef GEMM_ROW_T
#undef RT_BYTES

CNNKIT_ENGINE_WORKSPACE(avx2)
CNNKIT_ENGINE_DIRECT(avx2)
CNNKIT_ENGINE_WINOGRAD(avx2)
CNNKIT_ENGINE_WINOGRAD_WEIGHT(avx2)
CNNKIT_ENGINE_PACKED(avx2)
CNNKIT_ENGINE_WTREE(avx2)
CNNKIT_ENGINE_BLOCKED(avx2)

const cnnkit_gemm_engine cnnkit_gemm_engine_avx2 = {
    "AVX2+FMA", "avx2", gemm_workspace_avx2,
    gemm_f32_avx2, gemm_f64_avx2,
    gemm_parallel_f32_avx2, gemm_parallel_f64_avx2,
    conv_direct_workspace_avx2, conv_direct_f32_avx2,
    conv_direct_f64_avx2, conv_direct_weight_workspace_avx2,
    conv_direct_weight_f32_avx2, conv_direct_weight_f64_avx2,
    dw_forward_simd_f32_avx2, dw_forward_simd_f64_avx2,
    dw_backward_data_simd_f32_avx2, dw_backward_data_simd_f64_avx2,
    dw_backward_weight_simd_f32_avx2, dw_backward_weight_simd_f64_avx2,
    conv_direct_packed_size_avx2, conv_direct_pack_f32_avx2,
    conv_direct_pack_f64_avx2,
    conv_wg_workspace_avx2, wg_forward_f32_avx2, wg_forward_f64_avx2,
    conv_ww_workspace_avx2, ww_entry_f32_avx2, ww_entry_f64_avx2,
    wtree_workspace_avx2, wtree_f32_avx2, wtree_f64_avx2,
    blocked_lanes_avx2, blocked_ws_avx2, conv_blocked_f32_avx2,
    conv_blocked_f64_avx2,
    NULL, NULL, NULL, NULL,   /* max pooling: pool2d.c's loops */
};
