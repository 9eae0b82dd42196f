// Optimizer update rules as one pass over a variable (the Python layer's in-place NumPy version
// takes ~11 array passes; a small model's parameters make that the overhead that dominates).
#pragma once

#include <cmath>

#include "core.h"

namespace rnnkit {

// One Adam step (Keras's rule) over n entries of var, grad, m, v (v_hat: null = no AMSGrad):
//   m += (1 - b1) (g - m);   v += (1 - b2) (g² - v);   v̂ = max(v̂, v) with AMSGrad
//   var -= alpha · m / (sqrt(v̂ or v) + eps),   alpha = lr · sqrt(1 - b2^t) / (1 - b1^t)
template <typename T>
void adam_update(Index n, T* var, const T* grad, T* m, T* v, T* v_hat, T alpha, T b1, T b2,
                 T eps) {
  const T a1 = T(1) - b1, a2 = T(1) - b2;
  for (Index i = 0; i < n; ++i) {
    const T g = grad[i];
    m[i] += a1 * (g - m[i]);
    v[i] += a2 * (g * g - v[i]);
    T vv = v[i];
    if (v_hat) {
      v_hat[i] = std::max(v_hat[i], vv);
      vv = v_hat[i];
    }
    var[i] -= alpha * m[i] / (std::sqrt(vv) + eps);
  }
}

}  // namespace rnnkit
