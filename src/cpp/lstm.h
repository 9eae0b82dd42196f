// LSTM forward and backward over a whole sequence (PyTorch's gate order i, f, g, o).
//
//   i = σ(W_ii x + b_ii + W_hi h + b_hi)      f = σ(W_if x + b_if + W_hf h + b_hf)
//   g = tanh(W_ig x + b_ig + W_hg h + b_hg)   o = σ(W_io x + b_io + W_ho h + b_ho)
//   c' = f ⊙ c + i ⊙ g                         h' = o ⊙ tanh(c')
#pragma once

#include "core.h"

namespace rnnkit {

// What LSTM backward needs from forward, all owned by the caller.
//   S: [T+1, N, H] hidden states, Cs: [T+1, N, H] cell states (StateIndex layout),
//   gates: [T, N, 4H] activated gates i, f, g, o per time step.
template <typename T>
struct LstmCache {
  T* S = nullptr;
  T* Cs = nullptr;
  T* gates = nullptr;
};

// LSTM forward.
//   x: [T, N, C]; h0, c0: [N, H] (null = zeros); weights w_ih: [4H, C], w_hh: [4H, H],
//   b_ih, b_hh: [4H] (null = none); opt.mask: [T, N].
//   Writes y: [T, N, H] and the cache (h_n = S[final], c_n = Cs[final]).
template <typename T>
void lstm_forward(const Dims& d, const T* x, const T* h0, const T* c0, const Weights<T>& w,
                  const SeqOptions& opt, T* y, const LstmCache<T>& cache) {
  const Index N = d.N, H = d.H, G = 4 * H, NH = N * H;
  const StateIndex si{d.T, opt.reverse};
  DenormalGuard ftz(DenormalGuard::wants_all_threads(d, G));
  Mat<T> hd(w.rd ? N : 0, H);  // h_{t-1} ⊙ rd (recurrent dropout only)

  // gates[t] = x_t · w_ih^T + b_ih + b_hh     for all t at once: [T*N, 4H]
  input_projection(d, G, x, w.w_ih, w.b_ih, w.b_hh, cache.gates);

  // initial states (zeros when not given)
  T* S0 = cache.S + si.initial() * NH;
  T* C0 = cache.Cs + si.initial() * NH;
  if (h0) std::copy(h0, h0 + NH, S0); else std::fill(S0, S0 + NH, T(0));
  if (c0) std::copy(c0, c0 + NH, C0); else std::fill(C0, C0 + NH, T(0));

  CMatMap<T> Whh(w.w_hh, G, H);
  for (Index k = 0; k < d.T; ++k) {
    const Index t = si.time_of(k);
    const bool* m = opt.mask_at(t, N);
    MatMap<T> Gt(cache.gates + t * N * G, N, G);
    const T* hp = cache.S + si.before(t) * NH;
    const T* cp = cache.Cs + si.before(t) * NH;
    T* hn = cache.S + si.after(t) * NH;
    T* cn = cache.Cs + si.after(t) * NH;

    // pre-activations: G_t += (h_{t-1} ⊙ rd) · w_hh^T        [N, H] x [H, 4H]
    Gt.noalias() += CMatMap<T>(dropped_state(hp, w.rd, NH, hd.data()), N, H) * Whh.transpose();

    // one fused pass over the gates, by row chunks
    for_row_chunks(N, G, [&](Index r0, Index r1) {
      const Index rr = r1 - r0;
      auto Gb = Gt.middleRows(r0, rr);
      // i, f = σ(·)
      Gb.leftCols(2 * H).array() = sigmoid(Gb.leftCols(2 * H).array());
      // g = tanh(·)
      Gb.middleCols(2 * H, H).array() = Gb.middleCols(2 * H, H).array().tanh();
      // o = σ(·)
      Gb.rightCols(H).array() = sigmoid(Gb.rightCols(H).array());
      auto i = Gb.leftCols(H).array();
      auto f = Gb.middleCols(H, H).array();
      auto g = Gb.middleCols(2 * H, H).array();
      auto o = Gb.rightCols(H).array();
      MatMap<T> Cn(cn + r0 * H, rr, H);
      // c_t = f ⊙ c_{t-1} + i ⊙ g
      Cn.array() = f * CMatMap<T>(cp + r0 * H, rr, H).array() + i * g;
      // h_t = o ⊙ tanh(c_t)
      MatMap<T>(hn + r0 * H, rr, H).array() = o * Cn.array().tanh();
    });

    // masked rows keep the previous state
    carry_masked_rows(m, N, hp, hn, H);
    carry_masked_rows(m, N, cp, cn, H);
    write_output(m, opt.zero_masked, N, H, hn, y + t * NH);
  }
}

// LSTM backward (backpropagation through time).
//   x: [T, N, C]; cache from lstm_forward; dy: [T, N, H]; dh_n, dc_n: [N, H] (null = zeros).
//   Workspace dG: [T, N, 4H]. Writes dx: [T, N, C], dh0, dc0: [N, H], dw_ih: [4H, C],
//   dw_hh: [4H, H], db: [4H] (the gradient of b_ih and of b_hh alike; null to skip).
template <typename T>
void lstm_backward(const Dims& d, const T* x, const Weights<T>& w, const SeqOptions& opt,
                   const LstmCache<T>& cache, const T* dy, const T* dh_n, const T* dc_n, T* dG,
                   T* dx, T* dh0, T* dc0, T* dw_ih, T* dw_hh, T* db) {
  const Index N = d.N, H = d.H, G = 4 * H, NH = N * H;
  const StateIndex si{d.T, opt.reverse};
  DenormalGuard ftz(DenormalGuard::wants_all_threads(d, G));

  // carried gradients w.r.t. the state after the current step, and their next values
  Mat<T> dh_carry(N, H), dh(N, H), dc_carry(N, H), dc_next(N, H);
  if (dh_n) dh_carry = CMatMap<T>(dh_n, N, H); else dh_carry.setZero();
  if (dc_n) dc_carry = CMatMap<T>(dc_n, N, H); else dc_carry.setZero();

  CMatMap<T> Whh(w.w_hh, G, H);
  for (Index k = d.T - 1; k >= 0; --k) {
    const Index t = si.time_of(k);
    const bool* m = opt.mask_at(t, N);
    const T* Gt = cache.gates + t * N * G;
    const T* cp = cache.Cs + si.before(t) * NH;
    const T* cn = cache.Cs + si.after(t) * NH;
    T* dGt = dG + t * N * G;

    // dh = dh_carry + dy_t
    add_output_grad(m, opt.zero_masked, N, H, dy + t * NH, dh_carry.data(), dh.data());

    for_row_chunks(N, G, [&](Index r0, Index r1) {
      const Index rr = r1 - r0;
      CMatMap<T> Gb(Gt + r0 * G, rr, G);
      MatMap<T> dGb(dGt + r0 * G, rr, G);
      auto i = Gb.leftCols(H).array();
      auto f = Gb.middleCols(H, H).array();
      auto g = Gb.middleCols(2 * H, H).array();
      auto o = Gb.rightCols(H).array();
      auto dh_b = dh.middleRows(r0, rr).array();
      auto dc_b = dc_carry.middleRows(r0, rr).array();
      auto dcn_b = dc_next.middleRows(r0, rr).array();
      auto di = dGb.leftCols(H).array();
      auto df = dGb.middleCols(H, H).array();
      auto dg = dGb.middleCols(2 * H, H).array();
      auto d_o = dGb.rightCols(H).array();
      // tanh(c_t), kept in the o-slot for a moment
      d_o = CMatMap<T>(cn + r0 * H, rr, H).array().tanh();
      // dc = dc_carry + dh ⊙ o ⊙ (1 - tanh²(c_t))
      dcn_b = dc_b + dh_b * o * (T(1) - d_o.square());
      // d(o pre) = dh ⊙ tanh(c_t) ⊙ o(1 - o)
      d_o = dh_b * d_o * o * (T(1) - o);
      // d(i pre) = dc ⊙ g ⊙ i(1 - i)
      di = dcn_b * g * i * (T(1) - i);
      // d(f pre) = dc ⊙ c_{t-1} ⊙ f(1 - f)
      df = dcn_b * CMatMap<T>(cp + r0 * H, rr, H).array() * f * (T(1) - f);
      // d(g pre) = dc ⊙ i ⊙ (1 - g²)
      dg = dcn_b * i * (T(1) - g.square());
      // dc_{t-1} = dc ⊙ f
      dcn_b = dcn_b * f;
    });

    zero_masked_rows(m, N, G, dGt);
    // dh_{t-1} = dG_t · w_hh        [N, 4H] x [4H, H]
    dh_carry.noalias() = CMatMap<T>(dGt, N, G) * Whh;
    // through the recurrent dropout: dh_{t-1} ⊙= rd
    apply_dropout_grad(w.rd, NH, dh_carry.data());
    // masked rows: dh_{t-1} = dh, dc_{t-1} = dc_carry
    pass_masked_rows(m, N, H, dh.data(), dh_carry.data());
    pass_masked_rows(m, N, H, dc_carry.data(), dc_next.data());
    dc_carry.swap(dc_next);
  }
  std::copy(dh_carry.data(), dh_carry.data() + NH, dh0);
  std::copy(dc_carry.data(), dc_carry.data() + NH, dc0);

  // dx, dw_ih, dw_hh, db from single GEMMs over all steps
  // states before each step as the recurrent product saw them: [T, N, H]
  Mat<T> hp_drop(w.rd ? d.T * N : 0, H);
  const T* hprev = dropped_states(cache.S + si.hprev_block() * NH, w.rd, d.T, NH, hp_drop.data());
  weight_gradients(d, G, dG, dG, x, hprev, w.w_ih, dx, dw_ih, dw_hh, db, static_cast<T*>(nullptr));
}

}  // namespace rnnkit
