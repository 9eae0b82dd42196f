// Elman RNN forward and backward over a whole sequence:
//
//   h' = φ(W_ih x + b_ih + W_hh h + b_hh),   φ = opt.acts.act: tanh, relu or linear
#pragma once

#include <type_traits>

#include "core.h"
#include "gemm.h"

namespace rnnkit {

// Elman RNN forward.
//   x: [T, N, C]; h0: [N, H] (null = zeros); w_ih: [H, C], w_hh: [H, H], b_ih, b_hh: [H] (null =
//   none); opt.mask: [T, N]. Writes y: [T, N, H] and the states S: [T+1, N, H] (StateIndex
//   layout), which are all backward needs: φ'(.) is recovered from h_t.
//   Returns false when a pending interrupt stopped the time loop early (outputs incomplete).
template <typename T>
bool rnn_forward(const Dims& d, const T* x, const T* h0, const Weights<T>& w, const SeqOptions& opt,
                 T* y, T* S) {
  const Index N = d.N, H = d.H, NH = N * H;
  const StateIndex si{d.T, opt.reverse};
  DenormalGuard ftz;  // this thread; every parallel region guards its own
  Mat<T> hd(w.rd ? N : 0, H);  // h_{t-1} ⊙ rd (recurrent dropout only)

  // S[after(t)] = x_t · w_ih^T + b_ih + b_hh for all t at once: the after-blocks are contiguous
  if (!input_projection(d, H, x, w.w_ih, w.b_ih, w.b_hh, S + (opt.reverse ? 0 : NH), w.packed_ih))
    return false;

  T* S0 = S + si.initial() * NH;
  if (h0) std::copy(h0, h0 + NH, S0); else std::fill(S0, S0 + NH, T(0));

  // hd = h ⊙ rd, the recurrent product's input under recurrent dropout
  drop_rows(S0, w.rd, {0, N}, H, hd.data());

  // on every thread: its share s of each step and its columns of w_hh^T: [H, |s.cols|], packed
  // once for the whole sequence
  const bool completed = run_time_loop<T>(d.T, N, H, H, w.packed_hh, [&](PackedB<T>& B, Index c0, Index c1) {
    B.pack_transposed(w.w_hh, H, c0, c1);
  }, [&](const StepShare& s, const PackedB<T>& Wk) {
    const Range rows = s.rows, cols = s.cols, mr = s.gemm_rows;
    for (Index k = 0; k < d.T; ++k) {
      s.poll();
      const Index t = si.time_of(k);
      const bool* m = opt.mask_at(t, N);
      const T* hp = S + si.before(t) * NH;
      MatMap<T> Hn(S + si.after(t) * NH, N, H);
      // pre[mr, cols] = (x-part) + (h_{t-1} ⊙ rd)[mr] · w_hh[cols]^T      [|mr|, H] x [H, |cols|]
      Wk.multiply(mr.size(), (w.rd ? hd.data() : hp) + mr.begin * H, H,
                  Hn.data() + mr.begin * H + cols.begin, H, /*accumulate=*/true);
      s.sync();
      if (s.should_stop()) break;
      with_act(opt.acts.act, [&](auto phi) {
        using Phi = decltype(phi);
        if constexpr (std::is_same_v<T, float>) {
          // h_t = φ(pre), on SIMD packets over this thread's rows
          float* a = Hn.data() + rows.begin * H;
          simd::for_packets(rows.size() * H, [&](Index j, auto L) {
            L.store(a + j, Phi::f(L.load(a + j)));
          });
        } else if (rows.size()) {
          auto a = Hn.middleRows(rows.begin, rows.size()).array();
          // h_t = φ(pre)
          a = Phi::f(a);
        }
      });
      carry_masked_rows(m, rows, H, hp, Hn.data());
      write_output(m, opt.zero_masked, rows, H, Hn.data(), y + t * NH);
      drop_rows(Hn.data(), w.rd, rows, H, hd.data());
      s.sync();
    }
  });
  return completed;
}

// Elman RNN backward.
//   x: [T, N, C]; S from rnn_forward; dy: [T, N, H]; dh_n: [N, H] (null = zeros).
//   Workspace dG: [T, N, H]. Writes dx: [T, N, C], dh0: [N, H], dw_ih: [H, C], dw_hh: [H, H],
//   db: [H] (the gradient of b_ih and of b_hh alike; null to skip).
//   Returns false when a pending interrupt stopped the time loop early (outputs incomplete).
template <typename T>
bool rnn_backward(const Dims& d, const T* x, const Weights<T>& w, const SeqOptions& opt,
                  const T* S, const T* dy, const T* dh_n, T* dG, T* dx,
                  T* dh0, T* dw_ih, T* dw_hh, T* db) {
  const Index N = d.N, H = d.H, NH = N * H;
  const StateIndex si{d.T, opt.reverse};
  DenormalGuard ftz;  // this thread; every parallel region guards its own

  Mat<T> dh_carry(N, H), dh(N, H);
  if (dh_n) dh_carry = CMatMap<T>(dh_n, N, H); else dh_carry.setZero();

  // on every thread: its share s of each step and its columns of w_hh: [H, |s.cols|], packed
  // once for the whole sequence
  const bool completed = run_time_loop<T>(d.T, N, H, H, nullptr, [&](PackedB<T>& B, Index c0, Index c1) {
    B.pack_plain(w.w_hh, H, H, c0, c1);
  }, [&](const StepShare& s, const PackedB<T>& Wk) {
    const Range rows = s.rows, cols = s.cols, mr = s.gemm_rows;
    for (Index k = d.T - 1; k >= 0; --k) {
      s.poll();
      const Index t = si.time_of(k);
      const bool* m = opt.mask_at(t, N);
      T* dGt = dG + t * NH;
      // dh = dh_carry + dy_t
      add_output_grad(m, opt.zero_masked, rows, H, dy + t * NH, dh_carry.data(), dh.data());
      record_dh_norms(opt.dh_norms, t, N, rows, H, dh.data());
      if (rows.size()) {
        const Index r0 = rows.begin, rr = rows.size();
        auto h = CMatMap<T>(S + si.after(t) * NH + r0 * H, rr, H).array();
        auto g = MatMap<T>(dGt + r0 * H, rr, H).array();
        auto dh_b = dh.middleRows(r0, rr).array();
        // d(pre) = dh ⊙ φ'(pre), φ' from h_t = φ(pre)
        with_act(opt.acts.act, [&](auto phi) { g = dh_b * decltype(phi)::df(h); });
      }
      zero_masked_rows(m, rows, H, dGt);
      s.sync();
      if (s.should_stop()) break;
      // dh_{t-1}[mr, cols] = (dG_t[mr] · w_hh[:, cols]) ⊙ rd        [|mr|, H] x [H, |cols|]
      Wk.multiply(mr.size(), dGt + mr.begin * H, H, dh_carry.data() + mr.begin * H + cols.begin, H,
                  /*accumulate=*/false);
      apply_dropout_grad(w.rd, mr, cols, H, dh_carry.data());
      // masked rows: dh_{t-1} = dh
      pass_masked_cols(m, mr, cols, H, dh.data(), dh_carry.data());
      s.sync();
    }
  });
  if (!completed) return false;
  std::copy(dh_carry.data(), dh_carry.data() + NH, dh0);

  Mat<T> hp_drop(w.rd ? d.T * N : 0, H);
  const T* hprev = dropped_states(S + si.hprev_block() * NH, w.rd, d.T, NH, hp_drop.data());
  return weight_gradients(d, H, dG, dG, x, hprev, w.w_ih, dx, dw_ih, dw_hh, db, static_cast<T*>(nullptr));
}

}  // namespace rnnkit
