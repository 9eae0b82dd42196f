// Stateful streaming inference: one cell's weights, state and workspaces kept in C++ between calls,
// so that a step from Python costs one call with no re-validation of the weights and no allocation
// (workspaces only grow when a longer chunk than ever before arrives).
#pragma once

#include <memory>
#include <mutex>

#include "core.h"
#include "gemm.h"
#include "gru.h"
#include "gru_ln.h"
#include "lstm.h"
#include "lstm_ln.h"
#include "rnn.h"

namespace rnnkit {

// GRUv1: the GRU with the reset gate before the recurrent product (Keras reset_after=False);
// LSTMLN, GRULN: the LayerNorm cells (lstm_ln.h, gru_ln.h).
enum class CellKind { RNN, LSTM, GRU, GRUv1, LSTMLN, GRULN };

inline bool is_lstm(CellKind k) { return k == CellKind::LSTM || k == CellKind::LSTMLN; }
inline bool is_gru(CellKind k) {
  return k == CellKind::GRU || k == CellKind::GRUv1 || k == CellKind::GRULN;
}
inline Index gates_of(CellKind k) { return is_lstm(k) ? 4 : is_gru(k) ? 3 : 1; }

template <typename T>
class Stream {
 public:
  // Copies the weights: w_ih: [G*H, C], w_hh: [G*H, Hs], b_ih, b_hh: [G*H] (null = none),
  // w_hr: [P, H] (an LSTM's projection, P > 0; null = none, Hs = H); the state is [N, Hs] (and
  // the LSTM cell state [N, H]), zero to start with; acts: the cell's activations; zh_p, zc_p:
  // zoneout probabilities of h and c (inference: each step moves the state by 1 - p of the way);
  // ln: the LayerNorm cells' gains and biases (gx, gh: [G*H]; gc, bc: [H]; copied);
  // prec: the weights' precision (gemm.h): the copies are rounded to its grid (bfloat16, or int8
  // with one scale per output row) and packed in it, so every step reads 2x or 4x fewer bytes.
  Stream(CellKind kind, CellActs acts, Index C, Index H, Index N, const T* w_ih, const T* w_hh,
         const T* b_ih, const T* b_hh, const T* w_hr = nullptr, Index P = 0, T zh_p = T(0),
         T zc_p = T(0), LnParams<T> ln = {}, WeightPrecision prec = WeightPrecision::F32)
      : kind_(kind), acts_(acts), zh_p_(zh_p), zc_p_(zc_p), C_(C), H_(H), N_(N),
        G_(gates_of(kind) * H), P_(w_hr ? P : 0),
        Hs_(P_ ? P_ : H), w_ih_(CMatMap<T>(w_ih, G_, C)), w_hh_(CMatMap<T>(w_hh, G_, Hs_)),
        w_hr_(P_ ? Mat<T>(CMatMap<T>(w_hr, P_, H)) : Mat<T>()),
        b_ih_(b_ih ? RowVec<T>(CRowVecMap<T>(b_ih, G_)) : RowVec<T>()),
        b_hh_(b_hh ? RowVec<T>(CRowVecMap<T>(b_hh, G_)) : RowVec<T>()),
        h_(Mat<T>::Zero(N, Hs_)), c_(Mat<T>::Zero(is_lstm(kind) ? N : 0, H)),
        gh_(new T[(is_gru(kind) || kind == CellKind::LSTMLN) ? N * G_ : 0]) {
    if (ln.gx) {
      // the LayerNorm gains and biases: [gx | gh | gc | bc]
      ln_.resize(2 * G_ + (kind == CellKind::LSTMLN ? 2 * H : 0));
      std::copy(ln.gx, ln.gx + G_, ln_.data());
      std::copy(ln.gh, ln.gh + G_, ln_.data() + G_);
      if (kind == CellKind::LSTMLN) {
        std::copy(ln.gc, ln.gc + H, ln_.data() + 2 * G_);
        std::copy(ln.bc, ln.bc + H, ln_.data() + 2 * G_ + H);
      }
    }
    // the weights on the precision's grid (a no-op for F32), then packed in it
    round_weights(w_ih_.data(), G_, C, prec);
    round_weights(w_hh_.data(), G_, Hs_, prec);
    if (P_) round_weights(w_hr_.data(), P_, H, prec);
    prec_ = prec;
    for (PackedB<T>* pk : {&packed_ih_, &packed_hh_, &packed_hn_, &packed_hr_}) pk->use_precision(prec);
    // both weight matrices packed once, for every later call
    packed_ih_.reserve(C, G_);
    packed_ih_.pack_transposed(w_ih_.data(), C, 0, G_);
    if (kind == CellKind::GRUv1) {
      // two products per step: w_rz^T: [H, 2H] and w_hn^T: [H, H]
      packed_hh_.reserve(H, 2 * H);
      packed_hh_.pack_transposed(w_hh_.data(), H, 0, 2 * H);
      packed_hn_.reserve(H, H);
      packed_hn_.pack_transposed(w_hh_.data() + 2 * H * H, H, 0, H);
    } else {
      packed_hh_.reserve(Hs_, G_);
      packed_hh_.pack_transposed(w_hh_.data(), Hs_, 0, G_);
    }
    if (P_) {
      // the projection w_hr^T: [H, P]
      packed_hr_.reserve(H, P_);
      packed_hr_.pack_transposed(w_hr_.data(), H, 0, P_);
    }
    if (!is_gru(kind) && b_ih_.size() && b_hh_.size()) {
      // RNN and LSTM add both biases to the input projection: fold them into one
      b_ih_ += b_hh_;
      b_hh_.resize(0);
    }
    reserve(1);
  }

  Index C() const { return C_; }
  Index H() const { return H_; }
  // the width of the state h (P with a projection, else H)
  Index state_size() const { return Hs_; }
  Index N() const { return N_; }
  CellKind kind() const { return kind_; }
  WeightPrecision precision() const { return prec_; }
  // the LayerNorm parameters as the kernels take them (null pointers for the other cells)
  LnParams<T> ln() const {
    if (!ln_.size()) return {};
    const T* p = ln_.data();
    return {p, p + G_, kind_ == CellKind::LSTMLN ? p + 2 * G_ : nullptr,
            kind_ == CellKind::LSTMLN ? p + 2 * G_ + H_ : nullptr};
  }
  // copies of the carried state: h: [N, Hs], c: [N, H]
  Mat<T> h() const {
    std::lock_guard<std::mutex> lock(mu_);
    return h_;
  }
  Mat<T> c() const {
    std::lock_guard<std::mutex> lock(mu_);
    return c_;
  }

  // h: [N, Hs], c: [N, H] (null = zeros)
  void reset(const T* h0, const T* c0) {
    std::lock_guard<std::mutex> lock(mu_);
    if (h0) h_ = CMatMap<T>(h0, N_, Hs_); else h_.setZero();
    if (is_lstm(kind_)) {
      if (c0) c_ = CMatMap<T>(c0, N_, H_); else c_.setZero();
    }
  }

  // Runs `steps` steps from the carried state: x: [steps, N, C] -> y: [steps, N, H].
  // Calls from several threads are serialised (the GIL is released around large steps).
  // Returns false when a pending interrupt stopped it early: the carried state is then unchanged.
  bool run(const T* x, Index steps, T* y) {
    std::lock_guard<std::mutex> lock(mu_);
    reserve(steps);
    const Dims d{steps, N_, C_, H_, P_};
    Weights<T> w{w_ih_.data(), w_hh_.data(), b_ih_.size() ? b_ih_.data() : nullptr,
                 b_hh_.size() ? b_hh_.data() : nullptr, nullptr, &packed_ih_, &packed_hh_,
                 kind_ == CellKind::GRUv1 ? &packed_hn_ : nullptr};
    if (P_) {
      w.w_hr = w_hr_.data();
      w.packed_hr = &packed_hr_;
    }
    w.zh = {nullptr, zh_p_};
    w.zc = {nullptr, zc_p_};
    SeqOptions opt{};
    opt.acts = acts_;
    const Index NH = N_ * H_, NHs = N_ * Hs_;
    bool completed = false;
    switch (kind_) {
      case CellKind::LSTM:
        completed = lstm_forward<T>(d, x, h_.data(), c_.data(), w, opt, y,
                                    {S_.get(), Cs_.get(), gates_.get(), M_.get(), Cnew_.get()});
        // carried cell state c = Cs[steps]
        if (completed)
          std::copy(Cs_.get() + steps * NH, Cs_.get() + (steps + 1) * NH, c_.data());
        break;
      case CellKind::GRU:
        completed = gru_forward<T>(d, x, h_.data(), w, opt, y,
                                   {S_.get(), gates_.get(), hn_.get()}, gh_.get());
        break;
      case CellKind::GRUv1:
        completed = gru_v1_forward<T>(d, x, h_.data(), w, opt, y,
                                      {S_.get(), gates_.get(), hn_.get()}, gh_.get());
        break;
      case CellKind::RNN:
        completed = rnn_forward<T>(d, x, h_.data(), w, opt, y, S_.get());
        break;
      case CellKind::LSTMLN:
        completed = lstm_ln_forward<T>(d, x, h_.data(), c_.data(), w, ln(), opt, y,
                                       {S_.get(), Cs_.get(), gates_.get(), Xh_.get(), Rh_.get(),
                                        hn_.get(), rstd_.get()},
                                       gh_.get());
        if (completed)
          std::copy(Cs_.get() + steps * NH, Cs_.get() + (steps + 1) * NH, c_.data());
        break;
      case CellKind::GRULN:
        completed = gru_ln_forward<T>(d, x, h_.data(), w, ln(), opt, y,
                                      {S_.get(), gates_.get(), Xh_.get(), Rh_.get(), rstd_.get()},
                                      gh_.get());
        break;
    }
    // carried state h = S[steps]
    if (completed) std::copy(S_.get() + steps * NHs, S_.get() + (steps + 1) * NHs, h_.data());
    return completed;
  }

 private:
  // Workspaces for chunks of up to `steps` steps.
  // Not zero-filled (new T[n]): the pages are first touched by the kernels' interruptible pieces,
  // so a huge chunk does not spend seconds faulting memory in before Ctrl-C can stop it.
  void reserve(Index steps) {
    if (steps <= cap_) return;
    const Index NH = N_ * H_;
    S_.reset(new T[(steps + 1) * N_ * Hs_]);
    if (P_) M_.reset(new T[steps * NH]);
    if (kind_ == CellKind::LSTM && zc_p_ != T(0)) Cnew_.reset(new T[steps * NH]);
    gates_.reset(new T[steps * N_ * G_]);
    if (is_lstm(kind_)) Cs_.reset(new T[(steps + 1) * NH]);
    if (kind_ == CellKind::GRU || kind_ == CellKind::GRUv1 || kind_ == CellKind::LSTMLN)
      hn_.reset(new T[steps * NH]);  // GRU's W_hn h + b_hn, r ⊙ h̃; LayerNorm LSTM's LN(c')
    if (kind_ == CellKind::LSTMLN || kind_ == CellKind::GRULN) {
      Xh_.reset(new T[steps * N_ * G_]);
      Rh_.reset(new T[steps * N_ * G_]);
      rstd_.reset(new T[steps * N_ * 3]);
    }
    cap_ = steps;
  }

  CellKind kind_;
  WeightPrecision prec_ = WeightPrecision::F32;
  CellActs acts_;
  T zh_p_, zc_p_;
  Index C_, H_, N_, G_, P_, Hs_;
  Mat<T> w_ih_, w_hh_, w_hr_;
  RowVec<T> ln_;  // LayerNorm gains and biases (see ln())
  RowVec<T> b_ih_, b_hh_;
  Mat<T> h_, c_;
  PackedB<T> packed_ih_, packed_hh_, packed_hn_, packed_hr_;
  std::unique_ptr<T[]> gh_, S_, Cs_, gates_, hn_, M_, Cnew_, Xh_, Rh_, rstd_;  // workspaces (see reserve)
  Index cap_ = 0;
  mutable std::mutex mu_;
};

}  // namespace rnnkit
