// rnnkit core: the types, activations, checks and threading policy shared by every cell.
//
// Conventions used across src/cpp:
//   T  time steps, N batch, C input features, H hidden units, G gates (RNN 1, GRU 3, LSTM 4).
//   All buffers are C-contiguous (row-major). Sequences are time-major, x: [T, N, C].
//   Weights follow PyTorch: w_ih: [G*H, C], w_hh: [G*H, H], biases [G*H].
//   State buffers S: [T+1, N, H] hold the initial state and the state after every step, laid out so
//   that the state *before* time t is one contiguous block (see StateIndex below).
#pragma once

#include <Eigen/Core>

#include "tuning.h"

#include <algorithm>
#include <cmath>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__SSE__) || defined(_M_X64)
#include <immintrin.h>
#define RNNKIT_HAS_MXCSR 1
#endif

namespace rnnkit {

using Index = Eigen::Index;

// Row-major dynamic matrix and its maps: the only matrix types the kernels use.
template <typename T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using MatMap = Eigen::Map<Mat<T>>;
template <typename T>
using CMatMap = Eigen::Map<const Mat<T>>;
template <typename T>
using RowVec = Eigen::Matrix<T, 1, Eigen::Dynamic>;
template <typename T>
using RowVecMap = Eigen::Map<RowVec<T>>;
template <typename T>
using CRowVecMap = Eigen::Map<const RowVec<T>>;

// Sizes of one recurrent call: x: [T, N, C], hidden [N, H].
struct Dims {
  Index T = 0, N = 0, C = 0, H = 0;
  // LSTM with projection (LSTMP): the state h is [N, P] (0 = no projection: h is [N, H])
  Index P = 0;
  // the width of the carried state h
  Index state() const { return P ? P : H; }
};

// Throws std::invalid_argument (ValueError in Python) when `ok` is false.
inline void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

// Where the state before / after time t lives in S: [T+1, N, H].
//   forward:  S[0] = h0,  state after t at S[t+1]  ->  before(t) = t,     after(t) = t+1
//   reverse:  S[T] = h0,  state after t at S[t]    ->  before(t) = t+1,   after(t) = t
// so the states *before* every step, Hprev: [T, N, H], are the contiguous block S[before(0) ...].
struct StateIndex {
  Index T;
  bool reverse;
  Index before(Index t) const { return reverse ? t + 1 : t; }
  Index after(Index t) const { return reverse ? t : t + 1; }
  Index initial() const { return reverse ? T : 0; }
  // first row block of Hprev (the states before each step, indexed by time)
  Index hprev_block() const { return reverse ? 1 : 0; }
  // time index of the k-th processed step
  Index time_of(Index k) const { return reverse ? T - 1 - k : k; }
};

// ---------------------------------------------------------------------------------------------
// Activations on Eigen arrays. Eigen 3.4 vectorises tanh, exp and logistic for float (AVX2/FMA).
// ---------------------------------------------------------------------------------------------

// sigma(x) = 1 / (1 + exp(-x))
template <typename Derived>
inline auto sigmoid(const Eigen::ArrayBase<Derived>& x) {
  return x.logistic();
}

// The fused gate passes of float run on SIMD packets through Eigen's packet math (AVX-512: 16
// floats, AVX2: 8), one pass per row that reads every gate once and writes every result once;
// the tail of a row (H not a multiple of the packet) goes through zero-padded local copies, so
// no lane is ever computed by scalar code. float64 keeps Eigen array expressions.
namespace simd {
using Packet = Eigen::internal::packet_traits<float>::type;
constexpr Index kLanes = Index(sizeof(Packet) / sizeof(float));

inline Packet set1(float v) { return Eigen::internal::pset1<Packet>(v); }
inline Packet add(Packet a, Packet b) { return Eigen::internal::padd(a, b); }
inline Packet sub(Packet a, Packet b) { return Eigen::internal::psub(a, b); }
inline Packet mul(Packet a, Packet b) { return Eigen::internal::pmul(a, b); }
// a * b + c
inline Packet madd(Packet a, Packet b, Packet c) { return Eigen::internal::pmadd(a, b, c); }
// sigma(x), Eigen's vectorised logistic
inline Packet sigmoid(Packet x) { return Eigen::internal::scalar_logistic_op<float>().packetOp(x); }
// tanh(x), Eigen's vectorised rational approximation
inline Packet tanh(Packet x) { return Eigen::internal::ptanh(x); }
// x (1 - x): the derivative of sigma at its value x
inline Packet dsigmoid(Packet x) { return mul(x, sub(set1(1.f), x)); }
// 1 - x^2: the derivative of tanh at its value x
inline Packet dtanh(Packet x) { return sub(set1(1.f), mul(x, x)); }

// A whole packet of lanes.
struct Full {
  static Packet load(const float* p) { return Eigen::internal::ploadu<Packet>(p); }
  static void store(float* p, Packet v) { Eigen::internal::pstoreu(p, v); }
};
// The first n < kLanes lanes (the rest read as 0 and are never written).
struct Tail {
  Index n;
  Packet load(const float* p) const {
    alignas(64) float b[kLanes] = {};
    std::copy(p, p + n, b);
    return Eigen::internal::pload<Packet>(b);
  }
  void store(float* p, Packet v) const {
    alignas(64) float b[kLanes];
    Eigen::internal::pstore(b, v);
    std::copy(b, b + n, p);
  }
};

// op(j, lanes) for the packets at j = 0, kLanes, ... of a row of n floats.
template <typename Op>
inline void for_packets(Index n, Op&& op) {
  Index j = 0;
  for (; j + kLanes <= n; j += kLanes) op(j, Full{});
  if (j < n) op(j, Tail{n - j});
}
}  // namespace simd

// The activations a fused gate pass applies, by Keras's names. A cell has an activation φ (LSTM's
// candidate g and output φ(c), GRU's candidate n, the Elman RNN's h) and a recurrent activation σ
// (the gates i, f, o / r, z). Each is a type with
//   f(x):  y = act(x)              on a SIMD packet (float) or an Eigen array expression (any T)
//   df(y): act'(x) from its value y = act(x), which is all backward keeps
// so the fused passes are templates on the pair and the default (tanh, sigmoid) compiles to the
// same code as before there was a choice: no branch per packet.
enum class Act { Tanh, Relu, Linear, Sigmoid, HardSigmoid };

namespace acts {
using simd::Packet;
using simd::set1;

// y = tanh(x);  act' = 1 - y^2
struct Tanh {
  static Packet f(Packet x) { return simd::tanh(x); }
  static Packet df(Packet y) { return simd::dtanh(y); }
  template <typename A> static auto f(const Eigen::ArrayBase<A>& x) { return x.tanh(); }
  template <typename A> static auto df(const Eigen::ArrayBase<A>& y) {
    return typename A::Scalar(1) - y.square();
  }
};
// y = max(x, 0);  act' = [y > 0]
struct Relu {
  static Packet f(Packet x) { return Eigen::internal::pmax(x, set1(0.f)); }
  static Packet df(Packet y) {
    return Eigen::internal::pand(Eigen::internal::pcmp_lt(set1(0.f), y), set1(1.f));
  }
  template <typename A> static auto f(const Eigen::ArrayBase<A>& x) {
    return x.max(typename A::Scalar(0));
  }
  template <typename A> static auto df(const Eigen::ArrayBase<A>& y) {
    return (y > typename A::Scalar(0)).template cast<typename A::Scalar>();
  }
};
// y = x;  act' = 1
struct Linear {
  static Packet f(Packet x) { return x; }
  static Packet df(Packet) { return set1(1.f); }
  template <typename A> static const A& f(const Eigen::ArrayBase<A>& x) { return x.derived(); }
  template <typename A> static auto df(const Eigen::ArrayBase<A>& y) {
    return A::PlainObject::Ones(y.rows(), y.cols());
  }
};
// y = 1 / (1 + e^-x);  act' = y (1 - y)
struct Sigmoid {
  static Packet f(Packet x) { return simd::sigmoid(x); }
  static Packet df(Packet y) { return simd::dsigmoid(y); }
  template <typename A> static auto f(const Eigen::ArrayBase<A>& x) { return x.logistic(); }
  template <typename A> static auto df(const Eigen::ArrayBase<A>& y) {
    return y * (typename A::Scalar(1) - y);
  }
};
// Keras 3's hard_sigmoid: y = clip(x / 6 + 1/2, 0, 1);  act' = [0 < y < 1] / 6
struct HardSigmoid {
  static Packet f(Packet x) {
    using namespace Eigen::internal;
    return pmin(pmax(simd::madd(x, set1(1.f / 6.f), set1(0.5f)), set1(0.f)), set1(1.f));
  }
  static Packet df(Packet y) {
    using namespace Eigen::internal;
    return pand(pand(pcmp_lt(set1(0.f), y), pcmp_lt(y, set1(1.f))), set1(1.f / 6.f));
  }
  template <typename A> static auto f(const Eigen::ArrayBase<A>& x) {
    using S = typename A::Scalar;
    return (x * S(1.0 / 6.0) + S(0.5)).max(S(0)).min(S(1));
  }
  template <typename A> static auto df(const Eigen::ArrayBase<A>& y) {
    using S = typename A::Scalar;
    return ((y > S(0)) && (y < S(1))).template cast<S>() * S(1.0 / 6.0);
  }
};
}  // namespace acts

// A cell's two activations (see namespace acts): Keras's activation and recurrent_activation.
struct CellActs {
  Act act = Act::Tanh;
  Act rec = Act::Sigmoid;
};

// fn(φ) with φ the activation type of `a` (tanh, relu or linear; the bindings refuse the rest).
template <typename Fn>
inline void with_act(Act a, Fn&& fn) {
  switch (a) {
    case Act::Relu: fn(acts::Relu{}); return;
    case Act::Linear: fn(acts::Linear{}); return;
    default: fn(acts::Tanh{}); return;
  }
}

// fn(φ, σ) with the types of a cell's activation φ and recurrent activation σ (sigmoid or
// hard_sigmoid): six instantiations of each fused pass, chosen once per step.
template <typename Fn>
inline void with_acts(CellActs a, Fn&& fn) {
  with_act(a.act, [&](auto phi) {
    if (a.rec == Act::HardSigmoid) fn(phi, acts::HardSigmoid{}); else fn(phi, acts::Sigmoid{});
  });
}


// ---------------------------------------------------------------------------------------------
// Threading policy.
//   * One process-wide thread count (rnnkit.set_num_threads), not OpenMP's per-thread ICV: a kernel
//     called from any Python thread sees the same setting. Default: omp_get_max_threads() when the
//     library loads (which honours OMP_NUM_THREADS), else 1.
//   * Kernels running at the same time from several Python threads share that count: each takes a
//     ThreadLease (its calling thread plus as many workers as are free), so the process never runs
//     more kernel threads than the setting (no oversubscription).
//   * Eigen's own GEMM threading is off (Eigen::setNbThreads(1) when the module loads): every
//     parallel product goes through gemm_parallel or a time loop, under a lease; our pointwise
//     passes run between GEMMs, never inside one.
// ---------------------------------------------------------------------------------------------

// Largest accepted thread count: 4x the cores (oversubscribing a machine further only loses time,
// and thousands of threads exhaust address space), and never below 4.
inline int max_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return std::max(4, 4 * static_cast<int>(hw ? hw : 1));
}

inline std::atomic<int>& thread_setting() {
  static std::atomic<int> n{[] {
#ifdef _OPENMP
    return std::max(1, std::min(omp_get_max_threads(), max_threads()));
#else
    return 1;
#endif
  }()};
  return n;
}

// The process-wide thread count.
inline int num_threads() {
#ifdef _OPENMP
  return thread_setting().load(std::memory_order_relaxed);
#else
  return 1;
#endif
}

inline void set_num_threads(int n) {
  require(n >= 1 && n <= max_threads(), "n: expected an int in [1, " +
                                            std::to_string(max_threads()) +
                                            "] (4x the cores), got " + std::to_string(n));
  thread_setting().store(n);
}

// Threads of the process-wide setting held by running kernels (their calling threads included).
inline std::atomic<int>& threads_in_use() {
  static std::atomic<int> n{0};
  return n;
}

// The most threads any lease of the calling thread's current kernel call got (a test hook: it
// shows that the process-wide setting reaches kernels called from every Python thread).
inline int& widest_lease_here() {
  thread_local int n = 0;
  return n;
}

// A kernel's share of the thread setting for its lifetime: its calling thread, plus up to
// want - 1 workers while the other running kernels leave some free.
class ThreadLease {
 public:
  explicit ThreadLease(int want) {
    auto& used = threads_in_use();
    const int limit = num_threads();
    int cur = used.load(std::memory_order_relaxed), extra = 0;
    do {
      // workers = min(want - 1, what the setting leaves after the running kernels and this one)
      extra = std::max(0, std::min(want - 1, limit - cur - 1));
    } while (!used.compare_exchange_weak(cur, cur + 1 + extra, std::memory_order_acq_rel));
    count_ = 1 + extra;
    widest_lease_here() = std::max(widest_lease_here(), count_);
  }
  ~ThreadLease() { threads_in_use().fetch_sub(count_, std::memory_order_acq_rel); }
  ThreadLease(const ThreadLease&) = delete;
  ThreadLease& operator=(const ThreadLease&) = delete;
  int count() const { return count_; }

 private:
  int count_ = 1;
};

// ---------------------------------------------------------------------------------------------
// Interrupts. A pending Ctrl-C (SIGINT) raises this flag (bindings.cpp chains a C handler in front
// of Python's); an interruptible kernel polls it once per time step (one relaxed atomic load),
// stops at the step boundary and reports that it did not complete, and the binding then raises
// KeyboardInterrupt with the GIL held. Only kernels called from the main thread are
// interruptible, since only there does Python raise KeyboardInterrupt.
// ---------------------------------------------------------------------------------------------

inline std::atomic<bool>& interrupt_flag() {
  static std::atomic<bool> f{false};
  return f;
}

// Whether the kernels called from this thread may stop early (set by the binding per call).
inline bool& interruptible_here() {
  thread_local bool on = false;
  return on;
}

// Whether this thread's kernel should stop now.
inline bool stop_requested(bool interruptible) {
  return interruptible && interrupt_flag().load(std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------------------------
// The parallel time loop. A recurrence is sequential in t, so the threads of one call live in a
// single OpenMP region around the whole loop (no fork/join per step). Every step is a recurrent
// product [N, K] x [K, cols] followed by a pointwise pass over the N batch rows, and the threads
// share it in one of two ways (a LoopPlan):
//   * by rows: thread k owns batch rows [r0, r1) for the whole sequence, product and pointwise
//     pass alike. The rows of a batch never meet inside a recurrence, so the threads never wait
//     for each other, but each reads the whole weight every step (it must fit its core's L2).
//   * by columns: thread k owns output columns [c0, c1) of the product, so it only ever reads its
//     own slice of the weight, which stays in its core's cache from step to step, and rows
//     [r0, r1) of the pointwise pass; a barrier (about half a microsecond) after each phase.
// Eigen's GEMMs called inside the region run on one thread (Eigen does not nest), so nothing is
// oversubscribed. Small loops run on one thread, with no region at all.
// ---------------------------------------------------------------------------------------------

struct LoopPlan {
  int threads = 1;
  bool by_rows = false;
};

// Every loop's plan can be forced (tests run each path on the same shapes):
// rnnkit._core._set_loop_plan("auto" | "serial" | "rows" | "columns").
enum class LoopPlanMode : int { Auto, Serial, Rows, Columns };
inline std::atomic<LoopPlanMode>& forced_loop_plan() {
  static std::atomic<LoopPlanMode> mode{LoopPlanMode::Auto};
  return mode;
}

// The plan for a loop of T steps on up to nt threads whose recurrent product is
// [N, K] x [K, cols] (float weights of K * cols * 4 bytes); thresholds and their measurements in
// tuning.h.
inline LoopPlan loop_plan(int nt, Index T, Index N, Index K, Index cols) {
  using namespace tuning;
  if (nt <= 1) return {};
  const Index flops_per_step = 2 * N * K * cols;
  const Index weight_bytes = K * cols * Index(sizeof(float));
  const int col_threads = static_cast<int>(std::max<Index>(1, std::min<Index>(nt, cols / kColumnAlign)));
  switch (forced_loop_plan().load(std::memory_order_relaxed)) {
    case LoopPlanMode::Serial: return {};
    case LoopPlanMode::Rows: return {nt, true};
    case LoopPlanMode::Columns: return {col_threads, false};
    case LoopPlanMode::Auto: break;
  }
  if (N >= kRowsPlanMinRows * nt && weight_bytes <= kRowsPlanMaxWeightBytes &&
      T * flops_per_step >= kRowsPlanMinFlops)
    return {nt, true};
  const bool by_cols = flops_per_step >= kColumnsPlanMinStepFlops ||
                       (flops_per_step >= kColumnsPlanSmallStepFlops &&
                        weight_bytes >= kRowsPlanMaxWeightBytes);
  if (!by_cols) return {};
  return {col_threads, false};
}

inline int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

inline int team_size() {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}

// Runs body(tid, team) on `nt` threads of one OpenMP region, or directly on the calling thread
// when nt == 1 (no region at all: a batch-1 streaming step must not pay for one).
template <typename Body>
inline void run_team(int nt, Body&& body) {
#ifdef _OPENMP
  if (nt > 1) {
#pragma omp parallel num_threads(nt)
    body(thread_id(), team_size());
    return;
  }
#endif
  body(0, 1);
}

// Waits for every thread of the time loop (a no-op on one thread).
inline void barrier() {
#ifdef _OPENMP
#pragma omp barrier
#endif
}

// [begin, end) of part k of n of the range [0, size), boundaries rounded to multiples of `align`
// (16 floats = one 64-byte line, so threads never write the same cache line).
struct Range {
  Index begin, end;
  Index size() const { return end - begin; }
};
inline Range split(Index size, int k, int n, Index align = tuning::kColumnAlign) {
  auto at = [&](int i) {
    if (i >= n) return size;
    const Index b = (size * i / n) / align * align;
    return std::min(b, size);
  };
  return {at(k), at(k + 1)};
}

// What thread `tid` of a time loop owns under `plan` (see LoopPlan), for a recurrent product
// [N, K] x [K, cols].
// How the threads of one time loop agree to stop at a step boundary (see "Interrupts" above).
struct StopSignal {
  bool interruptible = false;       // the calling thread's kernel may stop early
  std::atomic<bool> decided{false};  // by columns: thread 0's decision for the current step
  std::atomic<bool> stopped{false};  // some thread stopped: the loop did not complete
};

struct StepShare {
  Range rows;       // batch rows of the pointwise pass
  Range gemm_rows;  // rows of the recurrent product: `rows` by rows, all N by columns
  Range cols;       // columns of the recurrent product: all by rows, a slice by columns
  bool by_rows;
  int tid;   // this thread's number in the team
  int team;  // the team's size
  StopSignal* stop;
  // Between the two phases of a step: every thread waits for the others, unless they own rows.
  void sync() const {
    if (!by_rows) barrier();
  }
  // At the top of a step: thread 0 decides for everyone whether to stop (by columns).
  void poll() const {
    if (!by_rows && tid == 0)
      stop->decided.store(stop_requested(stop->interruptible), std::memory_order_relaxed);
  }
  // After the first sync() of a step: whether to leave the loop now. Every thread of a team that
  // shares barriers gets the same answer (thread 0's, published before the barrier); a thread
  // that owns rows decides for itself.
  bool should_stop() const {
    const bool v = by_rows ? stop_requested(stop->interruptible)
                           : stop->decided.load(std::memory_order_relaxed);
    if (v) stop->stopped.store(true, std::memory_order_relaxed);
    return v;
  }
};
inline StepShare step_share(const LoopPlan& plan, Index N, Index cols, int tid, int team,
                            StopSignal* stop) {
  const Range rows = split(N, tid, team, 1);
  if (plan.by_rows) return {rows, rows, {0, cols}, true, tid, team, stop};
  return {rows, {0, N}, split(cols, tid, team), false, tid, team, stop};
}

// Flush-to-zero / denormals-are-zero on the calling thread for the guard's lifetime, so that
// tiny activations do not fall onto the slow denormal path; restores the caller's MXCSR after.
// A kernel guards its calling thread, and every parallel region guards each of its threads.
class DenormalGuard {
 public:
  DenormalGuard() {
#ifdef RNNKIT_HAS_MXCSR
    saved_ = _mm_getcsr();
    _mm_setcsr(saved_ | kFtzDaz);
#endif
  }
  ~DenormalGuard() {
#ifdef RNNKIT_HAS_MXCSR
    _mm_setcsr(saved_);
#endif
  }
  DenormalGuard(const DenormalGuard&) = delete;
  DenormalGuard& operator=(const DenormalGuard&) = delete;

 private:
#ifdef RNNKIT_HAS_MXCSR
  static constexpr unsigned kFtzDaz = 0x8040;  // FTZ (bit 15) | DAZ (bit 6)
  unsigned saved_ = 0;
#endif
};

// Recurrent dropout: the input of the recurrent product is h_{t-1} ⊙ rd (rd: [N, H], one mask
// per sequence; null = no dropout). Returns hp itself when there is no mask, else `scratch`.
template <typename T>
inline const T* dropped_state(const T* hp, const T* rd, Index NH, T* scratch) {
  if (!rd) return hp;
  // scratch = h_{t-1} ⊙ rd
  for (Index i = 0; i < NH; ++i) scratch[i] = hp[i] * rd[i];
  return scratch;
}

// Rows [r.begin, r.end) of the recurrent product's input for the next step: hd = h ⊙ rd.
template <typename T>
inline void drop_rows(const T* h, const T* rd, Range r, Index H, T* hd) {
  if (!rd) return;
  for (Index i = r.begin * H; i < r.end * H; ++i) hd[i] = h[i] * rd[i];
}

// The states before every step as the recurrent product saw them, hprev: [T, N, H] (⊙ rd: [N, H]
// per time step when there is recurrent dropout, written to `scratch`: [T, N, H]).
template <typename T>
inline const T* dropped_states(const T* hprev, const T* rd, Index T_, Index NH, T* scratch) {
  if (!rd) return hprev;
  for (Index t = 0; t < T_; ++t) dropped_state(hprev + t * NH, rd, NH, scratch + t * NH);
  return scratch;
}

// Backward through the recurrent dropout, rows r and columns c of dh_{t-1}: [N, H] (from the
// recurrent product): dh ⊙= rd.
template <typename T>
inline void apply_dropout_grad(const T* rd, Range r, Range c, Index H, T* dh) {
  if (!rd) return;
  for (Index n = r.begin; n < r.end; ++n)
    for (Index j = c.begin; j < c.end; ++j) dh[n * H + j] *= rd[n * H + j];
}

// Masked rows n in [r.begin, r.end) of a [N, H] state keep the previous state: next[n] = prev[n].
// `m: [N]` is the step's mask (null = every row valid).
template <typename T>
inline void carry_masked_rows(const bool* m, Range r, Index H, const T* prev, T* next) {
  if (!m) return;
  for (Index n = r.begin; n < r.end; ++n)
    if (!m[n]) std::copy(prev + n * H, prev + (n + 1) * H, next + n * H);
}

// Rows [r.begin, r.end) of the output of one step, y_t: [N, H], from the state after the step;
// masked rows are the carried state (already in `state`) or zeros when zero_masked.
template <typename T>
inline void write_output(const bool* m, bool zero_masked, Range r, Index H, const T* state, T* y_t) {
  std::copy(state + r.begin * H, state + r.end * H, y_t + r.begin * H);
  if (m && zero_masked)
    for (Index n = r.begin; n < r.end; ++n)
      if (!m[n]) std::fill(y_t + n * H, y_t + (n + 1) * H, T(0));
}

// Backward, rows [r.begin, r.end): the gradient reaching the state after a step,
// dh = dh_carry + dy_t, except that a masked row whose output was zeroed has no dy.
template <typename T>
inline void add_output_grad(const bool* m, bool zero_masked, Range r, Index H, const T* dy_t,
                            const T* dh_carry, T* dh) {
  for (Index n = r.begin; n < r.end; ++n) {
    const bool use_dy = !(m && zero_masked && !m[n]);
    for (Index j = 0; j < H; ++j)
      dh[n * H + j] = dh_carry[n * H + j] + (use_dy ? dy_t[n * H + j] : T(0));
  }
}

// Backward, rows [r.begin, r.end): masked rows of a step's gate gradient dG_t: [N, GH] are 0,
// so they add nothing to the recurrent product or the weight gradients.
template <typename T>
inline void zero_masked_rows(const bool* m, Range r, Index GH, T* dG_t) {
  if (!m) return;
  for (Index n = r.begin; n < r.end; ++n)
    if (!m[n]) std::fill(dG_t + n * GH, dG_t + (n + 1) * GH, T(0));
}

// Backward, after the recurrent GEMM, columns c of every masked row in r: the state gradient
// passes through the skipped step unchanged, dh_prev[n] = dh[n].
template <typename T>
inline void pass_masked_cols(const bool* m, Range r, Range c, Index H, const T* dh, T* dh_prev) {
  if (!m) return;
  for (Index n = r.begin; n < r.end; ++n)
    if (!m[n]) std::copy(dh + n * H + c.begin, dh + n * H + c.end, dh_prev + n * H + c.begin);
}

// ---- zoneout (Krueger et al. 2016) ------------------------------------------------------------
// A state moves only part of the way to its new value: s_t = s_new + z ⊙ (s_{t-1} - s_new), with z
// per step and unit a 0/1 mask in training (1 = keep the previous value) or, at inference, the
// zoneout probability p itself (the expectation). `Zoneout` is one state's z: an array
// z: [T, N, W] (per step), or none and the constant p (p = 0: no zoneout).
template <typename T>
struct Zoneout {
  const T* z = nullptr;
  T p = T(0);
  bool on() const { return z || p != T(0); }
  // z of step t: [N, W] (null: the constant p)
  const T* at(Index t, Index NW) const { return z ? z + t * NW : nullptr; }
};

// Rows r of a new state s: [N, W] in place: s = s + z ⊙ (prev - s)   (z_t: [N, W] or null = p)
template <typename T>
inline void zoneout_rows(const T* z_t, T p, Range r, Index W, const T* prev, T* s) {
  for (Index i = r.begin * W; i < r.end * W; ++i) s[i] += (z_t ? z_t[i] : p) * (prev[i] - s[i]);
}

// Backward, rows r: the gradient reaching the new state, dnew = d ⊙ (1 - z)
template <typename T>
inline void zoneout_grad_new(const T* z_t, T p, Range r, Index W, const T* d, T* dnew) {
  for (Index i = r.begin * W; i < r.end * W; ++i) dnew[i] = d[i] * (T(1) - (z_t ? z_t[i] : p));
}

// Backward, rows r and columns c: the gradient reaching the previous state directly,
// dprev += d ⊙ z
template <typename T>
inline void zoneout_grad_prev(const T* z_t, T p, Range r, Range c, Index W, const T* d, T* dprev) {
  for (Index n = r.begin; n < r.end; ++n)
    for (Index j = c.begin; j < c.end; ++j)
      dprev[n * W + j] += d[n * W + j] * (z_t ? z_t[n * W + j] : p);
}

// ---- layer normalization of rows (the LayerNorm cells) ------------------------------------------
// LN(v) = (v - mean(v)) / sqrt(var(v) + eps) over one row v: [K] (biased variance, as PyTorch's
// LayerNorm); the gain and bias are the caller's.
constexpr double kLayerNormEps = 1e-5;

// v: [K] in, its normalization v̂ out (in place); returns 1 / sqrt(var + eps).
template <typename T>
inline T layer_norm_row(T* v, Index K) {
  Eigen::Map<Eigen::Array<T, 1, Eigen::Dynamic>> a(v, K);
  const T mean = a.mean();
  // v - mean
  a -= mean;
  // 1 / sqrt(mean((v - mean)^2) + eps)
  const T rstd = T(1) / std::sqrt(a.square().mean() + T(kLayerNormEps));
  a *= rstd;
  return rstd;
}

// Backward of v̂ = LN(v) for one row: dv = rstd (dv̂ - mean(dv̂) - v̂ mean(dv̂ ⊙ v̂)).
//   dvh, vh: [K];  dv: [K] out (may alias dvh)
template <typename T>
inline void layer_norm_row_backward(const T* dvh, const T* vh, T rstd, Index K, T* dv) {
  Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>> d(dvh, K), h(vh, K);
  const T m1 = d.mean(), m2 = (d * h).mean();
  Eigen::Map<Eigen::Array<T, 1, Eigen::Dynamic>>(dv, K) = rstd * (d - m1 - h * m2);
}

template <typename T>
class PackedB;  // gemm.h

// Pointers to one layer's parameters in PyTorch layout (biases may be null).
//   w_ih: [G*H, C], w_hh: [G*H, H], b_ih, b_hh: [G*H]
template <typename T>
struct Weights {
  const T* w_ih = nullptr;
  const T* w_hh = nullptr;
  const T* b_ih = nullptr;
  const T* b_hh = nullptr;
  // recurrent dropout mask rd: [N, H] multiplying h_{t-1} in the recurrent product (null = none)
  const T* rd = nullptr;
  // optional weights packed once by a long-lived caller (a stream): w_ih^T: [C, G*H] and
  // w_hh^T: [H, G*H], all columns; with them a call packs nothing and runs on one thread
  const PackedB<T>* packed_ih = nullptr;
  const PackedB<T>* packed_hh = nullptr;
  // the GRU with the reset gate before the product (gru_v1_*): packed_hh holds w_hh's r, z rows
  // only (w_rz^T: [H, 2H]) and packed_hn its n rows (w_hn^T: [H, H])
  const PackedB<T>* packed_hn = nullptr;
  // LSTM with projection: w_hr: [P, H] (h = w_hr (o ⊙ φ(c))), and packed w_hr^T: [H, P] (a stream)
  const T* w_hr = nullptr;
  const PackedB<T>* packed_hr = nullptr;
  // zoneout of the state h: [T, N, Hs] (or a constant), and of an LSTM's cell state c: [T, N, H]
  Zoneout<T> zh{}, zc{};
};

// Sequence options shared by every cell.
//   mask: [T, N] (null = every step valid); reverse: run t = T-1 .. 0;
//   zero_masked: masked steps output 0 instead of the carried state; acts: the activations.
struct SeqOptions {
  const bool* mask = nullptr;
  bool reverse = false;
  bool zero_masked = false;
  CellActs acts{};  // the cell's activations (the Elman RNN uses acts.act)
  // backward only, optional: ‖dL/dh_t‖ of every step and row, [T, N] (the gradient reaching the
  // state after step t, written by the reverse loop: rnnkit.diagnostics' gradient flow)
  double* dh_norms = nullptr;
  const bool* mask_at(Index t, Index N) const { return mask ? mask + t * N : nullptr; }
};

// Backward, rows r of step t: dh_norms[t, n] = ‖dh[n]‖ (nothing when dh_norms is null).
template <typename T>
inline void record_dh_norms(double* dh_norms, Index t, Index N, Range r, Index H, const T* dh) {
  if (!dh_norms) return;
  for (Index n = r.begin; n < r.end; ++n)
    dh_norms[t * N + n] = double(CRowVecMap<T>(dh + n * H, H).norm());
}

}  // namespace rnnkit
