/* reduce_impl.h -- body of reduce.c, included once per REAL type. */

/* Rows [lo, hi) of the tree summed into dst[0, len) from element e0; an
 * absent row (NULL) adds nothing.  The tree pairs adjacent rows level by
 * level, so its nodes are aligned power-of-two blocks: [lo, hi) splits at
 * lo + the largest power of two below hi - lo.  Returns whether any row of
 * the range is present (dst is untouched otherwise).  tmp holds
 * TREE_CHUNK elements per level below this one. */
static int SFX(tree_range)(REAL *restrict dst, REAL *restrict tmp,
                           const REAL *const *rows, ptrdiff_t lo,
                           ptrdiff_t hi, ptrdiff_t e0, ptrdiff_t len)
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
    const int left = SFX(tree_range)(dst, tmp + TREE_CHUNK, rows, lo,
                                     lo + half, e0, len);
    if (!left)
        return SFX(tree_range)(dst, tmp + TREE_CHUNK, rows, lo + half, hi,
                               e0, len);
    if (SFX(tree_range)(tmp, tmp + TREE_CHUNK, rows, lo + half, hi, e0,
                        len))
        for (ptrdiff_t e = 0; e < len; e++)
            dst[e] = dst[e] + tmp[e];
    return 1;
}

void SFX(cnnkit_tree_sum)(REAL *out, const REAL *const *rows,
                          ptrdiff_t nrows, ptrdiff_t n, int nthreads)
{
    if (n <= 0)
        return;
    const ptrdiff_t chunks = cnnkit_ceil_div(n, (ptrdiff_t)TREE_CHUNK);
    const int nt = cnnkit_team(2.0 * (double)nrows * n, chunks, nthreads);
    (void)nt; /* unused in serial builds */
    CNNKIT_OMP(parallel num_threads(nt))
    {
        REAL tmp[TREE_LEVELS * TREE_CHUNK];
        CNNKIT_OMP(for schedule(static))
        for (ptrdiff_t ch = 0; ch < chunks; ch++) {
            const ptrdiff_t e0 = ch * TREE_CHUNK;
            const ptrdiff_t len = CNNKIT_MIN((ptrdiff_t)TREE_CHUNK, n - e0);
            if (nrows <= 0 ||
                !SFX(tree_range)(out + e0, tmp, rows, 0, nrows, e0, len))
                for (ptrdiff_t e = 0; e < len; e++)
                    out[e0 + e] = 0;
        }
    }
}
