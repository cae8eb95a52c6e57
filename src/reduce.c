/*
 * reduce.c -- the fixed-tree sum of rows, for data-parallel training, and
 * the check that an input holds only finite values.
 *
 * out = rows[0] + rows[1] + ... + rows[nrows-1], element by element, in one
 * fixed pairwise tree: adjacent rows first, then adjacent pairs, and so on,
 * so the tree's nodes are aligned power-of-two blocks of rows ([lo, hi)
 * splits at lo + the largest power of two below hi - lo).  A NULL row is
 * absent: it adds nothing, a node with one present child is that child
 * unchanged, and out is 0 where no row is present.  Data-parallel
 * training adds the gradients of a batch's fixed shards this way, so any
 * number of ranks gives one process's bits.
 * There are only additions, each rounded to REAL (nothing to contract).
 *
 * Threading: the elements are cut into chunks of TREE_CHUNK; each task
 * walks the whole tree over one chunk, depth first, with TREE_CHUNK
 * elements of scratch per level on its stack.  An element's sum does not
 * depend on its chunk, so the bits do not depend on the thread count.
 */
#include "internal.h"

#define TREE_CHUNK 256   /* elements per task of cnnkit_tree_sum */
#define TREE_LEVELS 16   /* its scratch levels: up to 2**15 rows  */

#define CNNKIT_IMPL "reduce_impl.h"
#include "instantiate.h"
