/* transform_impl.h -- body of transform.c, included once per REAL type. */

/* x (n,c,h,w), params (n,3) int64 (dy, dx, flip) -> y (n,c,oh,ow). */
void SFX(cnnkit_shift_flip_forward)(REAL *y, const REAL *x,
                                    const int64_t *params, ptrdiff_t n,
                                    ptrdiff_t c, ptrdiff_t h, ptrdiff_t w,
                                    ptrdiff_t oh, ptrdiff_t ow, int nthreads)
{
    const ptrdiff_t planes = n * c;
    /* a copy: about one unit of work per output element */
    const int nt = cnnkit_team((double)planes * (double)(oh * ow), planes,
                               nthreads);
    CNNKIT_OMP(parallel for schedule(static) num_threads(nt))
    for (ptrdiff_t p = 0; p < planes; p++) {
        const int64_t *prm = params + 3 * (p / c);
        const ptrdiff_t dy = (ptrdiff_t)prm[0], dx = (ptrdiff_t)prm[1];
        const int flip = prm[2] != 0;
        const REAL *restrict xp = x + p * h * w;
        REAL *restrict yp = y + p * oh * ow;
        /* the output columns [sa, sb) that read inside the image */
        ptrdiff_t sa, sb;
        if (flip) {
            sa = CNNKIT_MAX((ptrdiff_t)0, ow + dx - w);
            sb = CNNKIT_MIN(ow, ow + dx);
        } else {
            sa = CNNKIT_MAX((ptrdiff_t)0, -dx);
            sb = CNNKIT_MIN(ow, w - dx);
        }
        if (sb < sa)
            sb = sa;
        for (ptrdiff_t r = 0; r < oh; r++) {
            REAL *restrict yr = yp + r * ow;
            const ptrdiff_t sr = r + dy;
            if (sr < 0 || sr >= h || sa == sb) {
                for (ptrdiff_t s = 0; s < ow; s++)
                    yr[s] = (REAL)0;
                continue;
            }
            const REAL *restrict xr = xp + sr * w;
            for (ptrdiff_t s = 0; s < sa; s++)
                yr[s] = (REAL)0;
            if (flip) {
                const REAL *restrict xe = xr + (ow - 1 + dx);
                for (ptrdiff_t s = sa; s < sb; s++)
                    yr[s] = xe[-s];
            } else {
                memcpy(yr + sa, xr + sa + dx, (size_t)(sb - sa) * sizeof(REAL));
            }
            for (ptrdiff_t s = sb; s < ow; s++)
                yr[s] = (REAL)0;
        }
    }
}
