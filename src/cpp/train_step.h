// One whole training step of the most common sequence model, in one call: a stack of recurrent
// layers (Elman RNN, LSTM, GRU) and a Dense softmax output, with categorical cross-entropy and
// the accuracy count. The Python training loop (rnnkit.training.fit) calls it once per batch
// instead of running every layer, the loss and the metric in Python (each a few NumPy calls):
// that per-layer Python work was 20-23% of the seed model's epoch (perf + timers, 2 threads).
//
// Sizes: N batch, T steps, C_l input features of layer l (C_0 = C), H_l its units, K classes,
// R rows of the output layer (T*N when the last recurrent layer returns sequences, else N).
//
//   forward:  x_0 = x^T (time-major copy) ; x_{l+1} = y_l = cell_l(x_l)            [T, N, H_l]
//             z = y_L · W + b  (y_L: every step, or the last state)                [R, K]
//             p = softmax(z) ; loss = -Σ_rows Σ_k y_k log clip(p_k, ε, 1-ε)
//   backward: dz = (p Σ_k y_k - y) / R                                             [R, K]
//             dW = y_L^T dz ; db = Σ_rows dz ; dy_L = dz W^T
//             then every layer's backward from the last (the kernels' own BPTT), dx of layer l
//             being dy of layer l-1 (layer 0 skips its dx).
//
// The math is that of the per-layer path (Dense, the fused softmax cross-entropy of
// rnnkit.losses, the kernels) in the same order per row, so both give the same gradients up to
// the summation order of a few reductions (tested at 1e-12 in float64).
#pragma once

#include <cstdint>
#include <limits>
#include <mutex>
#include <vector>

#include "core.h"
#include "gru.h"
#include "lstm.h"
#include "rnn.h"
#include "rows.h"
#include "stream.h"  // CellKind, gates_of

namespace rnnkit {

// One recurrent layer of the stack (GRU: reset_after form, PyTorch's).
struct StackLayer {
  CellKind kind = CellKind::LSTM;
  Index H = 0;                 // units
  CellActs acts{};             // activation (φ) and recurrent activation (σ)
  bool return_sequences = true;
  Index gates() const { return gates_of(kind); }
};

// One layer's parameters and where its gradients go (the Python layer's own arrays).
//   w_ih: [G*H, C], w_hh: [G*H, H], b_ih, b_hh: [G*H] (null = absent); the gradients alike.
template <typename T>
struct StackParams {
  const T* w_ih = nullptr;
  const T* w_hh = nullptr;
  const T* b_ih = nullptr;
  const T* b_hh = nullptr;
  T* dw_ih = nullptr;
  T* dw_hh = nullptr;
  T* db_ih = nullptr;
  T* db_hh = nullptr;
};

// The targets of one batch: one-hot (or any distribution) y: [N, T, K] / [N, K] row-major in
// the sample's order, or integer labels: [N, T] / [N].
template <typename T>
struct StepTargets {
  const T* dense = nullptr;
  const std::int64_t* labels = nullptr;
};

// What a step returns: the summed per-row loss (the caller divides by rows for the mean), the
// number of rows whose argmax equals the target's, and the rows.
struct StepResult {
  double loss_sum = 0.0;
  std::int64_t correct = 0;
  Index rows = 0;
  bool completed = true;  // false: an interrupt stopped a kernel (gradients incomplete)
};

// Workspaces of the fused step, kept between batches (they only grow), one step at a time.
template <typename T>
class StackTrainer {
 public:
  explicit StackTrainer(std::vector<StackLayer> layers) : layers_(std::move(layers)) {
    bufs_.resize(layers_.size());
  }

  const std::vector<StackLayer>& layers() const { return layers_; }

  // One step: forward, loss, accuracy count and every gradient.
  //   x: [N, T, C] (batch-major, as the data arrives); params: one per layer; w: [H_L, K],
  //   b: [K] (null = none), dw: [H_L, K], db: [K] (null = none); targets as StepTargets.
  // Thread safety: one step at a time per trainer (a mutex); the caller keeps every array alive.
  StepResult step(Index N, Index Ts, Index C, const T* x, const std::vector<StackParams<T>>& params,
                  const T* w, const T* b, T* dw, T* db, Index K, const StepTargets<T>& tg) {
    std::lock_guard<std::mutex> lock(mutex_);
    DenormalGuard ftz;
    const Index L = Index(layers_.size());
    const StackLayer& last = layers_.back();
    const Index HL = last.H, R = last.return_sequences ? Ts * N : N;
    StepResult res;
    res.rows = R;

    // x_0[t, n, :] = x[n, t, :]                                      [N, T, C] -> [T, N, C]
    grow(x0_, Ts * N * C);
    for (Index n = 0; n < N; ++n)
      for (Index t = 0; t < Ts; ++t)
        std::copy(x + (n * Ts + t) * C, x + (n * Ts + t + 1) * C, x0_.data() + (t * N + n) * C);

    // ---- forward through the stack ----
    const T* xin = x0_.data();
    Index Cin = C;
    for (Index l = 0; l < L; ++l) {
      if (!forward_layer(l, Dims{Ts, N, Cin, layers_[l].H}, xin, params[l])) {
        res.completed = false;
        return res;
      }
      xin = bufs_[l].y.data();
      Cin = layers_[l].H;
    }
    // the output layer's input: every step [T*N, H_L], or the last state y_L[T-1]: [N, H_L]
    const T* yL = bufs_[L - 1].y.data() + (last.return_sequences ? 0 : (Ts - 1) * N * HL);

    // z = y_L · W + b;  p = softmax(z)                             [R, H_L] x [H_L, K]
    grow(p_, R * K);
    MatMap<T> P(p_.data(), R, K);
    P.noalias() = CMatMap<T>(yL, R, HL) * CMatMap<T>(w, HL, K);
    if (b) P.rowwise() += CRowVecMap<T>(b, K);
    softmax_rows(p_.data(), R, K, p_.data());

    // loss, accuracy and dz = (p Σ_k y_k - y) / R, row by row; row r = t*N + n (time-major)
    // holds the target of sample n at step t
    grow(dz_, R * K);
    const T eps = T(1e-7), inv_rows = T(1) / T(R);
    double loss = 0.0;
    std::int64_t correct = 0;
    for (Index r = 0; r < R; ++r) {
      const Index t = last.return_sequences ? r / N : 0, n = last.return_sequences ? r % N : r;
      const Index trow = last.return_sequences ? n * Ts + t : n;  // the target's row
      const T* pr = p_.data() + r * K;
      T* dr = dz_.data() + r * K;
      const Index pred = argmax_of(pr, K);
      if (tg.labels) {
        const std::int64_t lab = tg.labels[trow];
        // -log clip(p[label]);  dz = p - onehot(label)
        const T pl = std::min(std::max(pr[lab], eps), T(1) - eps);
        loss -= double(std::log(pl));
        for (Index k = 0; k < K; ++k) dr[k] = pr[k] * inv_rows;
        dr[lab] -= inv_rows;
        correct += pred == lab;
      } else {
        const T* yr = tg.dense + trow * K;
        // -Σ_k y_k log clip(p_k);  dz = p Σ_k y_k - y
        T s = 0, per = 0;
        for (Index k = 0; k < K; ++k) {
          s += yr[k];
          // (a zero target adds exactly 0: its logarithm, one-hot targets' K-1 of K, is skipped)
          if (yr[k] != T(0)) per -= yr[k] * std::log(std::min(std::max(pr[k], eps), T(1) - eps));
        }
        loss += double(per);
        for (Index k = 0; k < K; ++k) dr[k] = (pr[k] * s - yr[k]) * inv_rows;
        correct += pred == argmax_of(yr, K);
      }
    }
    res.loss_sum = loss;
    res.correct = correct;

    // dW = y_L^T dz;  db = Σ_rows dz;  dy_L = dz W^T
    CMatMap<T> DZ(dz_.data(), R, K);
    MatMap<T>(dw, HL, K).noalias() = CMatMap<T>(yL, R, HL).transpose() * DZ;
    if (db) RowVecMap<T>(db, K) = DZ.colwise().sum();
    grow(dy_, Ts * N * HL);
    if (last.return_sequences) {
      MatMap<T>(dy_.data(), R, HL).noalias() = DZ * CMatMap<T>(w, HL, K).transpose();
    } else {
      // only the last step's output reached the loss
      std::fill(dy_.begin(), dy_.begin() + Ts * N * HL, T(0));
      MatMap<T>(dy_.data() + (Ts - 1) * N * HL, N, HL).noalias() = DZ * CMatMap<T>(w, HL, K).transpose();
    }

    // ---- backward through the stack, last layer first ----
    for (Index l = L - 1; l >= 0; --l) {
      const Index Cl = l ? layers_[l - 1].H : C;
      const T* xl = l ? bufs_[l - 1].y.data() : x0_.data();
      // dx of layer l is dy of layer l - 1 (layer 0: not needed)
      grow(dx_, l ? Ts * N * Cl : 0);
      if (!backward_layer(l, Dims{Ts, N, Cl, layers_[l].H}, xl, params[l], dy_.data(),
                          l ? dx_.data() : nullptr)) {
        res.completed = false;
        return res;
      }
      if (l) std::swap(dy_, dx_);
    }
    return res;
  }

 private:
  // Forward/backward buffers of one layer (grown, never shrunk).
  struct LayerBufs {
    AlignedVec<T> y, S, Cs, gates, hn, gh, dG, dGh, h0grad, c0grad;
  };

  static void grow(AlignedVec<T>& v, Index n) {
    if (Index(v.size()) < n) v.resize(n);
  }

  // NumPy's argmax of a row: the first of equal maxima.
  static Index argmax_of(const T* r, Index K) {
    Index best = 0;
    for (Index k = 1; k < K; ++k)
      if (r[k] > r[best]) best = k;
    return best;
  }

  // layer l forward over x: [T, N, C] into its buffers (y: [T, N, H] and the cache)
  bool forward_layer(Index l, const Dims& d, const T* x, const StackParams<T>& p) {
    const StackLayer& s = layers_[l];
    LayerBufs& B = bufs_[l];
    const Index TN = d.T * d.N, H = d.H, G = s.gates();
    Weights<T> w{p.w_ih, p.w_hh, p.b_ih, p.b_hh, nullptr};
    SeqOptions opt{nullptr, false, false, s.acts};
    grow(B.y, TN * H);
    grow(B.S, (d.T + 1) * d.N * H);
    switch (s.kind) {
      case CellKind::RNN:
        return rnn_forward<T>(d, x, nullptr, w, opt, B.y.data(), B.S.data());
      case CellKind::LSTM:
        grow(B.Cs, (d.T + 1) * d.N * H);
        grow(B.gates, TN * G * H);
        return lstm_forward<T>(d, x, nullptr, nullptr, w, opt, B.y.data(),
                               {B.S.data(), B.Cs.data(), B.gates.data(), nullptr, nullptr});
      case CellKind::GRU: {
        grow(B.gates, TN * G * H);
        grow(B.hn, TN * H);
        grow(B.gh, d.N * G * H);  // the per-step recurrent pre-activations: [N, 3H]
        return gru_forward<T>(d, x, nullptr, w, opt, B.y.data(),
                              {B.S.data(), B.gates.data(), B.hn.data()}, B.gh.data());
      }
      default:  // the other kinds are streams' only (the binding refuses them here)
        return false;
    }
  }

  // layer l backward from dy: [T, N, H]: the weight gradients into p's arrays, dx: [T, N, C]
  // (null: skipped)
  bool backward_layer(Index l, const Dims& d, const T* x, const StackParams<T>& p, const T* dy,
                      T* dx) {
    const StackLayer& s = layers_[l];
    LayerBufs& B = bufs_[l];
    const Index TN = d.T * d.N, H = d.H, G = s.gates();
    Weights<T> w{p.w_ih, p.w_hh, nullptr, nullptr, nullptr};
    SeqOptions opt{nullptr, false, false, s.acts};
    grow(B.dG, TN * G * H);
    grow(B.h0grad, d.N * H);
    grow(B.c0grad, d.N * H);
    // one bias gradient db = Σ dG (RNN, LSTM: b_ih and b_hh get the same), written to db_ih
    // and copied to db_hh when the layer has both
    T* db = p.db_ih ? p.db_ih : p.db_hh;
    bool ok = false;
    switch (s.kind) {
      case CellKind::RNN:
        ok = rnn_backward<T>(d, x, w, opt, B.S.data(), dy, nullptr, B.dG.data(), dx, B.h0grad.data(),
                             p.dw_ih, p.dw_hh, db);
        break;
      case CellKind::LSTM:
        ok = lstm_backward<T>(d, x, w, opt, {B.S.data(), B.Cs.data(), B.gates.data(), nullptr, nullptr},
                              dy, nullptr, nullptr, B.dG.data(), dx, B.h0grad.data(), B.c0grad.data(),
                              p.dw_ih, p.dw_hh, db);
        break;
      case CellKind::GRU:
        grow(B.dGh, TN * G * H);
        return gru_backward<T>(d, x, w, opt, {B.S.data(), B.gates.data(), B.hn.data()}, dy, nullptr,
                               B.dG.data(), B.dGh.data(), dx, B.h0grad.data(), p.dw_ih, p.dw_hh,
                               p.db_ih, p.db_hh);
      default:
        return false;
    }
    if (ok && p.db_ih && p.db_hh) std::copy(p.db_ih, p.db_ih + G * H, p.db_hh);
    return ok;
  }

  std::vector<StackLayer> layers_;
  std::vector<LayerBufs> bufs_;
  AlignedVec<T> x0_, p_, dz_, dy_, dx_;
  std::mutex mutex_;
};

}  // namespace rnnkit
