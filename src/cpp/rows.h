// Row-wise operations over the short last axis of [M, K] arrays (class scores, K ~ 2-1000):
// softmax, sums and argmax for the output layer, loss and metrics of a training step. NumPy
// reduces a handful of contiguous elements per row slowly (about 50 us for 1600 x 10 floats, 5-10x
// an elementwise pass over the same data); one pass here costs a few microseconds.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "core.h"

namespace rnnkit {

// Softmax of every row: x, out: [M, K] (out may be x).
//   out[m, k] = exp(x[m, k] - max_j x[m, j]) / sum_j exp(x[m, j] - max_j x[m, j])
// A row holding a NaN comes out all NaN (as NumPy's formula gives). The exponentials run as one
// pass over all M*K entries (rows of a few classes are too short for SIMD).
template <typename T>
void softmax_rows(const T* x, Index M, Index K, T* out) {
  for (Index m = 0; m < M; ++m) {
    const T* r = x + m * K;
    T* o = out + m * K;
    // mx = max_k x[m, k]
    T mx = r[0];
    for (Index k = 1; k < K; ++k) mx = r[k] > mx ? r[k] : mx;
    // o = x - mx
    for (Index k = 0; k < K; ++k) o[k] = r[k] - mx;
  }
  // o = exp(o): float on SIMD packets over all M*K entries (the tail through a zero-padded
  // packet, so that a value does not depend on where the array sits in memory), double scalar
  if constexpr (std::is_same_v<T, float>) {
    simd::for_packets(M * K, [&](Index j, auto L) {
      L.store(out + j, Eigen::internal::pexp(L.load(out + j)));
    });
  } else {
    for (Index i = 0; i < M * K; ++i) out[i] = std::exp(out[i]);
  }
  for (Index m = 0; m < M; ++m) {
    T* o = out + m * K;
    // o /= sum_k o
    T s = 0;
    for (Index k = 0; k < K; ++k) s += o[k];
    const T inv = T(1) / s;
    for (Index k = 0; k < K; ++k) o[k] *= inv;
  }
}

// The sum of every row: x: [M, K] -> out: [M], out[m] = sum_k x[m, k].
template <typename T>
void sum_rows(const T* x, Index M, Index K, T* out) {
  for (Index m = 0; m < M; ++m) {
    const T* r = x + m * K;
    T s = 0;
    for (Index k = 0; k < K; ++k) s += r[k];
    out[m] = s;
  }
}

// The index of the largest entry of every row: x: [M, K] -> out: [M], NumPy's rule: the first
// of equal maxima, and the first NaN when the row holds one.
template <typename T>
void argmax_rows(const T* x, Index M, Index K, std::int64_t* out) {
  for (Index m = 0; m < M; ++m) {
    const T* r = x + m * K;
    // branch-free running maximum (scores are in random order: a branch would mispredict)
    Index best = 0;
    T bv = r[0];
    bool nan = std::isnan(bv);
    for (Index k = 1; k < K; ++k) {
      const bool up = r[k] > bv;
      best = up ? k : best;
      bv = up ? r[k] : bv;
      nan |= std::isnan(r[k]);
    }
    if (nan) {  // the first NaN wins
      best = 0;
      while (!std::isnan(r[best])) ++best;
    }
    out[m] = best;
  }
}

// The error function of every entry: out[i] = erf(x[i]) (the exact GELU needs it; NumPy has none).
template <typename T>
void erf_all(const T* x, Index n, T* out) {
  for (Index i = 0; i < n; ++i) out[i] = std::erf(x[i]);
}

}  // namespace rnnkit
