// LSTM forward and backward over a whole sequence (PyTorch's gate order i, f, g, o).
//
//   i = σ(W_ii x + b_ii + W_hi h + b_hi)      f = σ(W_if x + b_if + W_hf h + b_hf)
//   g = φ(W_ig x + b_ig + W_hg h + b_hg)      o = σ(W_io x + b_io + W_ho h + b_ho)
//   c' = f ⊙ c + i ⊙ g                         h' = o ⊙ φ(c')
//
// σ is the recurrent activation (opt.acts.rec: sigmoid, or Keras's hard_sigmoid) and φ the
// activation (opt.acts.act: tanh, relu or linear), as Keras's LSTM(activation,
// recurrent_activation); PyTorch's LSTM is σ = sigmoid, φ = tanh.
//
// With a projection (LSTMP, torch.nn.LSTM(proj_size=P), d.P > 0) the state is projected down:
//   m = o ⊙ φ(c')  [N, H]                     h' = m · W_hr^T  [N, P]
// so W_hh is [4H, P], and each step has a second product, [N, H] x [H, P], after the gate pass.
//
// With zoneout (w.zh, w.zc; Krueger et al. 2016) each state moves only part of the way:
//   c_t = c' + z_c ⊙ (c_{t-1} - c')            h_t = h' + z_h ⊙ (h_{t-1} - h')
// where h' is computed from the un-zoned c' (kept for backward in cache.Cnew).
#pragma once

#include <type_traits>

#include "core.h"
#include "gemm.h"

namespace rnnkit {

// The fused gate pass of one row, float on SIMD packets.
//   g: [4H] pre-activations in, activated i, f, g, o out (kept for backward);
//   cp: [H] c_{t-1};  cn, hn: [H] c_t, h_t out.  Phi, Sig: the activation types φ, σ (see acts).
template <typename Phi, typename Sig>
inline void lstm_row_forward(float* g, const float* cp, float* cn, float* hn, Index H) {
  using namespace simd;
  for_packets(H, [&](Index j, auto L) {
    // i, f, o = σ(·),  g = φ(·)
    const Packet i = Sig::f(L.load(g + j)), f = Sig::f(L.load(g + H + j));
    const Packet gg = Phi::f(L.load(g + 2 * H + j)), o = Sig::f(L.load(g + 3 * H + j));
    L.store(g + j, i);
    L.store(g + H + j, f);
    L.store(g + 2 * H + j, gg);
    L.store(g + 3 * H + j, o);
    // c_t = f ⊙ c_{t-1} + i ⊙ g
    const Packet c = madd(f, L.load(cp + j), mul(i, gg));
    L.store(cn + j, c);
    // h_t = o ⊙ φ(c_t)
    L.store(hn + j, mul(o, Phi::f(c)));
  });
}

// The backward gate pass of one row, float on SIMD packets.
//   g: [4H] activated i, f, g, o;  cp, cn: [H] c_{t-1}, c_t;  dh: [H] dL/dh_t;
//   dc_in: [H] dL/dc_t from later steps.  Out: dg: [4H] gradients of the pre-activations,
//   dc_out: [H] dL/dc_{t-1}.  (σ' and φ' from the activated values: Sig::df, Phi::df.)
template <typename Phi, typename Sig>
inline void lstm_row_backward(const float* g, const float* cp, const float* cn, const float* dh,
                              const float* dc_in, float* dg, float* dc_out, Index H) {
  using namespace simd;
  for_packets(H, [&](Index j, auto L) {
    const Packet i = L.load(g + j), f = L.load(g + H + j), gg = L.load(g + 2 * H + j),
                 o = L.load(g + 3 * H + j), d_h = L.load(dh + j);
    // φ(c_t), recomputed from c_t
    const Packet tc = Phi::f(L.load(cn + j));
    // dc = dc_in + dh ⊙ o ⊙ φ'(c_t)
    const Packet dc = madd(mul(d_h, o), Phi::df(tc), L.load(dc_in + j));
    // d(i pre) = dc ⊙ g ⊙ σ'(i)
    L.store(dg + j, mul(mul(dc, gg), Sig::df(i)));
    // d(f pre) = dc ⊙ c_{t-1} ⊙ σ'(f)
    L.store(dg + H + j, mul(mul(dc, L.load(cp + j)), Sig::df(f)));
    // d(g pre) = dc ⊙ i ⊙ φ'(g)
    L.store(dg + 2 * H + j, mul(mul(dc, i), Phi::df(gg)));
    // d(o pre) = dh ⊙ φ(c_t) ⊙ σ'(o)
    L.store(dg + 3 * H + j, mul(mul(d_h, tc), Sig::df(o)));
    // dc_{t-1} = dc ⊙ f
    L.store(dc_out + j, mul(dc, f));
  });
}

// What LSTM backward needs from forward, all owned by the caller.
//   S: [T+1, N, Hs] hidden states (Hs = d.state(): P with a projection, else H), Cs: [T+1, N, H]
//   cell states (StateIndex layout), gates: [T, N, 4H] activated gates i, f, g, o per time step,
//   M: [T, N, H] o ⊙ φ(c) before the projection (null without one); Cnew: [T, N, H] the cell
//   states before zoneout (null without zoneout of c).
template <typename T>
struct LstmCache {
  T* S = nullptr;
  T* Cs = nullptr;
  T* gates = nullptr;
  T* M = nullptr;
  T* Cnew = nullptr;
};

// LSTM forward.
//   x: [T, N, C]; h0: [N, Hs], c0: [N, H] (null = zeros); weights w_ih: [4H, C], w_hh: [4H, Hs],
//   b_ih, b_hh: [4H] (null = none), w_hr: [P, H] (with d.P), rd: [N, Hs] (null = none);
//   opt.mask: [T, N]. Writes y: [T, N, Hs] and the cache (h_n = S[final], c_n = Cs[final]).
//   Returns false when a pending interrupt stopped the time loop early (outputs incomplete).
template <typename T>
bool lstm_forward(const Dims& d, const T* x, const T* h0, const T* c0, const Weights<T>& w,
                  const SeqOptions& opt, T* y, const LstmCache<T>& cache) {
  const Index N = d.N, H = d.H, G = 4 * H, NH = N * H, P = d.P, Hs = d.state(), NHs = N * Hs;
  const StateIndex si{d.T, opt.reverse};
  DenormalGuard ftz;  // this thread; every parallel region guards its own

  // gates[t] = x_t · w_ih^T + b_ih + b_hh     for all t at once: [T*N, 4H]
  if (!input_projection(d, G, x, w.w_ih, w.b_ih, w.b_hh, cache.gates, w.packed_ih))
    return false;

  // initial states (zeros when not given)
  T* S0 = cache.S + si.initial() * NHs;
  T* C0 = cache.Cs + si.initial() * NH;
  if (h0) std::copy(h0, h0 + NHs, S0); else std::fill(S0, S0 + NHs, T(0));
  if (c0) std::copy(c0, c0 + NH, C0); else std::fill(C0, C0 + NH, T(0));
  // hd = h ⊙ rd, the recurrent product's input under recurrent dropout
  Mat<T> hd(w.rd ? N : 0, Hs);
  drop_rows(S0, w.rd, {0, N}, Hs, hd.data());
  // per thread: its columns of w_hr^T: [H, |pcols|] (projection only), packed before its loop
  std::vector<PackedB<T>> packs_r(P && !w.packed_hr ? max_threads() : 0);

  // on every thread: its share s of each step and its columns of w_hh^T: [Hs, |s.cols|], packed
  // once for the whole sequence
  const bool completed = run_time_loop<T>(d.T, N, Hs, G, w.packed_hh, [&](PackedB<T>& B, Index c0, Index c1) {
    B.pack_transposed(w.w_hh, Hs, c0, c1);
  }, [&](const StepShare& s, const PackedB<T>& Wk) {
    const Range rows = s.rows, cols = s.cols, mr = s.gemm_rows;
    // the projection's columns of this thread: all by rows, a slice by columns
    const Range pcols = s.by_rows ? Range{0, P} : split(P, s.tid, s.team);
    if (P && !w.packed_hr) {
      packs_r[s.tid].reserve(H, pcols.size());
      packs_r[s.tid].pack_transposed(w.w_hr, H, pcols.begin, pcols.end);
    }
    const PackedB<T>* Wr = P ? (w.packed_hr ? w.packed_hr : &packs_r[s.tid]) : nullptr;
    for (Index k = 0; k < d.T; ++k) {
      s.poll();
      const Index t = si.time_of(k);
      const bool* m = opt.mask_at(t, N);
      MatMap<T> Gt(cache.gates + t * N * G, N, G);
      const T* hp = cache.S + si.before(t) * NHs;
      const T* cp = cache.Cs + si.before(t) * NH;
      T* hn = cache.S + si.after(t) * NHs;
      T* cn = cache.Cs + si.after(t) * NH;
      // the gate pass's output o ⊙ φ(c_t): h_t itself, or m_t before the projection
      T* mo = P ? cache.M + t * NH : hn;
      // and its new cell state: c_t itself, or c' before zoneout
      T* cw = w.zc.on() ? cache.Cnew + t * NH : cn;

      // G_t[mr, cols] += (h_{t-1} ⊙ rd)[mr] · w_hh[cols]^T        [|mr|, Hs] x [Hs, |cols|]
      Wk.multiply(mr.size(), (w.rd ? hd.data() : hp) + mr.begin * Hs, Hs,
                  Gt.data() + mr.begin * G + cols.begin, G, /*accumulate=*/true);
      s.sync();
      if (s.should_stop()) break;

      // the fused gate pass of this thread's rows, for the cell's activation pair (φ, σ)
      with_acts(opt.acts, [&](auto phi, auto sig) {
        using Phi = decltype(phi);
        using Sig = decltype(sig);
        if constexpr (std::is_same_v<T, float>) {
          for (Index n = rows.begin; n < rows.end; ++n)
            lstm_row_forward<Phi, Sig>(Gt.data() + n * G, cp + n * H, cw + n * H, mo + n * H, H);
        } else if (rows.size()) {
          const Index r0 = rows.begin, rr = rows.size();
          auto Gb = Gt.middleRows(r0, rr);
          // i, f = σ(·)
          Gb.leftCols(2 * H).array() = Sig::f(Gb.leftCols(2 * H).array());
          // g = φ(·)
          Gb.middleCols(2 * H, H).array() = Phi::f(Gb.middleCols(2 * H, H).array());
          // o = σ(·)
          Gb.rightCols(H).array() = Sig::f(Gb.rightCols(H).array());
          auto i = Gb.leftCols(H).array();
          auto f = Gb.middleCols(H, H).array();
          auto g = Gb.middleCols(2 * H, H).array();
          auto o = Gb.rightCols(H).array();
          MatMap<T> Cn(cw + r0 * H, rr, H);
          // c_t = f ⊙ c_{t-1} + i ⊙ g
          Cn.array() = f * CMatMap<T>(cp + r0 * H, rr, H).array() + i * g;
          // h_t (or m_t) = o ⊙ φ(c_t)
          MatMap<T>(mo + r0 * H, rr, H).array() = o * Phi::f(Cn.array());
        }
      });
      if (w.zc.on()) {
        // c_t = c' + z_c ⊙ (c_{t-1} - c')
        std::copy(cw + rows.begin * H, cw + rows.end * H, cn + rows.begin * H);
        zoneout_rows(w.zc.at(t, NH), w.zc.p, rows, H, cp, cn);
      }
      if (P) {
        s.sync();
        // h_t[mr, pcols] = m_t[mr] · w_hr[pcols]^T                     [|mr|, H] x [H, |pcols|]
        Wr->multiply(mr.size(), mo + mr.begin * H, H, hn + mr.begin * P + pcols.begin, P, false);
        s.sync();
      }
      // h_t = h' + z_h ⊙ (h_{t-1} - h')
      if (w.zh.on()) zoneout_rows(w.zh.at(t, NHs), w.zh.p, rows, Hs, hp, hn);
      // masked rows keep the previous state
      carry_masked_rows(m, rows, Hs, hp, hn);
      carry_masked_rows(m, rows, H, cp, cn);
      write_output(m, opt.zero_masked, rows, Hs, hn, y + t * NHs);
      drop_rows(hn, w.rd, rows, Hs, hd.data());
      s.sync();
    }
  });
  return completed;
}

// LSTM backward (backpropagation through time).
//   x: [T, N, C]; cache from lstm_forward; dy: [T, N, Hs]; dh_n: [N, Hs], dc_n: [N, H] (null =
//   zeros). Workspaces dG: [T, N, 4H] and, with a projection, dHs: [T, N, P] (dL/dh_t of every
//   step). Writes dx: [T, N, C], dh0: [N, Hs], dc0: [N, H], dw_ih: [4H, C], dw_hh: [4H, Hs],
//   db: [4H] (the gradient of b_ih and of b_hh alike; null to skip), dw_hr: [P, H] (projection).
//   Returns false when a pending interrupt stopped the time loop early (outputs incomplete).
template <typename T>
bool lstm_backward(const Dims& d, const T* x, const Weights<T>& w, const SeqOptions& opt,
                   const LstmCache<T>& cache, const T* dy, const T* dh_n, const T* dc_n, T* dG,
                   T* dx, T* dh0, T* dc0, T* dw_ih, T* dw_hh, T* db, T* dHs = nullptr,
                   T* dw_hr = nullptr) {
  const Index N = d.N, H = d.H, G = 4 * H, NH = N * H, P = d.P, Hs = d.state(), NHs = N * Hs;
  const StateIndex si{d.T, opt.reverse};
  DenormalGuard ftz;  // this thread; every parallel region guards its own

  // dh_carry, dc: gradients w.r.t. the state after the current step; dh = dh_carry + dy_t;
  // dm: dL/dm_t = dL/dh_t · w_hr (projection only)
  Mat<T> dh_carry(N, Hs), dh(N, Hs), dc_a(N, H), dc_b(N, H), dm(P ? N : 0, H);
  // zoneout: the gradients reaching h' and c' (dh ⊙ (1 - z_h), dc ⊙ (1 - z_c))
  Mat<T> dhz(w.zh.on() ? N : 0, Hs), dcz(w.zc.on() ? N : 0, H);
  if (dh_n) dh_carry = CMatMap<T>(dh_n, N, Hs); else dh_carry.setZero();
  if (dc_n) dc_a = CMatMap<T>(dc_n, N, H); else dc_a.setZero();
  T* dc_final = dc_a.data();

  // per thread: its columns of w_hr: [P, |hcols|] (projection only), packed before its loop
  std::vector<PackedB<T>> packs_r(P ? max_threads() : 0);

  // on every thread: its share s of each step and its columns of w_hh: [4H, |s.cols|], packed
  // once for the whole sequence
  const bool completed = run_time_loop<T>(d.T, N, G, Hs, nullptr, [&](PackedB<T>& B, Index c0, Index c1) {
    B.pack_plain(w.w_hh, G, Hs, c0, c1);
  }, [&](const StepShare& s, const PackedB<T>& Wk) {
    const Range rows = s.rows, cols = s.cols, mr = s.gemm_rows;
    // the columns of dm (H of them) this thread computes: all by rows, a slice by columns
    const Range hcols = s.by_rows ? Range{0, H} : split(H, s.tid, s.team);
    if (P) {
      packs_r[s.tid].reserve(P, hcols.size());
      packs_r[s.tid].pack_plain(w.w_hr, P, H, hcols.begin, hcols.end);
    }
    T* dc_cur = dc_a.data();  // dc w.r.t. c_t (every thread swaps its own copies alike)
    T* dc_prev = dc_b.data();
    for (Index k = d.T - 1; k >= 0; --k) {
      s.poll();
      const Index t = si.time_of(k);
      const bool* m = opt.mask_at(t, N);
      const T* Gt = cache.gates + t * N * G;
      const T* cp = cache.Cs + si.before(t) * NH;
      // the new cell state c' (before zoneout)
      const T* cn = w.zc.on() ? cache.Cnew + t * NH : cache.Cs + si.after(t) * NH;
      T* dGt = dG + t * N * G;

      // dh = dh_carry + dy_t
      add_output_grad(m, opt.zero_masked, rows, Hs, dy + t * NHs, dh_carry.data(), dh.data());
      record_dh_norms(opt.dh_norms, t, N, rows, Hs, dh.data());
      // the gradient reaching h': dh, or dh ⊙ (1 - z_h) under zoneout
      const T* dnew = dh.data();
      if (w.zh.on()) {
        zoneout_grad_new(w.zh.at(t, NHs), w.zh.p, rows, Hs, dh.data(), dhz.data());
        dnew = dhz.data();
      }
      // the gate pass's incoming gradient, dL/d(o ⊙ φ(c_t)): dh' itself, or dm
      const T* dmo = dnew;
      if (P) {
        // keep dL/dh'_t for dw_hr (masked rows: none, their m_t was not used)
        T* dHt = dHs + t * NHs;
        std::copy(dnew + rows.begin * P, dnew + rows.end * P, dHt + rows.begin * P);
        zero_masked_rows(m, rows, P, dHt);
        s.sync();
        if (s.should_stop()) break;
        // dm[mr, hcols] = dL/dh_t[mr] · w_hr[:, hcols]                  [|mr|, P] x [P, |hcols|]
        packs_r[s.tid].multiply(mr.size(), dHt + mr.begin * P, P, dm.data() + mr.begin * H + hcols.begin,
                                H, false);
        s.sync();
        dmo = dm.data();
      }
      // the gradient reaching c' from later steps: dc, or dc ⊙ (1 - z_c) under zoneout
      const T* dc_in = dc_cur;
      if (w.zc.on()) {
        zoneout_grad_new(w.zc.at(t, NH), w.zc.p, rows, H, dc_cur, dcz.data());
        dc_in = dcz.data();
      }
      // the fused backward pass of this thread's rows, for the cell's activation pair (φ, σ)
      with_acts(opt.acts, [&](auto phi, auto sig) {
        using Phi = decltype(phi);
        using Sig = decltype(sig);
        if constexpr (std::is_same_v<T, float>) {
          for (Index n = rows.begin; n < rows.end; ++n)
            lstm_row_backward<Phi, Sig>(Gt + n * G, cp + n * H, cn + n * H, dmo + n * H,
                                        dc_in + n * H, dGt + n * G, dc_prev + n * H, H);
        } else if (rows.size()) {
          const Index r0 = rows.begin, rr = rows.size();
          CMatMap<T> Gb(Gt + r0 * G, rr, G);
          MatMap<T> dGb(dGt + r0 * G, rr, G);
          auto i = Gb.leftCols(H).array();
          auto f = Gb.middleCols(H, H).array();
          auto g = Gb.middleCols(2 * H, H).array();
          auto o = Gb.rightCols(H).array();
          auto dh_b = CMatMap<T>(dmo + r0 * H, rr, H).array();
          auto dc_b_in = CMatMap<T>(dc_in + r0 * H, rr, H).array();
          auto dc_b_out = MatMap<T>(dc_prev + r0 * H, rr, H).array();
          auto di = dGb.leftCols(H).array();
          auto df = dGb.middleCols(H, H).array();
          auto dg = dGb.middleCols(2 * H, H).array();
          auto d_o = dGb.rightCols(H).array();
          // φ(c_t), kept in the o-slot for a moment
          d_o = Phi::f(CMatMap<T>(cn + r0 * H, rr, H).array());
          // dc = dc_carry + dh ⊙ o ⊙ φ'(c_t)      (held in dc_prev's rows until the end)
          dc_b_out = dc_b_in + dh_b * o * Phi::df(d_o);
          // d(o pre) = dh ⊙ φ(c_t) ⊙ σ'(o)
          d_o = dh_b * d_o * Sig::df(o);
          // d(i pre) = dc ⊙ g ⊙ σ'(i)
          di = dc_b_out * g * Sig::df(i);
          // d(f pre) = dc ⊙ c_{t-1} ⊙ σ'(f)
          df = dc_b_out * CMatMap<T>(cp + r0 * H, rr, H).array() * Sig::df(f);
          // d(g pre) = dc ⊙ i ⊙ φ'(g)
          dg = dc_b_out * i * Phi::df(g);
          // dc_{t-1} = dc ⊙ f
          dc_b_out = dc_b_out * f;
        }
      });
      // dc_{t-1} += dc ⊙ z_c (zoneout keeps that much of c_{t-1})
      if (w.zc.on()) zoneout_grad_prev(w.zc.at(t, NH), w.zc.p, rows, Range{0, H}, H, dc_cur, dc_prev);
      // masked rows: no gate gradient, dc_{t-1} = dc_t
      zero_masked_rows(m, rows, G, dGt);
      carry_masked_rows(m, rows, H, dc_cur, dc_prev);
      std::swap(dc_cur, dc_prev);
      s.sync();
      if (!P && s.should_stop()) break;

      // dh_{t-1}[mr, cols] = (dG_t[mr] · w_hh[:, cols]) ⊙ rd        [|mr|, 4H] x [4H, |cols|]
      Wk.multiply(mr.size(), dGt + mr.begin * G, G, dh_carry.data() + mr.begin * Hs + cols.begin, Hs,
                  /*accumulate=*/false);
      apply_dropout_grad(w.rd, mr, cols, Hs, dh_carry.data());
      // dh_{t-1} += dh ⊙ z_h (zoneout keeps that much of h_{t-1})
      if (w.zh.on()) zoneout_grad_prev(w.zh.at(t, NHs), w.zh.p, mr, cols, Hs, dh.data(), dh_carry.data());
      // masked rows: dh_{t-1} = dh
      pass_masked_cols(m, mr, cols, Hs, dh.data(), dh_carry.data());
      s.sync();
    }
    if (s.tid == 0) dc_final = dc_cur;
  });
  if (!completed) return false;
  std::copy(dh_carry.data(), dh_carry.data() + NHs, dh0);
  std::copy(dc_final, dc_final + NH, dc0);

  // dx, dw_ih, dw_hh, db (and dw_hr) from single GEMMs over all steps; the states before each
  // step as the recurrent product saw them: [T, N, Hs]
  const Index rows = d.T * N;
  Mat<T> hp_drop(w.rd ? d.T * N : 0, Hs);
  const T* hprev = dropped_states(cache.S + si.hprev_block() * NHs, w.rd, d.T, NHs, hp_drop.data());
  // dx = dG · w_ih;  dw_ih = dG^T · x;  dw_hh = dG^T · hprev;  dw_hr = dHs^T · M
  if (!input_grad(d, G, dG, w.w_ih, dx) || !weight_grad(rows, G, dG, G, x, d.C, dw_ih) ||
      !weight_grad(rows, G, dG, G, hprev, Hs, dw_hh) ||
      (P && !weight_grad(rows, P, dHs, P, cache.M, H, dw_hr)))
    return false;
  // db = sum over all T*N rows
  if (db) column_sums(dG, rows, G, db);
  return true;
}

}  // namespace rnnkit
