/*
 * transform.c -- data augmentation: the per-image random draws and the
 * window copy behind random crops, translations and horizontal flips.
 *
 * Layout: x (N, C, H, W) -> y (N, C, OH, OW), C-contiguous.
 * Window copy: image i has params (dy, dx, flip) and
 *     y[i,c,r,s] = x[i, c, r + dy, col(s)],  col(s) = (flip ? OW-1-s : s) + dx,
 * and 0 where (r + dy, col(s)) lies outside the H x W image.  A crop of
 * size (OH, OW) at offset (oy, ox) of the image zero-padded by (pt, pl) is
 * dy = oy - pt, dx = ox - pl; a translation by (ty, tx) is dy = -ty,
 * dx = -tx; a flip of the output is flip = 1.
 * Draws: counter-based, with no state.  For a 64-bit key, the sample index
 * i (its position in the training set) and a draw number j,
 *     hash(key, i, j) = mix(mix(key + (i+1)G) + (j+1)G)   (mod 2**64),
 * where mix is splitmix64's finaliser and G = 0x9E3779B97F4A7C15.  An
 * integer in [0, R) is ((hash >> 32) * R) >> 32 (R < 2**32), a uniform in
 * [0, 1) is (hash >> 11) * 2**-53.  So an image's draws depend only on the
 * key and its index: not on the batch it is in, the thread count or the
 * rank that computes it.
 * Threading: over the N*C planes; each plane owns its output.  There is no
 * backward pass: augmentation transforms data, not activations.
 */
#include <string.h>

#include "internal.h"

#define CNNKIT_GOLDEN 0x9E3779B97F4A7C15ULL

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t index_hash(uint64_t key, int64_t i, uint64_t j)
{
    uint64_t h = mix64(key + ((uint64_t)i + 1u) * CNNKIT_GOLDEN);
    return mix64(h + (j + 1u) * CNNKIT_GOLDEN);
}

void cnnkit_index_hash(uint64_t *h, const int64_t *index, uint64_t key,
                       ptrdiff_t n, ptrdiff_t k)
{
    for (ptrdiff_t i = 0; i < n; i++)
        for (ptrdiff_t j = 0; j < k; j++)
            h[i * k + j] = index_hash(key, index[i], (uint64_t)j);
}

void cnnkit_window_draws(int64_t *params, const int64_t *index,
                         const cnnkit_window_spec *s, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        uint64_t hy = index_hash(s->key_shift, index[i], 0);
        uint64_t hx = index_hash(s->key_shift, index[i], 1);
        params[3 * i] = (int64_t)(((hy >> 32) * (uint64_t)s->range_h) >> 32)
                        - s->base_h;
        params[3 * i + 1] =
            (int64_t)(((hx >> 32) * (uint64_t)s->range_w) >> 32) - s->base_w;
        int flip = 0;
        if (s->flip_p > 0.0) {
            uint64_t hf = index_hash(s->key_flip, index[i], 0);
            flip = (double)(hf >> 11) * 0x1.0p-53 < s->flip_p;
        }
        params[3 * i + 2] = flip;
    }
}

#define CNNKIT_IMPL "transform_impl.h"
#include "instantiate.h"
