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
//
// Inference streams may keep their packed weights in reduced precision (WeightPrecision): bfloat16
// (half the bytes; the micro-kernel widens each value to float, so the products are exactly those
// of the rounded weights) or int8 with one scale per output column (a quarter of the bytes;
// c_j = s_j Σ_k a_k q_kj, the scale applied once after the sum). A step at batch 1 reads the
// whole weight from cache, and that read is its bound: fewer bytes, a faster step.
#pragma once

#include <cstring>
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

enum class WeightPrecision : int { F32 = 0, BF16 = 1, INT8 = 2 };

// bfloat16: the high 16 bits of a float, rounded to nearest even (NaN stays NaN)
inline uint16_t to_bf16(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x7FFFFFu)) return uint16_t((u >> 16) | 0x40u);
  // u + 0x7FFF + lsb: ties go to the even upper half
  u += 0x7FFFu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float from_bf16(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}
// int8 scale of one output column w: [K]: s = max_k |w_k| / 127 (1 for an all-zero column)
inline float int8_scale(const float* w, Index K, Index stride = 1) {
  float m = 0.0f;
  for (Index k = 0; k < K; ++k) m = std::max(m, std::abs(w[k * stride]));
  return m > 0.0f ? m / 127.0f : 1.0f;
}
// q = round(v / s), in [-127, 127]
inline int8_t to_int8(float v, float s) {
  return int8_t(std::max(-127.0f, std::min(127.0f, std::nearbyint(v / s))));
}

// Rounds the weight W: [rows, K] (row r = output column r of the product W^T) to the grid of
// `p` in place: bfloat16 values, or s_r * q for int8 with one scale per row. The float copy then
// holds exactly the weights the reduced-precision kernels use (every path computes with them).
template <typename T>
inline void round_weights(T* W, Index rows, Index K, WeightPrecision p) {
  if (p == WeightPrecision::F32) return;
  for (Index r = 0; r < rows; ++r) {
    T* w = W + r * K;
    if (p == WeightPrecision::BF16) {
      for (Index k = 0; k < K; ++k) w[k] = T(from_bf16(to_bf16(float(w[k]))));
    } else {
      std::vector<float> row(w, w + K);
      const float s = int8_scale(row.data(), K);
      for (Index k = 0; k < K; ++k) w[k] = T(s * float(to_int8(row[k], s)));
    }
  }
}

// Generic packed operand (double, or float without AVX2): B: [K, cols] row-major, and Eigen.
template <typename T>
class PackedB {
 public:
  // Reduced precision changes nothing here: the weights given to pack_transposed are already on
  // the precision's grid (round_weights), and this path multiplies them in T.
  void use_precision(WeightPrecision) {}
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
  // C: [M, cols] (row stride ldc) = (or +=) op(A) · B, where op(A) = A: [M, K] (row stride
  // lda), or with a_trans op(A) = A^T for A: [K, M] (row stride lda).
  void multiply(Index M, const T* A, Index lda, T* C, Index ldc, bool accumulate,
                bool a_trans = false, const T* bias = nullptr) const {
    if (M == 0 || cols_ == 0) return;
    using Strided = Eigen::Map<const Mat<T>, 0, Eigen::OuterStride<>>;
    using StridedOut = Eigen::Map<Mat<T>, 0, Eigen::OuterStride<>>;
    StridedOut c(C, M, cols_, Eigen::OuterStride<>(ldc));
    CMatMap<T> b(data_.data(), K_, cols_);
    if (a_trans) {
      Strided a(A, K_, M, Eigen::OuterStride<>(lda));
      if (accumulate) c.noalias() += a.transpose() * b; else c.noalias() = a.transpose() * b;
    } else {
      Strided a(A, M, K_, Eigen::OuterStride<>(lda));
      if (accumulate) c.noalias() += a * b; else c.noalias() = a * b;
    }
    if (bias) c.rowwise() += CRowVecMap<T>(bias, cols_);
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
// In-register transpose of a 16 x 16 block: r[j][k] -> r[k][j] (three stages of lane shuffles:
// 32-bit pairs, 64-bit pairs, then 128-bit quarters twice).
inline void transpose16(Vec r[16]) {
  Vec t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 2; ++i)
    for (int q = 0; q < 4; ++q) {
      t[8 * i + q] = _mm512_shuffle_f32x4(u[8 * i + q], u[8 * i + 4 + q], 0x88);
      t[8 * i + 4 + q] = _mm512_shuffle_f32x4(u[8 * i + q], u[8 * i + 4 + q], 0xdd);
    }
  for (int q = 0; q < 8; ++q) {
    r[q] = _mm512_shuffle_f32x4(t[q], t[8 + q], 0x88);
    r[8 + q] = _mm512_shuffle_f32x4(t[q], t[8 + q], 0xdd);
  }
}
inline Vec vmul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
// 16 int8 weights widened to float
inline Vec vload(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
// 16 bfloat16 weights widened to float (a bfloat16 is a float's upper half)
inline Vec vload(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
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
inline Vec vmul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
// 8 int8 weights widened to float
inline Vec vload(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
// 8 bfloat16 weights widened to float (a bfloat16 is a float's upper half)
inline Vec vload(const uint16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(
      _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
constexpr int panels_for(int mr) { return mr <= 1 ? 3 : mr <= 2 ? 2 : 1; }
#endif

// C[0:MR, 0:NP*kNR] (=|+=) A[0:MR, 0:K] · [P_0 | ... | P_{NP-1}], panel q at P + q * pstride
// (row k of a panel at + k * kNR); only the last panel may be partial (ncols_last valid columns).
// With ATrans, A is stored transposed: a[r][k] at A[k * lda + r].
// `bias` (null = none) is added to every row: bias[q * kNR + j] for column j of panel q.
// Panels of E = float, or of int8 / bfloat16 weights widened on load; `scale` (null = none)
// multiplies column j of panel q by scale[q * kNR + j] after the sum (int8).
template <int MR, int NP, bool ATrans = false, typename E = float>
inline void micro_kernel(Index K, const float* A, Index lda, const E* P, Index pstride,
                         float* C, Index ldc, bool acc, Index ncols_last,
                         const float* bias = nullptr, const float* scale = nullptr) {
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
      const Vec a = vbroadcast(ATrans ? A + k * lda + r : A + r * lda + k);
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
    if (scale) {
      // c[r] = s ⊙ c[r]: int8 columns back to their scale
      const Vec s0 = vload_n(scale + q * kNR, n), s1 = vload_n(scale + q * kNR + kW, n - kW);
#pragma GCC unroll 12
      for (int r = 0; r < MR; ++r) {
        c[q][0][r] = vmul(c[q][0][r], s0);
        c[q][1][r] = vmul(c[q][1][r], s1);
      }
    }
    if (bias) {
      // c[r] += bias
      const Vec b0 = vload_n(bias + q * kNR, n), b1 = vload_n(bias + q * kNR + kW, n - kW);
#pragma GCC unroll 12
      for (int r = 0; r < MR; ++r) {
        c[q][0][r] = vadd(c[q][0][r], b0);
        c[q][1][r] = vadd(c[q][1][r], b1);
      }
    }
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
template <int MR, bool ATrans, typename E = float>
inline Index rows_block(Index rows, Index K, const float* A, Index lda, const E* P,
                        Index pstride, Index panels_left, float* C, Index ldc, bool acc,
                        Index ncols_last, const float* bias, const float* scale = nullptr) {
  if constexpr (MR > 1) {
    if (rows != MR)
      return rows_block<MR - 1, ATrans, E>(rows, K, A, lda, P, pstride, panels_left, C, ldc, acc,
                                           ncols_last, bias, scale);
  }
  constexpr int NP = panels_for(MR);
  if (NP > 1 && panels_left >= NP) {
    micro_kernel<MR, NP, ATrans, E>(K, A, lda, P, pstride, C, ldc, acc,
                                    panels_left == NP ? ncols_last : kNR, bias, scale);
    return NP;
  }
  micro_kernel<MR, 1, ATrans, E>(K, A, lda, P, pstride, C, ldc, acc,
                                 panels_left == 1 ? ncols_last : kNR, bias, scale);
  return 1;
}

#if defined(RNNKIT_GEMM_AVX512) && defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define RNNKIT_GEMM_VNNI 1
// int8 x int8 with VNNI (vpdpbusd: 64 multiply-adds per instruction). The weight panel is kept
// in groups of 4 rows of depth: panel + g * 4 * kNR holds, for columns j = 0..kNR-1, the 4 bytes
// q[4g..4g+3][j] (one 32-bit lane per column), so one zmm of a group is 16 columns' 4 products.
// Each row of A is quantized dynamically (as torch's quantize_dynamic does): a ≈ s_a (u - 128),
// s_a = max|a| / 127, u = round(a / s_a) + 128 in [1, 255]; then
//   c_j = s_a s_j (Σ_k u_k q_kj - 128 Σ_k q_kj)     (colsum_j = Σ_k q_kj, kept with the panel).
// u: [MR, Kp] bytes (Kp = K rounded up to 4, the padding u = 128 against zero weights),
// sa: [MR] the rows' scales.
// NP panels side by side (P + q * pstride, their scales and column sums at q * kNR): with few
// rows, more independent accumulators keep vpdpbusd's latency hidden. Only the last panel may be
// partial (ncols_last columns).
template <int MR, int NP>
inline void vnni_kernel(Index groups, const uint8_t* u, Index ldu, const float* sa, const int8_t* P,
                        Index pstride, const float* scale, const int32_t* colsum, float* C,
                        Index ldc, bool acc, Index ncols_last, const float* bias) {
  __m512i c[MR][NP][2];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int q = 0; q < NP; ++q) c[r][q][0] = c[r][q][1] = _mm512_setzero_si512();
  for (Index g = 0; g < groups; ++g) {
    __m512i b[NP][2];
#pragma GCC unroll 4
    for (int q = 0; q < NP; ++q) {
      b[q][0] = _mm512_loadu_si512(P + q * pstride + g * 4 * kNR);
      b[q][1] = _mm512_loadu_si512(P + q * pstride + g * 4 * kNR + 64);
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      // c[r][j] += Σ_{i<4} u[r][4g+i] q[4g+i][j]
      int32_t a4;
      std::memcpy(&a4, u + r * ldu + 4 * g, 4);
      const __m512i a = _mm512_set1_epi32(a4);
#pragma GCC unroll 4
      for (int q = 0; q < NP; ++q) {
        c[r][q][0] = _mm512_dpbusd_epi32(c[r][q][0], a, b[q][0]);
        c[r][q][1] = _mm512_dpbusd_epi32(c[r][q][1], a, b[q][1]);
      }
    }
  }
#pragma GCC unroll 4
  for (int q = 0; q < NP; ++q) {
    const Index n = q == NP - 1 ? ncols_last : kNR, o = q * kNR;
    const __m512i cs0 = _mm512_slli_epi32(_mm512_loadu_si512(colsum + o), 7);
    const __m512i cs1 = _mm512_slli_epi32(_mm512_loadu_si512(colsum + o + 16), 7);
    const Vec s0 = vload_n(scale + o, n), s1 = vload_n(scale + o + kW, n - kW);
    const Vec b0 = bias ? vload_n(bias + o, n) : vzero();
    const Vec b1 = bias ? vload_n(bias + o + kW, n - kW) : vzero();
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      // c = s_a s_j (acc - 128 colsum_j) + bias
      const Vec sr = _mm512_set1_ps(sa[r]);
      Vec v0 = _mm512_cvtepi32_ps(_mm512_sub_epi32(c[r][q][0], cs0));
      Vec v1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(c[r][q][1], cs1));
      v0 = vfma(vmul(v0, s0), sr, b0);
      v1 = vfma(vmul(v1, s1), sr, b1);
      float* cp = C + r * ldc + o;
      if (acc) {
        v0 = vadd(v0, vload_n(cp, n));
        v1 = vadd(v1, vload_n(cp + kW, n - kW));
      }
      vstore_n(cp, v0, n);
      vstore_n(cp + kW, v1, n - kW);
    }
  }
}

// `rows` (1..MR) rows against panels [p, p + panels_left): the widest kernel that fits; returns
// the number of panels done.
template <int MR>
inline Index vnni_rows(Index rows, Index groups, const uint8_t* u, Index ldu, const float* sa,
                       const int8_t* P, Index pstride, Index panels_left, const float* scale,
                       const int32_t* colsum, float* C, Index ldc, bool acc, Index ncols_last,
                       const float* bias) {
  if constexpr (MR > 1) {
    if (rows != MR)
      return vnni_rows<MR - 1>(rows, groups, u, ldu, sa, P, pstride, panels_left, scale, colsum, C,
                               ldc, acc, ncols_last, bias);
  }
  constexpr int NP = MR == 1 ? 4 : MR == 2 ? 2 : 1;
  if (NP > 1 && panels_left >= NP) {
    vnni_kernel<MR, NP>(groups, u, ldu, sa, P, pstride, scale, colsum, C, ldc, acc,
                        panels_left == NP ? ncols_last : kNR, bias);
    return NP;
  }
  vnni_kernel<MR, 1>(groups, u, ldu, sa, P, pstride, scale, colsum, C, ldc, acc,
                     panels_left == 1 ? ncols_last : kNR, bias);
  return 1;
}
#endif

// Cache blocking of a large product (tuning.h): kKC rows of a panel stay in L1, a block of
// kMC x kKC of A in L2.
constexpr Index kKC = tuning::kKC, kMC = tuning::kMCRowBlocks * kMR;

}  // namespace detail

// float with AVX2/AVX-512: B kept as zero-padded column panels of kNR floats.
template <>
class PackedB<float> {
 public:
  // The precision of the next pack_transposed (an inference stream's weights; F32 by default).
  void use_precision(WeightPrecision p) { prec_ = p; }
  // Allocates room for a [K, cols] operand, so that packing later does not allocate.
  void reserve(Index K, Index cols) {
    data_.reserve((cols + detail::kNR - 1) / detail::kNR * K * detail::kNR);
  }
  // B[k][j] = W[c0 + j][k]: the columns [c0, c1) of W^T, W: [*, K] row-major; in bfloat16 or
  // int8 (one scale per column) when use_precision asked for it.
  void pack_transposed(const float* W, Index K, Index c0, Index c1) {
    reset(K, c1 - c0);
    const Index pstride = K_ * detail::kNR;
#if defined(RNNKIT_GEMM_AVX512)
    if (prec_ == WeightPrecision::F32) {
      // 16 columns x 16 depths at a time through registers: 2.3-2.9x faster than one value at a
      // time (a batch-1 LSTM(256) forward spent 15% of its time packing, perf)
      for (Index j0 = 0; j0 < cols_; j0 += 16) {
        const Index jn = std::min<Index>(16, cols_ - j0);
        // B[k][j] for j in [j0, j0 + jn): panel j0 / kNR, columns j0 % kNR ...
        float* panel = data_.data() + (j0 / detail::kNR) * pstride + j0 % detail::kNR;
        Index k0 = 0;
        if (jn == 16)
          for (; k0 + 16 <= K_; k0 += 16) {
            detail::Vec r[16];
            for (int j = 0; j < 16; ++j) r[j] = _mm512_loadu_ps(W + (c0 + j0 + j) * K + k0);
            detail::transpose16(r);
            for (int k = 0; k < 16; ++k) _mm512_storeu_ps(panel + (k0 + k) * detail::kNR, r[k]);
          }
        for (Index j = 0; j < jn; ++j)
          for (Index k = k0; k < K_; ++k) panel[k * detail::kNR + j] = W[(c0 + j0 + j) * K + k];
      }
      return;
    }
#endif
    for (Index j = 0; j < cols_; ++j) {
      const Index at = (j / detail::kNR) * pstride + j % detail::kNR;  // B[0][j] in the panels
      const float* w = W + (c0 + j) * K;
      if (prec_ == WeightPrecision::F32) {
        for (Index k = 0; k < K_; ++k) data_[at + k * detail::kNR] = w[k];
      } else if (prec_ == WeightPrecision::BF16) {
        for (Index k = 0; k < K_; ++k) bf16_[at + k * detail::kNR] = to_bf16(w[k]);
      } else {
        // w ≈ s_j q: s_j = max |w| / 127
        const float sc = int8_scale(w, K_);
        scales_[j] = sc;
#if defined(RNNKIT_GEMM_VNNI)
        // groups of 4 depths per column (see detail::vnni_kernel)
        int8_t* panel = int8_.data() + (j / detail::kNR) * vnni_pstride() + (j % detail::kNR) * 4;
        int32_t sum = 0;
        for (Index k = 0; k < K_; ++k) {
          const int8_t q = to_int8(w[k], sc);
          panel[(k / 4) * 4 * detail::kNR + k % 4] = q;
          sum += q;
        }
        colsum_[j] = sum;
#else
        for (Index k = 0; k < K_; ++k) int8_[at + k * detail::kNR] = to_int8(w[k], sc);
#endif
      }
    }
  }
  // B[k][j] = W[k][c0 + j]: the columns [c0, c1) of W: [K, ldw] row-major (float only: the
  // backward's operands).
  void pack_plain(const float* W, Index K, Index ldw, Index c0, Index c1) {
    prec_ = WeightPrecision::F32;
    reset(K, c1 - c0);
    for (Index p = 0; p * detail::kNR < cols_; ++p) {
      const Index j0 = p * detail::kNR, n = std::min(detail::kNR, cols_ - j0);
      float* panel = data_.data() + p * K_ * detail::kNR;
      for (Index k = 0; k < K_; ++k)
        std::copy(W + k * ldw + c0 + j0, W + k * ldw + c0 + j0 + n, panel + k * detail::kNR);
    }
  }
  // C: [M, cols] (row stride ldc) = (or +=) op(A) · B, where op(A) = A: [M, K] (row stride
  // lda), or with a_trans op(A) = A^T for A: [K, M] (row stride lda).
  // `bias: [cols]` (null = none) is added to every row of the product.
  void multiply(Index M, const float* A, Index lda, float* C, Index ldc, bool accumulate,
                bool a_trans = false, const float* bias = nullptr) const {
    switch (prec_) {
      case WeightPrecision::F32:
        return a_trans ? run<true>(data_.data(), nullptr, M, A, lda, C, ldc, accumulate, bias)
                       : run<false>(data_.data(), nullptr, M, A, lda, C, ldc, accumulate, bias);
      case WeightPrecision::BF16:
        return a_trans ? run<true>(bf16_.data(), nullptr, M, A, lda, C, ldc, accumulate, bias)
                       : run<false>(bf16_.data(), nullptr, M, A, lda, C, ldc, accumulate, bias);
      case WeightPrecision::INT8:
#if defined(RNNKIT_GEMM_VNNI)
        require(!a_trans, "an int8 packed weight multiplies a row-major A only");
        return run_vnni(M, A, lda, C, ldc, accumulate, bias);
#else
        return a_trans ? run<true>(int8_.data(), scales_.data(), M, A, lda, C, ldc, accumulate, bias)
                       : run<false>(int8_.data(), scales_.data(), M, A, lda, C, ldc, accumulate, bias);
#endif
    }
  }

 private:
  // data: the panels (float, bfloat16 or int8); scales: int8's per-column scales (else null)
  template <bool ATrans, typename E>
  void run(const E* data, const float* scales, Index M, const float* A, Index lda, float* C,
           Index ldc, bool accumulate, const float* bias) const {
    using namespace detail;
    if (M == 0 || cols_ == 0) return;
    const Index panels = (cols_ + kNR - 1) / kNR, pstride = K_ * kNR;
    const Index ncols_last = cols_ - (panels - 1) * kNR;
    // a[i][k] for the block at row i, depth k
    auto a_at = [&](Index i, Index k) { return ATrans ? A + k * lda + i : A + i * lda + k; };
    if (M < kMR) {
      // one block of rows: panels in groups as wide as the row count allows (GEMV-like shapes)
      for (Index p = 0; p < panels;)
        p += rows_block<int(kMR), ATrans, E>(M, K_, A, lda, data + p * pstride, pstride,
                                             panels - p, C + p * kNR, ldc, accumulate, ncols_last,
                                             bias ? bias + p * kNR : nullptr,
                                             scales ? scales + p * kNR : nullptr);
      return;
    }
    // a transposed A is read across rows a page apart: each block of it is copied first into
    // a contiguous [kn, mn] buffer (per thread, kept between calls)
    thread_local AlignedVec<float> a_block;
    if (ATrans && a_block.size() < size_t(kKC * kMC)) a_block.resize(kKC * kMC);
    for (Index kc = 0; kc < K_; kc += kKC) {
      const Index kn = std::min(kKC, K_ - kc);
      const bool acc = accumulate || kc > 0;
      for (Index mc = 0; mc < M; mc += kMC) {
        const Index mn = std::min(kMC, M - mc);
        const float* Ab = nullptr;  // the packed block (ATrans), a[i][k] at Ab[(k-kc)*mn + i-mc]
        if (ATrans) {
          for (Index k = 0; k < kn; ++k)
            std::copy(A + (kc + k) * lda + mc, A + (kc + k) * lda + mc + mn,
                      a_block.data() + k * mn);
          Ab = a_block.data();
        }
        // a[i][kc...] for the rows from i
        auto a_blk = [&](Index i) { return ATrans ? Ab + (i - mc) : a_at(i, kc); };
        const Index lda_blk = ATrans ? mn : lda;
        // panel by panel, so that a panel's kn rows stay in L1 while the rows of A pass over it
        for (Index p = 0; p < panels; ++p) {
          const E* P = data + p * pstride + kc * kNR;
          const Index n = p == panels - 1 ? ncols_last : kNR;
          // the bias joins once, with the first block of depth
          const float* bp = (bias && kc == 0) ? bias + p * kNR : nullptr;
          // int8: each block of depth is scaled on its own (s Σ_kc = Σ_kc s ·)
          const float* sp = scales ? scales + p * kNR : nullptr;
          Index i = mc;
          for (; i + kMR <= mc + mn; i += kMR)
            micro_kernel<int(kMR), 1, ATrans, E>(kn, a_blk(i), lda_blk, P, pstride,
                                                 C + i * ldc + p * kNR, ldc, acc, n, bp, sp);
          if (i < mc + mn)
            rows_block<int(kMR), ATrans, E>(mc + mn - i, kn, a_blk(i), lda_blk, P, pstride, 1,
                                            C + i * ldc + p * kNR, ldc, acc, n, bp, sp);
        }
      }
    }
  }

#if defined(RNNKIT_GEMM_VNNI)
  Index vnni_pstride() const { return (K_ + 3) / 4 * 4 * detail::kNR; }
  // C (=|+=) A · B with int8 B and A quantized per row on the fly (detail::vnni_kernel), in
  // blocks of up to 4 rows. A: [M, K] row-major.
  void run_vnni(Index M, const float* A, Index lda, float* C, Index ldc, bool accumulate,
                const float* bias) const {
    using namespace detail;
    if (M == 0 || cols_ == 0) return;
    constexpr int kRows = 4;
    const Index Kp = (K_ + 3) / 4 * 4, groups = Kp / 4, panels = (cols_ + kNR - 1) / kNR;
    thread_local std::vector<uint8_t> u;  // [kRows, Kp] quantized rows (per thread, kept)
    if (u.size() < size_t(kRows * Kp)) u.resize(kRows * Kp);
    float sa[kRows];
    for (Index i0 = 0; i0 < M; i0 += kRows) {
      const Index rows = std::min<Index>(kRows, M - i0);
      for (Index r = 0; r < rows; ++r) {
        // u = round(a / s_a) + 128, s_a = max|a| / 127 (the padding: 128, i.e. zero)
        const float* a = A + (i0 + r) * lda;
        // m = max_k |a_k|, 16 lanes at a time (the tail masked)
        __m512 mx = _mm512_setzero_ps();
        for (Index k = 0; k < K_; k += 16)
          mx = _mm512_max_ps(mx, _mm512_abs_ps(vload_n(a + k, K_ - k)));
        const float m = _mm512_reduce_max_ps(mx);
        sa[r] = m > 0.0f ? m / 127.0f : 1.0f;
        const float inv = 1.0f / sa[r];
        uint8_t* ur = u.data() + r * Kp;
        // u = round(clamp(a / s_a, -127, 127)) + 128 (round to nearest even, as std::nearbyint
        // in the default rounding mode), 16 at a time, narrowed to bytes
        const __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
        const __m512i zp = _mm512_set1_epi32(128);
        for (Index k = 0; k < K_; k += 16) {
          const __m512 q = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_mul_ps(vload_n(a + k, K_ - k), vinv)));
          const __m512i qi = _mm512_add_epi32(_mm512_cvtps_epi32(q), zp);
          _mm_mask_storeu_epi8(ur + k, lanes(K_ - k), _mm512_cvtepi32_epi8(qi));
        }
        for (Index k = K_; k < Kp; ++k) ur[k] = 128;
      }
      const Index ncols_last = cols_ - (panels - 1) * kNR;
      for (Index p = 0; p < panels;)
        p += vnni_rows<kRows>(rows, groups, u.data(), Kp, sa, int8_.data() + p * vnni_pstride(),
                              vnni_pstride(), panels - p, scales_.data() + p * kNR,
                              colsum_.data() + p * kNR, C + i0 * ldc + p * kNR, ldc, accumulate,
                              ncols_last, bias ? bias + p * kNR : nullptr);
    }
  }
#endif

  // Zero-padded panels of the current precision (the others' storage freed).
  void reset(Index K, Index cols) {
    K_ = K;
    cols_ = cols;
    const Index panels = (cols + detail::kNR - 1) / detail::kNR, n = panels * K * detail::kNR;
    if (prec_ == WeightPrecision::F32) {
      // every entry but the last panel's padding columns is written by the pack that follows:
      // only that panel is zeroed
      data_.resize(n);
      if (cols % detail::kNR)
        std::fill(data_.begin() + (panels - 1) * K * detail::kNR, data_.begin() + n, 0.0f);
    } else {
      AlignedVec<float>().swap(data_);
    }
    if (prec_ == WeightPrecision::BF16) bf16_.assign(n, 0); else AlignedVec<uint16_t>().swap(bf16_);
    if (prec_ == WeightPrecision::INT8) {
#if defined(RNNKIT_GEMM_VNNI)
      int8_.assign(panels * vnni_pstride(), 0);  // depth padded to a multiple of 4
      colsum_.assign(panels * detail::kNR, 0);
#else
      int8_.assign(n, 0);
#endif
      scales_.assign(panels * detail::kNR, 0.0f);
    } else {
      AlignedVec<int8_t>().swap(int8_);
      AlignedVec<float>().swap(scales_);
    }
  }
  WeightPrecision prec_ = WeightPrecision::F32;
  Index K_ = 0, cols_ = 0;
  AlignedVec<float> data_;      // F32 panels
  AlignedVec<uint16_t> bf16_;   // BF16 panels
  AlignedVec<int8_t> int8_;     // INT8 panels
  AlignedVec<float> scales_;    // INT8: one scale per column, [panels * kNR]
  AlignedVec<int32_t> colsum_;  // INT8 with VNNI: Σ_k q_kj per column, [panels * kNR]
};

#endif  // AVX2 / AVX-512

}  // namespace rnnkit

namespace rnnkit {

// Runs the threads of a time loop under its LoopPlan (core.h), each with its share of every step
// and its packed recurrent weights. The step's product is [N, K] x [K, cols]; pack(B, c0, c1)
// packs the columns [c0, c1) of its right side into B, once per call, on the thread that uses
// them. With `prepacked` (a long-lived caller's whole matrix, packed already: a stream's) nothing
// is packed; the threads then share it read-only and split the batch rows (no barrier) when the
// rows plan's thresholds hold (tuning.h), else one thread runs (a batch-1 step always).
//   body(const StepShare& s, const PackedB<T>& Wk) runs on every thread; at the top of every step
//   it calls s.poll(), and after the step's first s.sync() leaves the loop if s.should_stop().
// Returns false when the loop stopped early (a pending interrupt), true when it completed.
template <typename T, typename Pack, typename Body>
bool run_time_loop(Index steps, Index N, Index K, Index cols, const PackedB<T>* prepacked,
                   Pack&& pack, Body&& body) {
  int want = num_threads();
  if (prepacked && !(want > 1 && N >= tuning::kRowsPlanMinRows * want &&
                     double(steps) * 2.0 * double(N) * double(K) * double(cols) >=
                         double(tuning::kRowsPlanMinFlops)))
    want = 1;
  ThreadLease lease(want);
  const LoopPlan plan = prepacked ? (lease.count() > 1 ? LoopPlan{lease.count(), true} : LoopPlan{})
                                  : loop_plan(lease.count(), steps, N, K, cols);
  StopSignal stop;
  stop.interruptible = interruptible_here();
  // one slice per thread, reserved before the region so that nothing allocates inside it
  std::vector<PackedB<T>> packs(prepacked ? 0 : plan.threads);
  for (int k = 0; k < int(packs.size()); ++k)
    packs[k].reserve(K, plan.by_rows ? cols : split(cols, k, plan.threads).size());
  run_team(plan.threads, [&](int tid, int team) {
    DenormalGuard thread_ftz;
    const StepShare s = step_share(plan, N, cols, tid, team, &stop);
    if (!prepacked) pack(packs[tid], s.cols.begin, s.cols.end);
    body(s, prepacked ? *prepacked : packs[tid]);
  });
  return !stop.stopped.load();
}

}  // namespace rnnkit

namespace rnnkit {

// C: [M, cols] (row stride ldc) = (or +=) op(A) · B for a large product, on every thread.
// `pack(PackedB<T>&, c0, c1)` packs the columns [c0, c1) of B (depth K). The threads split the
// columns of C when there are enough (each packs its own slice), else the rows.
template <typename T, typename Pack>
void gemm_parallel(Index M, Index cols, Index K, const T* A, Index lda, bool a_trans, Pack&& pack,
                   T* C, Index ldc, bool accumulate, const T* bias = nullptr) {
  if (M == 0 || cols == 0) return;
  const double flops = 2.0 * double(M) * double(cols) * double(K);
  // small products on one thread (tuning.h)
  ThreadLease lease(flops < tuning::kGemmParallelMinFlops ? 1 : num_threads());
  const int nt = lease.count();
  const bool by_cols = cols >= tuning::kGemmMinColsPerThread * nt;
  std::vector<PackedB<T>> packs(nt);
  for (int k = 0; k < nt; ++k) packs[k].reserve(K, by_cols ? split(cols, k, nt).size() : cols);
  run_team(nt, [&](int tid, int team) {
    DenormalGuard thread_ftz;
    PackedB<T>& B = packs[tid];
    if (by_cols) {
      const Range c = split(cols, tid, team);
      if (c.size()) {
        pack(B, c.begin, c.end);
        B.multiply(M, A, lda, C + c.begin, ldc, accumulate, a_trans,
                   bias ? bias + c.begin : nullptr);
      }
    } else {
      const Range r = split(M, tid, team, 1);
      if (r.size()) {
        pack(B, Index(0), cols);
        const T* Ar = a_trans ? A + r.begin : A + r.begin * lda;
        B.multiply(r.size(), Ar, lda, C + r.begin * ldc, ldc, accumulate, a_trans, bias);
      }
    }
  });
}

// Runs f(r0, r1) over [0, rows) in consecutive pieces of at most about
// tuning::kInterruptChunkFlops (`flops_per_row` each row) and tuning::kInterruptChunkBytes
// (`bytes_per_row` of memory each row touches), polling for an interrupt between pieces (core.h,
// "Interrupts"). Returns false when it stopped early.
template <typename F>
bool for_row_chunks(Index rows, double flops_per_row, double bytes_per_row, F&& f) {
  const bool interruptible = interruptible_here();
  const double by_flops = tuning::kInterruptChunkFlops / std::max(flops_per_row, 1.0);
  const double by_bytes = tuning::kInterruptChunkBytes / std::max(bytes_per_row, 1.0);
  const Index chunk = interruptible ? std::max<Index>(1, Index(std::min(by_flops, by_bytes))) : rows;
  for (Index r0 = 0; r0 < rows; r0 += chunk) {
    if (stop_requested(interruptible)) return false;
    f(r0, std::min(rows, r0 + chunk));
  }
  return true;
}

// The hoisted input projection of all time steps, one GEMM (in interruptible pieces of rows):
//   out: [T*N, GH] = x: [T*N, C] · w_ih^T: [C, GH] + b1 + b2      (b1, b2: [GH], either may be null)
//   (`packed`, when given, is w_ih^T already packed: nothing is packed and one thread runs)
// Returns false when an interrupt stopped it early.
template <typename T>
inline bool input_projection(const Dims& d, Index GH, const T* x, const T* w_ih, const T* b1,
                             const T* b2, T* out, const PackedB<T>* packed = nullptr) {
  // b1 + b2 when both are given, in a buffer kept by the calling thread (a stream step must not
  // allocate: malloc + free were 3% of a batch-1 int8 LSTM step, perf)
  thread_local AlignedVec<T> b;
  const bool both = b1 && b2;
  if (both) {
    if (Index(b.size()) < GH) b.resize(GH);
    RowVecMap<T>(b.data(), GH) = CRowVecMap<T>(b1, GH) + CRowVecMap<T>(b2, GH);
  }
  const T* bias = both ? b.data() : b1 ? b1 : b2;
  return for_row_chunks(d.T * d.N, 2.0 * double(d.C) * double(GH), double(sizeof(T) * (d.C + GH)),
                        [&](Index r0, Index r1) {
    // out[r0:r1] = x[r0:r1] · w_ih^T + b
    if (packed) {
      // a stream's packed weight, shared read-only: the rows split over the threads when the
      // product is large enough (tuning.h), else one thread
      const double flops = 2.0 * double(r1 - r0) * double(d.C) * double(GH);
      ThreadLease lease(flops < tuning::kGemmParallelMinFlops ? 1 : num_threads());
      run_team(lease.count(), [&](int tid, int team) {
        DenormalGuard thread_ftz;
        const Range r = split(r1 - r0, tid, team, 1);
        if (r.size())
          packed->multiply(r.size(), x + (r0 + r.begin) * d.C, d.C, out + (r0 + r.begin) * GH, GH,
                           false, false, bias);
      });
      return;
    }
    gemm_parallel<T>(
        r1 - r0, GH, d.C, x + r0 * d.C, d.C, false,
        [&](PackedB<T>& B, Index c0, Index c1) { B.pack_transposed(w_ih, d.C, c0, c1); },
        out + r0 * GH, GH, false, bias);
  });
}

// db: [GH] = the sum over rows of G: [rows, GH], in a fixed order (reproducible run to run).
template <typename T>
inline void column_sums(const T* G, Index rows, Index GH, T* db) {
  ThreadLease lease(rows * GH < tuning::kColumnSumsParallelEntries ? 1 : num_threads());
  run_team(lease.count(), [&](int tid, int team) {
    DenormalGuard thread_ftz;
    const Range c = split(GH, tid, team);
    if (c.size()) {
      RowVecMap<T> out(db + c.begin, c.size());
      out.setZero();
      // db[c] += G[r, c] for r = 0, 1, ...
      for (Index r = 0; r < rows; ++r) out += CRowVecMap<T>(G + r * GH + c.begin, c.size());
    }
  });
}

// A weight gradient over all rows of a sequence, one GEMM in interruptible pieces of rows:
//   dW: [M, K] = dG^T · A      dG: [rows, M] (row stride ldg, e.g. some gate columns of a wider
//   gradient), A: [rows, K]      ([M, rows] x [rows, K], the pieces accumulating)
// Returns false when an interrupt stopped it early.
template <typename T>
inline bool weight_grad(Index rows, Index M, const T* dG, Index ldg, const T* A, Index K, T* dW) {
  return for_row_chunks(rows, 2.0 * double(M) * double(K), double(sizeof(T) * (M + K)),
                        [&](Index r0, Index r1) {
    gemm_parallel<T>(
        M, K, r1 - r0, dG + r0 * ldg, ldg, true,
        [&](PackedB<T>& B, Index c0, Index c1) { B.pack_plain(A + r0 * K, r1 - r0, K, c0, c1); },
        dW, K, /*accumulate=*/r0 > 0);
  });
}

// The input gradient of a sequence, one GEMM in interruptible pieces of rows:
//   dx: [T*N, C] = dGx: [T*N, GH] · w_ih: [GH, C]      (nothing when dx is null)
// Returns false when an interrupt stopped it early.
template <typename T>
inline bool input_grad(const Dims& d, Index GH, const T* dGx, const T* w_ih, T* dx) {
  if (!dx) return true;
  return for_row_chunks(d.T * d.N, 2.0 * double(GH) * double(d.C), double(sizeof(T) * (GH + d.C)),
                        [&](Index r0, Index r1) {
    gemm_parallel<T>(
        r1 - r0, d.C, GH, dGx + r0 * GH, GH, false,
        [&](PackedB<T>& B, Index c0, Index c1) { B.pack_plain(w_ih, GH, d.C, c0, c1); },
        dx + r0 * d.C, d.C, false);
  });
}

// The gradients that come from single GEMMs after the backward loop (each one product over all
// T*N rows, run in interruptible pieces of rows that accumulate).
//   dGx: [T*N, GH] gradient of the input pre-activations, dGh: [T*N, GH] of the recurrent ones
//   (the same buffer for RNN and LSTM), x: [T*N, C], hprev: [T*N, H] states before each step.
//   dx: [T*N, C] = dGx · w_ih;  dw_ih: [GH, C] = dGx^T · x;  dw_hh: [GH, H] = dGh^T · hprev;
//   db_ih = sum_rows dGx;  db_hh = sum_rows dGh   (dx, db_ih, db_hh may be null to skip)
// Returns false when an interrupt stopped it early.
template <typename T>
inline bool weight_gradients(const Dims& d, Index GH, const T* dGx, const T* dGh, const T* x,
                             const T* hprev, const T* w_ih, T* dx, T* dw_ih, T* dw_hh, T* db_ih,
                             T* db_hh) {
  const Index rows = d.T * d.N;
  // dx = dGx · w_ih                  [T*N, GH] x [GH, C]      (skipped when dx is null)
  if (!input_grad(d, GH, dGx, w_ih, dx)) return false;
  // dw_ih = dGx^T · x;  dw_hh = dGh^T · hprev
  if (!weight_grad(rows, GH, dGx, GH, x, d.C, dw_ih) ||
      !weight_grad(rows, GH, dGh, GH, hprev, d.H, dw_hh))
    return false;
  // db = sum over all T*N rows
  if (db_ih) column_sums(dGx, rows, GH, db_ih);
  if (db_hh) column_sums(dGh, rows, GH, db_hh);
  return true;
}

}  // namespace rnnkit
