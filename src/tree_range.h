/* tree_range.h -- the fixed pairwise tree of cnnkit_tree_sum over a range
 * of elements, included (once per REAL type) by the _impl.h files of the
 * kernels that add per-part rows in that tree: reduce_impl.h, and
 * dense_impl.h, which adds its parts tile by tile.  No include guard: each
 * inclusion defines the function for the REAL of that pass. */

/* Rows [lo, hi) of the tree summed into dst[0, len) from element e0; an
 * absent row (NULL) adds nothing.  The tree pairs adjacent rows level by
 * level, so its nodes are aligned power-of-two blocks: [lo, hi) splits at
 * lo + the largest power of two below hi - lo.  Returns whether any row of
 * the range is present (dst is untouched otherwise).  tmp holds `step`
 * (>= len) elements per level below this one: one level per halving of
 * hi - lo. */
static int SFX(tree_range)(REAL *restrict dst, REAL *restrict tmp,
                           ptrdiff_t step, const REAL *const *rows,
                           ptrdiff_t lo, ptrdiff_t hi, ptrdiff_t e0,
                           ptrdiff_t len)
{
    if (hi - lo <= 2) {
        const REAL *a = rows[lo], *b = hi - lo == 2 ? rows[lo + 1] : NULL;
        if (a && b) {
            const REAL *restrict pa = a + e0, *restrict pb = b + e0;
            for (ptrdiff_t e = 0; e < len; e++)
                dst[e] = pa[e] + pb[e];
            return 1;
        }
        if (!a && !b)
            return 0;
        const REAL *restrict src = (a ? a : b) + e0;
        for (ptrdiff_t e = 0; e < len; e++)
            dst[e] = src[e];
        return 1;
    }
    ptrdiff_t half = 1;
    while (2 * half < hi - lo)
        half *= 2;
    const int left = SFX(tree_range)(dst, tmp + step, step, rows, lo,
                                     lo + half, e0, len);
    if (!left)
        return SFX(tree_range)(dst, tmp + step, step, rows, lo + half, hi,
                               e0, len);
    if (SFX(tree_range)(tmp, tmp + step, step, rows, lo + half, hi, e0,
                        len))
        for (ptrdiff_t e = 0; e < len; e++)
            dst[e] = dst[e] + tmp[e];
    return 1;
}

