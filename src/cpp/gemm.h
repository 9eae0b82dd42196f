// The recurrent product with its weights packed once per call.
//
// Every time step multiplies a small, changing left operand (the state h: [N, H], or a gate
// gradient dG: [N, G*H]) by the same weight matrix. A general GEMM (Eigen's included) re-packs
// that weight matrix on every call, i.e. every step; here it is packed once per call into column
// panels of NR floats, and each step runs a register-blocked micro-kernel that broadcasts A from
// its row-major memory (no packing of A at all). With one thread per column slice (see core.h's
// time loop), a thread's panels stay in its own core's cache for the whole sequence.
//
//   AVX-512: NR = 32 (two zmm), MR = 12 rows  -> 24 accumulators
//   AVX2+FMA: NR = 16 (two ymm), MR = 6 rows  -> 12 accumulators
//   otherwise (and for double): the packed slice is kept row-major and multiplied by Eigen.
#pragma once

#include <vector>

#include "core.h"

#if defined(__AVX512F__)
#define RNNKIT_GEMM_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__)
#define RNNKIT_GEMM_AVX2 1
#endif

namespace rnnkit {

template <typename T>
using AlignedVec = std::vector<T, Eigen::aligned_allocator<T>>;

// Generic packed operand (double, or float without AVX2): B: [K, cols] row-major, and Eigen.
template <typename T>
class PackedB {
 public:
  // Allocates room for a [K, cols] operand, so that packing later does not allocate.
  void reserve(Index K, Index cols) { data_.reserve(K * cols); }
  // B[k][j] = W[c0 + j][k]: the columns [c0, c1) of W^T, W: [*, K] row-major.
  void pack_transposed(const T* W, Index K, Index c0, Index c1) {
    K_ = K;
    cols_ = c1 - c0;
    data_.resize(K_ * cols_);  // within reserve(): no allocation
    for (Index k = 0; k < K_; ++k)
      for (Index j = 0; j < cols_; ++j) data_[k * cols_ + j] = W[(c0 + j) * K + k];
  }
  // B[k][j] = W[k][c0 + j]: the columns [c0, c1) of W: [K, ldw] row-major.
  void pack_plain(const T* W, Index K, Index ldw, Index c0, Index c1) {
    K_ = K;
    cols_ = c1 - c0;
    data_.resize(K_ * cols_);
    for (Index k = 0; k < K_; ++k)
      std::copy(W + k * ldw + c0, W + k * ldw + c1, data_.data() + k * cols_);
  }
  // C: [M, cols] (row stride ldc) = (or +=) A: [M, K] (row stride lda) · B
  void multiply(Index M, const T* A, Index lda, T* C, Index ldc, bool accumulate) const {
    if (M == 0 || cols_ == 0) return;
    using Strided = Eigen::Map<const Mat<T>, 0, Eigen::OuterStride<>>;
    using StridedOut = Eigen::Map<Mat<T>, 0, Eigen::OuterStride<>>;
    Strided a(A, M, K_, Eigen::OuterStride<>(lda));
    StridedOut c(C, M, cols_, Eigen::OuterStride<>(ldc));
    CMatMap<T> b(data_.data(), K_, cols_);
    if (accumulate) c.noalias() += a * b; else c.noalias() = a * b;
  }

 private:
  Index K_ = 0, cols_ = 0;
  AlignedVec<T> data_;
};

#if defined(RNNKIT_GEMM_AVX512) || defined(RNNKIT_GEMM_AVX2)

namespace detail {

#if defined(RNNKIT_GEMM_AVX512)
using Vec = __m512;
constexpr Index kW = 16;            // floats per register
constexpr Index kNR = 32, kMR = 12;  // panel width, rows per block
inline Vec vzero() { return _mm512_setzero_ps(); }
inline Vec vload(const float* p) { return _mm512_load_ps(p); }
inline Vec vbroadcast(const float* p) { return _mm512_set1_ps(*p); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec vadd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
// the first n (0..16) lanes
inline __mmask16 lanes(Index n) {
  return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1);
}
inline Vec vload_n(const float* p, Index n) { return _mm512_maskz_loadu_ps(lanes(n), p); }
inline void vstore_n(float* p, Vec v, Index n) { _mm512_mask_storeu_ps(p, lanes(n), v); }
// rows per block and panels per block for small row counts (more independent accumulators)
constexpr int panels_for(int mr) { return mr <= 2 ? 4 : mr <= 3 ? 3 : mr <= 6 ? 2 : 1; }
#else
using Vec = __m256;
constexpr Index kW = 8;
constexpr Index kNR = 16, kMR = 6;
inline Vec vzero() { return _mm256_setzero_ps(); }
inline Vec vload(const float* p) { return _mm256_load_ps(p); }
inline Vec vbroadcast(const float* p) { return _mm256_broadcast_ss(p); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec vadd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline __m256i lanes(Index n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::max<Index>(n, 0))), idx);
}
inline Vec vload_n(const float* p, Index n) { return _mm256_maskload_ps(p, lanes(n)); }
inline void vstore_n(float* p, Vec v, Index n) { _mm256_maskstore_ps(p, lanes(n), v); }
constexpr int panels_for(int mr) { return mr <= 1 ? 3 : mr <= 2 ? 2 : 1; }
#endif

// C[0:MR, 0:NP*kNR] (=|+=) A[0:MR, 0:K] · [P_0 | ... | P_{NP-1}], panel q at P + q * pstride
// (row k of a panel at + k * kNR); only the last panel may be partial (ncols_last valid columns).
template <int MR, int NP>
inline void micro_kernel(Index K, const float* A, Index lda, const float* P, Index pstride,
                         float* C, Index ldc, bool acc, Index ncols_last) {
  Vec c[NP][2][MR];
#pragma GCC unroll 4
  for (int q = 0; q < NP; ++q)
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) c[q][0][r] = c[q][1][r] = vzero();
  for (Index k = 0; k < K; ++k) {
    Vec b[NP][2];
#pragma GCC unroll 4
    for (int q = 0; q < NP; ++q) {
      b[q][0] = vload(P + q * pstride + k * kNR);
      b[q][1] = vload(P + q * pstride + k * kNR + kW);
    }
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      // c[r] += a[r][k] * b[k]
      const Vec a = vbroadcast(A + r * lda + k);
#pragma GCC unroll 4
      for (int q = 0; q < NP; ++q) {
        c[q][0][r] = vfma(a, b[q][0], c[q][0][r]);
        c[q][1][r] = vfma(a, b[q][1], c[q][1][r]);
      }
    }
  }
#pragma GCC unroll 4
  for (int q = 0; q < NP; ++q) {
    const Index n = q == NP - 1 ? ncols_last : kNR;
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      float* cp = C + r * ldc + q * kNR;
      if (acc) {
        c[q][0][r] = vadd(c[q][0][r], vload_n(cp, n));
        c[q][1][r] = vadd(c[q][1][r], vload_n(cp + kW, n - kW));
      }
      vstore_n(cp, c[q][0][r], n);
      vstore_n(cp + kW, c[q][1][r], n - kW);
    }
  }
}

// A block of `rows` (1..kMR) rows against panels [p, p + count): the widest kernel that fits.
template <int MR>
inline Index rows_block(Index rows, Index K, const float* A, Index lda, const float* P,
                        Index pstride, Index panels_left, float* C, Index ldc, bool acc,
                        Index ncols_last) {
  if constexpr (MR > 1) {
    if (rows != MR)
      return rows_block<MR - 1>(rows, K, A, lda, P, pstride, panels_left, C, ldc, acc, ncols_last);
  }
  constexpr int NP = panels_for(MR);
  if (NP > 1 && panels_left >= NP) {
    micro_kernel<MR, NP>(K, A, lda, P, pstride, C, ldc, acc, panels_left == NP ? ncols_last : kNR);
    return NP;
  }
  micro_kernel<MR, 1>(K, A, lda, P, pstride, C, ldc, acc, panels_left == 1 ? ncols_last : kNR);
  return 1;
}

}  // namespace detail

// float with AVX2/AVX-512: B kept as zero-padded column panels of kNR floats.
template <>
class PackedB<float> {
 public:
  // Allocates room for a [K, cols] operand, so that packing later does not allocate.
  void reserve(Index K, Index cols) {
    data_.reserve((cols + detail::kNR - 1) / detail::kNR * K * detail::kNR);
  }
  // B[k][j] = W[c0 + j][k]: the columns [c0, c1) of W^T, W: [*, K] row-major.
  void pack_transposed(const float* W, Index K, Index c0, Index c1) {
    reset(K, c1 - c0);
    for (Index j = 0; j < cols_; ++j) {
      float* panel = data_.data() + (j / detail::kNR) * K_ * detail::kNR + j % detail::kNR;
      const float* w = W + (c0 + j) * K;
      for (Index k = 0; k < K_; ++k) panel[k * detail::kNR] = w[k];
    }
  }
  // B[k][j] = W[k][c0 + j]: the columns [c0, c1) of W: [K, ldw] row-major.
  void pack_plain(const float* W, Index K, Index ldw, Index c0, Index c1) {
    reset(K, c1 - c0);
    for (Index p = 0; p * detail::kNR < cols_; ++p) {
      const Index j0 = p * detail::kNR, n = std::min(detail::kNR, cols_ - j0);
      float* panel = data_.data() + p * K_ * detail::kNR;
      for (Index k = 0; k < K_; ++k)
        std::copy(W + k * ldw + c0 + j0, W + k * ldw + c0 + j0 + n, panel + k * detail::kNR);
    }
  }
  // C: [M, cols] (row stride ldc) = (or +=) A: [M, K] (row stride lda) · B
  void multiply(Index M, const float* A, Index lda, float* C, Index ldc, bool accumulate) const {
    using namespace detail;
    const Index panels = (cols_ + kNR - 1) / kNR, pstride = K_ * kNR;
    const Index ncols_last = cols_ - (panels - 1) * kNR;
    if (M < kMR) {
      // one block of rows: panels in groups as wide as the row count allows (GEMV-like shapes)
      for (Index p = 0; p < panels;)
        p += rows_block<int(kMR)>(M, K_, A, lda, data_.data() + p * pstride, pstride, panels - p,
                                  C + p * kNR, ldc, accumulate, ncols_last);
      return;
    }
    // panel by panel, so that a panel stays in L1 while every block of rows passes over it
    for (Index p = 0; p < panels; ++p) {
      const float* P = data_.data() + p * pstride;
      const Index n = p == panels - 1 ? ncols_last : kNR;
      Index i = 0;
      for (; i + kMR <= M; i += kMR)
        micro_kernel<int(kMR), 1>(K_, A + i * lda, lda, P, pstride, C + i * ldc + p * kNR, ldc,
                                  accumulate, n);
      if (i < M)
        rows_block<int(kMR)>(M - i, K_, A + i * lda, lda, P, pstride, 1, C + i * ldc + p * kNR,
                             ldc, accumulate, n);
    }
  }

 private:
  void reset(Index K, Index cols) {
    K_ = K;
    cols_ = cols;
    const Index panels = (cols + detail::kNR - 1) / detail::kNR;
    data_.assign(panels * K * detail::kNR, 0.0f);
  }
  Index K_ = 0, cols_ = 0;
  AlignedVec<float> data_;
};

#endif  // AVX2 / AVX-512

}  // namespace rnnkit

namespace rnnkit {

// One packed slice of the recurrent weights per thread of a time loop, reserved before the
// parallel region (so that nothing allocates inside it). `cols_total` columns split like split().
template <typename T>
std::vector<PackedB<T>> reserve_slices(int nt, Index K, Index cols_total) {
  std::vector<PackedB<T>> packs(nt);
  for (int k = 0; k < nt; ++k) packs[k].reserve(K, split(cols_total, k, nt).size());
  return packs;
}

}  // namespace rnnkit
