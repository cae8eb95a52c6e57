/* reduce_impl.h -- body of reduce.c, included once per REAL type. */

#include "tree_range.h"

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
                !SFX(tree_range)(out + e0, tmp, TREE_CHUNK, rows, 0, nrows,
                                 e0, len))
                for (ptrdiff_t e = 0; e < len; e++)
                    out[e0 + e] = 0;
        }
    }
}
