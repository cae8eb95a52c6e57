/*
 * gemm.c -- a cache-blocked matrix multiply, the engine under conv2d and
 * dense.
 *
 * Design
 * ------
 * C (m, n) = alpha * op(A) (m, k) @ op(B) (k, n) + beta * C, row-major.
 * The classic three-level blocking: the k dimension is cut into KC-deep
 * slabs, op(B) slabs into NC-wide panels packed as NR-wide strips, op(A)
 * into MC-tall blocks packed as MR-tall strips; an MR x NR micro-kernel
 * keeps its accumulators in registers.  Packing makes transposed and
 * untransposed operands look the same to the micro-kernel and zero-fills the
 * edges, so one micro-kernel serves every tile.
 *
 * Determinism: every element of C is computed as
 *     c = beta*c + alpha*acc(slab 0);  c += alpha*acc(slab 1); ...
 * with each acc summed over its slab in increasing k.  That order depends on
 * k alone, never on where a tile starts, so any split of C over threads (see
 * the parallel variant) gives the same bits.
 *
 * SIMD: the block driver is compiled once per instruction set (AVX-512,
 * AVX2+FMA, baseline) and picked at load time; the micro-kernel is plain C
 * that the compiler vectorises along NR.
 */
#include <string.h>

#include "internal.h"

#define KC 256
#define MC 96
#define NC 1024

/* Packing buffers of one serial call: an MR-rounded block of A and an
 * NR-rounded panel of B (rounded for the widest tiles of either type). */
#define PACK_MR 6
#define PACK_NR 16

static ptrdiff_t gemm_pack_a_size(ptrdiff_t m, ptrdiff_t k)
{
    ptrdiff_t mc = CNNKIT_MIN(m, (ptrdiff_t)MC), kc = CNNKIT_MIN(k, (ptrdiff_t)KC);
    return cnnkit_ceil_div(CNNKIT_MAX(mc, 1), PACK_MR) * PACK_MR *
           CNNKIT_MAX(kc, 1);
}

ptrdiff_t cnnkit_gemm_workspace(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k)
{
    ptrdiff_t nc = CNNKIT_MIN(n, (ptrdiff_t)NC), kc = CNNKIT_MIN(k, (ptrdiff_t)KC);
    return gemm_pack_a_size(m, k) +
           CNNKIT_MAX(kc, 1) * cnnkit_ceil_div(CNNKIT_MAX(nc, 1), PACK_NR) *
               PACK_NR;
}

#define REAL float
#define SFX(name) name##_f32
#define MR 6
#define NR 16
#include "gemm_impl.h"
#undef REAL
#undef SFX
#undef MR
#undef NR

#define REAL double
#define SFX(name) name##_f64
#define MR 6
#define NR 8
#include "gemm_impl.h"
#undef REAL
#undef SFX
#undef MR
#undef NR
