/* tests/model/gradcheck.h: central-difference gradient checking shared by the model tests.
 *
 * The kernels compute in float; the loss is accumulated in double, the step is large enough
 * (1e-2 relative to the value scale) for float rounding to stay far below the tolerance. */
#ifndef FL_TEST_GRADCHECK_H
#define FL_TEST_GRADCHECK_H

#include <math.h>
#include <stddef.h>
#include <stdio.h>

typedef double (*gc_loss_fn)(void *ctx);

/* Compares analytic[i] with the central difference of loss() w.r.t. x[i] for up to
 * max_checks indices spread over x (all of them if n <= max_checks). Returns the number of
 * mismatches (printed). */
static inline int gc_check(const char *name, float *x, size_t n, const float *analytic,
                           gc_loss_fn loss, void *ctx, size_t max_checks, double eps, double atol,
                           double rtol) {
  int bad = 0;
  size_t stride = n <= max_checks ? 1 : n / max_checks;
  for (size_t i = 0; i < n; i += stride) {
    float keep = x[i];
    x[i] = keep + (float)eps;
    double lp = loss(ctx);
    x[i] = keep - (float)eps;
    double lm = loss(ctx);
    x[i] = keep;
    double step = (double)(keep + (float)eps) - (double)(keep - (float)eps);
    double num = (lp - lm) / step;
    double an = analytic[i];
    if (fabs(num - an) > atol + rtol * fabs(num)) {
      if (bad < 5)
        fprintf(stderr, "gradcheck %s[%zu]: analytic %.6g numeric %.6g\n", name, i, an, num);
      bad++;
    }
  }
  return bad;
}

/* sum_i out[i] * r[i] in double: the scalar loss of the kernel checks. */
static inline double gc_dotd(const float *out, const float *r, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += (double)out[i] * r[i];
  return s;
}

#endif
