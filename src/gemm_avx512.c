/*
 * gemm_avx512.c -- the GEMM engine for CPUs with AVX-512 (F, DQ, VL, BW)
 * and FMA.  Built alone with those instruction-set flags; gemm.c calls it
 * only after checking that the CPU and the OS support them.
 *
 * float:  12 x 32 tile, 24 zmm accumulators (2 vectors per row);
 * double: 12 x 16 tile, 24 zmm accumulators.
 * A packed KC x NR strip of B (64 KiB for float, KC = 512; 32 KiB for
 * double, KC = 256) is reused by every MR-tall strip of an MC x KC block of
 * A (192 / 240 KiB), which stays in L2; deeper float slabs measured a few
 * per cent faster than KC = 256 (fewer passes over C and less packing per
 * flop).  Partial tiles use AVX-512 lane masks.
 */
#include <immintrin.h>
#include <string.h>

#include "conv_depthwise.h"
#include "gemm_engine.h"

#define VEC __m512
#define MASK __mmask16
#define VL 16
#define VZERO() _mm512_setzero_ps()
#define VSET1(x) _mm512_set1_ps(x)
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps((p), (v))
#define VSTREAM(p, v) _mm512_stream_ps((p), (v))
#define VSFENCE() _mm_sfence()
#define VBCAST(p) _mm512_set1_ps(*(p))
#define VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define VMUL(a, b) _mm512_mul_ps((a), (b))
#define VADD(a, b) _mm512_add_ps((a), (b))
#define VSUB(a, b) _mm512_sub_ps((a), (b))
#define VAND(a, b) _mm512_and_ps((a), (b))   /* bitwise */
/* b where a > 0 or a is NaN, else +0 (a ReLU's gate) */
#define VKEEP(a, b) _mm512_maskz_mov_ps(                                  \
    _mm512_cmp_ps_mask((a), _mm512_setzero_ps(), _CMP_NLE_UQ), (b))
#define VRELU(v) VKEEP((v), (v))
#define VMASK(n) ((__mmask16)((1u << (n)) - 1u))
/* the lanes where v replaces the running maximum m (max pooling's rule:
 * v > m or v is NaN); b in the lanes of k, else a; v where it replaces m,
 * else m */
#define VTAKES(m, v) (_mm512_cmp_ps_mask((v), (m), _CMP_GT_OQ) |           \
                      _mm512_cmp_ps_mask((v), (v), _CMP_UNORD_Q))
#define VBLEND(k, a, b) _mm512_mask_blend_ps((k), (a), (b))
#define VMAXSEL(m, v) VBLEND(VTAKES((m), (v)), (m), (v))
/* the larger bits as unsigned integers (for values that are +0, positive
 * or NaN: the rule's maximum unless one is NaN); whether a lane is NaN */
#define VMAXU(a, b) _mm512_castsi512_ps(_mm512_max_epu32(                \
    _mm512_castps_si512(a), _mm512_castps_si512(b)))
#define VANYNAN(v) (_mm512_cmp_ps_mask((v), (v), _CMP_UNORD_Q) != 0)
/* the larger of two values neither of which is NaN */
#define VMAXF(a, b) _mm512_max_ps((a), (b))
#define VLOAD_M(p, m) _mm512_maskz_loadu_ps((m), (p))
#define VMASK2(a, b) ((MASK)(VMASK(b) & ~VMASK(a)))  /* lanes [a, b) */
#define VMASKB(b) ((MASK)(b))   /* lanes of the set bits */
#define VSTORE_M(p, m, v) _mm512_mask_storeu_ps((p), (m), (v))
#define REAL float
#define SFX(name) name##_f32_avx512
#define MR 12
#define NR 32
#define KC 512
#define MC 96
#define NC 1024
#define WKB 6
#define WQB 4
/* the even elements of a, then of b (2 * VL in all) */
#define VEVEN(a, b) _mm512_permutex2var_ps(                                \
    (a), _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,   \
                           26, 28, 30), (b))
/* a0 b0 a1 b1 ... of the first, then of the second halves */
#define VZIPLO(a, b) _mm512_permutex2var_ps(                               \
    (a), _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, \
                           7, 23), (b))
#define VZIPHI(a, b) _mm512_permutex2var_ps(                               \
    (a), _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29,    \
                           14, 30, 15, 31), (b))
/* 0, then the odd elements of a and b (a1 a3 ... b13): columns -1, 1, 3,
 * ... of a row loaded from column 0 (dw_forward_s2) */
#define VODDSH(a, b) _mm512_maskz_permutex2var_ps(                         \
    (__mmask16)0xFFFE, (a),                                                \
    _mm512_setr_epi32(0, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, \
                      29), (b))
/* the odd elements of a, then of b */
#define VODD(a, b) _mm512_permutex2var_ps(                                 \
    (a), _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25,   \
                           27, 29, 31), (b))
#define GEMM_ROW_T 1    /* gemm_row_t (gemm_impl.h): 2 groups of 4 blocks */
#define RT_GROUPS 2
#define RT_QB 4
#include "gemm_micro_simd.h"
#include "gemm_impl.h"
#include "conv_direct_simd.h"
#include "conv_blocked_simd.h"
#include "winograd_engine.h"
#include "conv_depthwise_simd.h"
#include "pool_simd.h"
#undef VEVEN
#undef VODD
#undef VTAKES
#undef VBLEND
#undef VKEEP
#undef VODDSH
#undef VZIPLO
#undef VZIPHI
#include "gemm_undef.h"

#define VEC __m512d
#define MASK __mmask8
#define VL 8
#define VZERO() _mm512_setzero_pd()
#define VSET1(x) _mm512_set1_pd(x)
#define VLOAD(p) _mm512_loadu_pd(p)
#define VSTORE(p, v) _mm512_storeu_pd((p), (v))
#define VSTREAM(p, v) _mm512_stream_pd((p), (v))
#define VSFENCE() _mm_sfence()
#define VBCAST(p) _mm512_set1_pd(*(p))
#define VFMA(a, b, c) _mm512_fmadd_pd((a), (b), (c))
#define VMUL(a, b) _mm512_mul_pd((a), (b))
#define VADD(a, b) _mm512_add_pd((a), (b))
#define VSUB(a, b) _mm512_sub_pd((a), (b))
#define VAND(a, b) _mm512_and_pd((a), (b))   /* bitwise */
/* b where a > 0 or a is NaN, else +0 (a ReLU's gate) */
#define VKEEP(a, b) _mm512_maskz_mov_pd(                                  \
    _mm512_cmp_pd_mask((a), _mm512_setzero_pd(), _CMP_NLE_UQ), (b))
#define VRELU(v) VKEEP((v), (v))
#define VMASK(n) ((__mmask8)((1u << (n)) - 1u))
/* the lanes where v replaces the running maximum m (max pooling's rule:
 * v > m or v is NaN); b in the lanes of k, else a; v where it replaces m,
 * else m */
#define VTAKES(m, v) (_mm512_cmp_pd_mask((v), (m), _CMP_GT_OQ) |           \
                      _mm512_cmp_pd_mask((v), (v), _CMP_UNORD_Q))
#define VBLEND(k, a, b) _mm512_mask_blend_pd((k), (a), (b))
#define VMAXSEL(m, v) VBLEND(VTAKES((m), (v)), (m), (v))
#define VMAXU(a, b) _mm512_castsi512_pd(_mm512_max_epu64(                \
    _mm512_castpd_si512(a), _mm512_castpd_si512(b)))
#define VANYNAN(v) (_mm512_cmp_pd_mask((v), (v), _CMP_UNORD_Q) != 0)
#define VMAXF(a, b) _mm512_max_pd((a), (b))
#define VLOAD_M(p, m) _mm512_maskz_loadu_pd((m), (p))
#define VMASK2(a, b) ((MASK)(VMASK(b) & ~VMASK(a)))  /* lanes [a, b) */
#define VMASKB(b) ((MASK)(b))   /* lanes of the set bits */
#define VSTORE_M(p, m, v) _mm512_mask_storeu_pd((p), (m), (v))
#define REAL double
#define SFX(name) name##_f64_avx512
#define MR 12
#define NR 16
#define KC 256
#define MC 120
#define NC 1024
#define WKB 6
#define WQB 4
/* the even elements of a, then of b (2 * VL in all) */
#define VEVEN(a, b) _mm512_permutex2var_pd(                                \
    (a), _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), (b))
/* a0 b0 a1 b1 ... of the first, then of the second halves */
#define VZIPLO(a, b) _mm512_permutex2var_pd(                               \
    (a), _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), (b))
#define VZIPHI(a, b) _mm512_permutex2var_pd(                               \
    (a), _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15), (b))
/* 0, then the odd elements of a and b (a1 a3 ... b5) */
#define VODDSH(a, b) _mm512_maskz_permutex2var_pd(                         \
    (__mmask8)0xFE, (a), _mm512_setr_epi64(0, 1, 3, 5, 7, 9, 11, 13), (b))
/* the odd elements of a, then of b */
#define VODD(a, b) _mm512_permutex2var_pd(                                 \
    (a), _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15), (b))
#define GEMM_ROW_T 1    /* gemm_row_t (gemm_impl.h): 2 groups of 4 blocks */
#define RT_GROUPS 2
#define RT_QB 4
#include "gemm_micro_simd.h"
#include "gemm_impl.h"
#include "conv_direct_simd.h"
#include "conv_blocked_simd.h"
#include "winograd_engine.h"
#include "conv_depthwise_simd.h"
#include "pool_simd.h"
#undef VEVEN
#undef VODD
#undef VTAKES
#undef VBLEND
#undef VKEEP
#undef VODDSH
#undef VZIPLO
#undef VZIPHI

CNNKIT_ENGINE_WORKSPACE(avx512)
CNNKIT_ENGINE_DIRECT(avx512)
CNNKIT_ENGINE_WINOGRAD(avx512)
CNNKIT_ENGINE_WINOGRAD_WEIGHT(avx512)
CNNKIT_ENGINE_PACKED(avx512)
CNNKIT_ENGINE_WTREE(avx512)
CNNKIT_ENGINE_BLOCKED(avx512)

const cnnkit_gemm_engine cnnkit_gemm_engine_avx512 = {
    "AVX-512", "avx512", gemm_workspace_avx512,
    gemm_f32_avx512, gemm_f64_avx512,
    gemm_parallel_f32_avx512, gemm_parallel_f64_avx512,
    conv_direct_workspace_avx512, conv_direct_f32_avx512,
    conv_direct_f64_avx512, conv_direct_weight_workspace_avx512,
    conv_direct_weight_f32_avx512, conv_direct_weight_f64_avx512,
    dw_forward_simd_f32_avx512, dw_forward_simd_f64_avx512,
    dw_backward_data_simd_f32_avx512, dw_backward_data_simd_f64_avx512,
    dw_backward_weight_simd_f32_avx512, dw_backward_weight_simd_f64_avx512,
    conv_direct_packed_size_avx512, conv_direct_pack_f32_avx512,
    conv_direct_pack_f64_avx512,
    conv_wg_workspace_avx512, wg_forward_f32_avx512, wg_forward_f64_avx512,
    conv_ww_workspace_avx512, ww_entry_f32_avx512, ww_entry_f64_avx512,
    wtree_workspace_avx512, wtree_f32_avx512, wtree_f64_avx512,
    blocked_lanes_avx512, blocked_ws_avx512, conv_blocked_f32_avx512,
    conv_blocked_f64_avx512,
    max2x2_planes_f32_avx512, max2x2_planes_f64_avx512,
    max2x2_back_planes_f32_avx512, max2x2_back_planes_f64_avx512,
};
