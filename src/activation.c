/*
 * activation.c -- ReLU, forward and backward, elementwise on any shape.
 *
 * y = x if x > 0, else 0; NaN stays NaN (as in PyTorch).
 * gx = gy if x > 0, else 0: the gradient at 0 is 0.
 * Threading: static split of the flat array (each thread owns its slice).
 */
#include "internal.h"

#define REAL float
#define SFX(name) name##_f32
#include "activation_impl.h"
#undef REAL
#undef SFX

#define REAL double
#define SFX(name) name##_f64
#include "activation_impl.h"
#undef REAL
#undef SFX
