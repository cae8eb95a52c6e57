/* gemm_undef.h -- ends one instantiation of gemm_impl.h (and of
 * gemm_micro_simd.h): forgets its element type, block sizes and vector
 * macros, so that the next instantiation in the same file can define its
 * own.  No include guard: it is meant to be included repeatedly. */
#undef VEC
#undef MASK
#undef VL
#undef VZERO
#undef VSET1
#undef VLOAD
#undef VSTORE
#undef VSTREAM
#undef VSFENCE
#undef VBCAST
#undef VFMA
#undef VMUL
#undef VADD
#undef VSUB
#undef VRELU
#undef VAND
#undef VMAXSEL
#undef VMAXU
#undef VANYNAN
#undef VMAXF
#undef VMASK
#undef VLOAD_M
#undef VMASK2
#undef VMASKB
#undef VSTORE_M
#undef REAL
#undef SFX
#undef MR
#undef NR
#undef KC
#undef MC
#undef NC
#undef WKB
#undef WQB
#undef GEMM_IMPLICIT_B
#undef ROW_STRIPS
#undef WT_ROWS
#undef GEMM_ROW_T
#undef RT_GROUPS
#undef RT_QB
#undef RT_BYTES
#undef RT_UNROLL
#undef ARROWS_MIN_M
#undef ARROWS_MAX_M
