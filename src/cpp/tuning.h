// Every threading and blocking threshold of the kernels, in one place, with the measurement that
// set it. The project's machines are 2-vCPU VMs that are either an Intel Xeon (AVX-512, 2 MiB L2
// per core) or an AMD EPYC Zen 4 (AVX-512, 1 MiB L2 per core, 32 MiB L3); a threshold tied to a
// cache size uses the smaller of the two. Change a value only with a measurement on both.
#pragma once

#include <Eigen/Core>

namespace rnnkit {
namespace tuning {

using Index = Eigen::Index;

// ---- idle OpenMP workers --------------------------------------------------------------------------
// libgomp's spin count before an idle worker sleeps is set to 30,000 (instead of 300,000) when the
// runtime loads, unless the user set GOMP_SPINCOUNT or OMP_WAIT_POLICY: an environment variable,
// so it lives with its measurements in src/python/rnnkit/_openmp.py (a NumPy sgemm right after
// a kernel: 1.58-1.69x slower with the default, 1.05x with 30,000, 1.01x with 1000; the seed
// model's fit epoch 1.11x faster with 30,000 than with 1000: fewer futex wake-ups).

// ---- time loops (LoopPlan, core.h) --------------------------------------------------------------
// By rows (each thread owns batch rows for the whole sequence, no barrier): when every thread gets
// >= kRowsPlanMinRows rows, the float weight fits in kRowsPlanMaxWeightBytes (a quarter of a Zen 4
// core's L2, which also holds the step's states and gates) and the loop has >= kRowsPlanMinFlops
// in all (the region's start-up, a few microseconds, is then < 5% of the work). Measured on 2
// threads (Xeon) against by columns: 10-30% faster at (T, N, H) = (50, 32, 128) and (200, 16, 128),
// 30% at the seed model's (50, 32, 64); no better at H = 256 LSTM/GRU.
constexpr Index kRowsPlanMinRows = 4;
constexpr Index kRowsPlanMaxWeightBytes = Index(1) << 19;
constexpr Index kRowsPlanMinFlops = Index(4) << 20;
// By columns (each thread owns a slice of the weight, two barriers per step): when a step carries
// >= kColumnsPlanMinStepFlops, or >= kColumnsPlanSmallStepFlops with a weight of at least
// kRowsPlanMaxWeightBytes (small batches then gain from splitting the weight over the cores'
// caches). Below, one thread: LSTM N=32, H=32 by columns ran 2x slower on two threads.
constexpr Index kColumnsPlanMinStepFlops = Index(1) << 20;
constexpr Index kColumnsPlanSmallStepFlops = Index(1) << 18;
// A column slice is at least this many columns (one 64-byte line of floats: no false sharing).
constexpr Index kColumnAlign = 16;

// ---- large GEMMs (gemm_parallel, gemm.h) --------------------------------------------------------
// Below ~0.1 ms of work one thread wins: waking idle workers costs tens of microseconds.
// Lowered from 3e7 (AMD EPYC Zen 4, 2 threads, bench/ab_builds.py, ratio of medians over
// alternating processes, above 1: 1e7 faster): the seed model's backward products (dx and dW_ih
// of 26 MFLOP) now split, LSTM train (50, 32, 32, 64) 1.58x, (50, 32, 64, 32) 1.48x, RNN train
// (50, 32, 128, 128) 1.13x, GRU train (200, 16, 64, 128) 0.91x then 1.10x (noise), GRU forward
// there 1.00x, the seed model's fit epoch 1.10x; 1 thread 1.02x (unchanged). Not yet measured
// on the Xeon.
constexpr double kGemmParallelMinFlops = 1e7;
// Threads split a product's columns when each gets >= this many, else its rows.
constexpr Index kGemmMinColsPerThread = 64;
// Bias-gradient column sums go parallel from this many entries (2M: ~1 ms on one thread).
constexpr Index kColumnSumsParallelEntries = Index(1) << 21;
// Cache blocking of the packed micro-kernel: kKC rows of a panel (kKC * 32 floats = 32 KiB) stay
// in L1; a block of kMC = kMCRowBlocks * kMR rows of A (x kKC depth) in L2.
constexpr Index kKC = 256;
constexpr Index kMCRowBlocks = 16;

// ---- interrupts ---------------------------------------------------------------------------------
// The long GEMMs around a time loop (input projection, dx, weight gradients) run in pieces of
// about this much work, polling for Ctrl-C in between: 2 GFLOP is 10-20 ms at the 1-2 thread
// sgemm rates (90-230 GFLOP/s), well inside the 100 ms a user waits for Ctrl-C, and each piece
// is long enough that starting its parallel region costs < 0.1%.
constexpr double kInterruptChunkFlops = 2e9;
// ... and of at most this much memory written or read per piece: a memory-bound product (a small
// C or H, e.g. the input projection of C = 8 inputs over 100k steps) is limited by first-touch
// page faults, measured at 0.5-6 GB/s on the 2-vCPU VMs (NumPy fill of a fresh 600 MB array;
// 16 GB/s warm): 32 MiB is at most ~70 ms, and ~2 ms warm.
constexpr double kInterruptChunkBytes = double(32 << 20);

// ---- streaming ----------------------------------------------------------------------------------
// A stream step keeps the GIL below this much work (N * H * (C + H)): releasing and re-taking it
// costs ~1 us, a fifth of a batch-1 LSTM(64 -> 128) step.
constexpr Index kStreamGilWork = Index(1) << 20;

}  // namespace tuning
}  // namespace rnnkit
