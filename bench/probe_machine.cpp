// The two machine limits that bound rnnkit's kernels on this CPU, measured directly:
//   1. the FMA peak of one core: 24 independent chains of vector FMAs, no memory traffic;
//   2. the read bandwidth of one core from L1, L2 and beyond: repeated sums over buffers of
//      32 KiB (L1) to 8 MiB, 8 vector loads per iteration.
// A batch-1 recurrent step must read its whole weight (LSTM C=64, H=128: w_hh^T is 256 KiB, plus
// 128 KiB of w_ih^T for a single step), so (2) bounds the streaming latency; (1) bounds every
// large GEMM.
//
// Build and run (x86-64 with AVX2+FMA or AVX-512, GCC or Clang):
//   c++ -O2 -march=native -pthread bench/probe_machine.cpp -o /tmp/probe && /tmp/probe
#include <immintrin.h>

#include <chrono>
#include <thread>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>

#if defined(__AVX512F__)
using V = __m512;
constexpr int kW = 16;
static V vset(float x) { return _mm512_set1_ps(x); }
static V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
static V vadd(V a, V b) { return _mm512_add_ps(a, b); }
static V vload(const float* p) { return _mm512_load_ps(p); }
static float vsum(V v) { return _mm512_reduce_add_ps(v); }
#elif defined(__AVX2__) && defined(__FMA__)
using V = __m256;
constexpr int kW = 8;
static V vset(float x) { return _mm256_set1_ps(x); }
static V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
static V vadd(V a, V b) { return _mm256_add_ps(a, b); }
static V vload(const float* p) { return _mm256_load_ps(p); }
static float vsum(V v) {
  alignas(32) float b[8];
  _mm256_store_ps(b, v);
  float s = 0;
  for (float x : b) s += x;
  return s;
}
#else
#error "needs AVX2+FMA or AVX-512 (build with -march=native)"
#endif

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// GFLOP/s of 24 independent chains of vector FMAs (enough to hide the FMA latency on 2 ports),
// best of 5; `sink` keeps the result alive.
static double fma_peak(float* sink) {
  V c[24];
  for (int i = 0; i < 24; ++i) c[i] = vset(float(i));
  const V a = vset(0.999999f), b = vset(1e-6f);
  const long iters = 20000000;
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const double t0 = now();
    for (long k = 0; k < iters; ++k) {
#pragma GCC unroll 24
      for (int i = 0; i < 24; ++i) c[i] = vfma(a, c[i], b);
    }
    const double gf = iters * 24.0 * kW * 2 / (now() - t0) / 1e9;
    best = gf > best ? gf : best;
  }
  for (int i = 0; i < 24; ++i) *sink += vsum(c[i]);
  return best;
}

int main() {
  // 1. FMA peak of one thread, then of two threads at once: on a VM whose two vCPUs are SMT
  //    siblings of one physical core (or share one core's time), the pair's sum is no more than
  //    one thread's, and no two-thread kernel can beat that
  float sink = 0;
  const double one = fma_peak(&sink);
  std::printf("FMA peak, one core, float32: %.1f GFLOP/s (best of 5; %d-float vectors)\n", one, kW);
  double two[2] = {0, 0};
  float sinks[2] = {0, 0};
  {
    std::thread t1([&] { two[1] = fma_peak(&sinks[1]); });
    two[0] = fma_peak(&sinks[0]);
    t1.join();
  }
  sink += sinks[0] + sinks[1];
  std::printf("FMA peak, two threads at once: %.1f + %.1f = %.1f GFLOP/s (%.2fx one thread)\n", two[0],
              two[1], two[0] + two[1], (two[0] + two[1]) / one);

  // 2. read bandwidth by buffer size
  std::printf("read bandwidth, one core (best of 7):\n");
  for (long kib : {32L, 128L, 256L, 384L, 1024L, 8192L}) {
    const long n = kib * 1024 / 4;
    float* buf = static_cast<float*>(std::aligned_alloc(64, n * 4));
    for (long i = 0; i < n; ++i) buf[i] = 1e-3f * float(i % 7);
    const long reps = 2000000000L / (n * 4) + 1;
    double best_t = 1e30;
    V s[8];
    for (int rep = 0; rep < 7; ++rep) {
      for (auto& v : s) v = vset(0.f);
      const double t0 = now();
      for (long r = 0; r < reps; ++r)
        for (long i = 0; i < n; i += 8 * kW)
#pragma GCC unroll 8
          for (int j = 0; j < 8; ++j) s[j] = vadd(s[j], vload(buf + i + j * kW));
      const double t = (now() - t0) / reps;
      best_t = t < best_t ? t : best_t;
    }
    for (auto& v : s) sink += vsum(v);
    std::printf("  %5ld KiB: %7.3f us per pass, %6.1f GB/s\n", kib, best_t * 1e6,
                n * 4 / best_t / 1e9);
    std::free(buf);
  }
  std::printf("(checksum %g)\n", double(sink));
}
