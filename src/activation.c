/*
 * activation.c -- element-wise activations, forward and backward, on any
 * shape (a flat array of n elements).
 *
 * ReLU:        y = x if x > 0, else 0; NaN stays NaN (as in PyTorch).
 *              gx = 0 if x <= 0, else gy: the gradient at 0 is 0 and a NaN
 *              input passes the gradient through (threshold_backward).
 * Leaky ReLU:  y = x if x > 0, else a*x;  gx = gy if x > 0, else gy*a
 *              (a, the negative slope, rounded to the element type first,
 *              as PyTorch does).
 * Sigmoid:     s = 1/(1+e) for x >= 0, e/(1+e) otherwise, e = exp(-|x|):
 *              the exponent is never positive, so nothing overflows.
 *              gx = gy * e/(1+e)^2 (= s(1-s) without the cancellation of
 *              1 - s near s = 1).
 * Tanh:        y = tanh(x);  gx = gy * (1-y)(1+y), from the output.
 * SiLU:        y = x*s;  gx = gy * s * (1 + x*(1-s)), with s and 1-s both
 *              taken from e = exp(-|x|) (no cancellation for either sign).
 * GELU:        exact: y = x*Phi(x) = x/2 * erfc(-x/sqrt 2) (erfc keeps the
 *              tail that 1 + erf(x/sqrt 2) would round away);
 *              gx = gy * (Phi(x) + x*phi(x)), phi(x) = exp(-x^2/2)/sqrt(2 pi).
 *              tanh approximation: u = sqrt(2/pi)*(x + 0.044715 x^3),
 *              y = x/2*(1 + tanh u) = x*sigmoid(2u);
 *              gx = gy * (s + 2 x s(1-s) u'), u' = sqrt(2/pi)(1 + 3*0.044715 x^2).
 * Products whose small factor underflows to 0 are taken as 0, so that an
 * infinite input gives the limit (silu(-inf) = 0, gelu'(inf) = 1) rather
 * than inf*0 = NaN; a NaN input always gives NaN (the tests pin both).
 *
 * float kernels compute in float (expf, tanhf, erfcf), double in double.
 * Threading: a static split of the flat array; each element's result
 * depends on that element only, so any thread count gives the same bits.
 */
#include <math.h>

#include "internal.h"

#define REAL float
#define SFX(name) name##_f32
#define EXP expf
#define TANH tanhf
#define ERFC erfcf
#define FABS fabsf
#include "activation_impl.h"
#undef REAL
#undef SFX
#undef EXP
#undef TANH
#undef ERFC
#undef FABS

#define REAL double
#define SFX(name) name##_f64
#define EXP exp
#define TANH tanh
#define ERFC erfc
#define FABS fabs
#include "activation_impl.h"
#undef REAL
#undef SFX
#undef EXP
#undef TANH
#undef ERFC
#undef FABS
