// Layer-normalized LSTM (haste's LayerNormLSTM formulation), PyTorch's gate order i, f, g, o:
//
//   pre = γ_x ⊙ LN(W_ih x) + γ_h ⊙ LN(W_hh h_{t-1}) + b_ih + b_hh        [4H]
//   i, f, o = σ(pre_i, pre_f, pre_o)        g = φ(pre_g)
//   c' = f ⊙ c + i ⊙ g                       h' = o ⊙ φ(γ_c ⊙ LN(c') + β_c)
//
// LN normalizes a row (4H for the two products, H for the cell state; core.h layer_norm_row);
// the carried cell state is c' itself, normalized only on its way to h (Ba et al. 2016, as haste).
// The input products of all steps are one GEMM and are normalized before the time loop; each step
// is the recurrent GEMM, then one pass per row that normalizes it, applies the gates and
// normalizes c'. Backward: a reverse loop for the row passes and the dh recurrence, then dx, the
// weight gradients and the gains' gradients from whole-sequence products and column sums.
#pragma once

#include <type_traits>
#include <vector>

#include "core.h"
#include "gemm.h"

namespace rnnkit {

// The LayerNorm cells' gains and biases.
//   gx: [G*H] gain of LN(W_ih x), gh: [G*H] gain of LN(W_hh h); for the LSTM also
//   gc, bc: [H] gain and bias of LN(c').
template <typename T>
struct LnParams {
  const T* gx = nullptr;
  const T* gh = nullptr;
  const T* gc = nullptr;
  const T* bc = nullptr;
};

// What the LayerNorm LSTM's backward needs from its forward, all owned by the caller.
//   S: [T+1, N, H], Cs: [T+1, N, H] states (StateIndex layout); gates: [T, N, 4H] activated
//   i, f, g, o; Xh: [T, N, 4H] LN(W_ih x) and Rh: [T, N, 4H] LN(W_hh h_{t-1}), both before their
//   gains; Ch: [T, N, H] LN(c'); rstd: [T, N, 3] the three 1/σ of each row (x, h, c).
template <typename T>
struct LstmLnCache {
  T* S = nullptr;
  T* Cs = nullptr;
  T* gates = nullptr;
  T* Xh = nullptr;
  T* Rh = nullptr;
  T* Ch = nullptr;
  T* rstd = nullptr;
};

// LayerNorm LSTM forward.
//   x: [T, N, C]; h0, c0: [N, H] (null = zeros); w_ih: [4H, C], w_hh: [4H, H], b_ih, b_hh: [4H]
//   (null = none); ln: the gains/biases; rd: [N, H] (null = none); opt.mask: [T, N].
//   Workspace gh: [N, 4H]. Writes y: [T, N, H] and the cache.
//   Returns false when a pending interrupt stopped it early (outputs incomplete).
template <typename T>
bool lstm_ln_forward(const Dims& d, const T* x, const T* h0, const T* c0, const Weights<T>& w,
                     const LnParams<T>& ln, const SeqOptions& opt, T* y,
                     const LstmLnCache<T>& cache, T* gh) {
  using RowA = Eigen::Map<Eigen::Array<T, 1, Eigen::Dynamic>>;
  using CRowA = Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>>;
  const Index N = d.N, H = d.H, G = 4 * H, NH = N * H;
  const StateIndex si{d.T, opt.reverse};
  DenormalGuard ftz;  // this thread; every parallel region guards its own

  // Xh[t] = W_ih x_t for all t: [T*N, 4H], then each row normalized: Xh = LN(W_ih x)
  if (!input_projection(d, G, x, w.w_ih, static_cast<const T*>(nullptr),
                        static_cast<const T*>(nullptr), cache.Xh, w.packed_ih))
    return false;
  for (Index r = 0; r < d.T * N; ++r) cache.rstd[r * 3] = layer_norm_row(cache.Xh + r * G, G);

  // b = b_ih + b_hh: [4H]
  Eigen::Array<T, 1, Eigen::Dynamic> b = Eigen::Array<T, 1, Eigen::Dynamic>::Zero(G);
  if (w.b_ih) b += CRowA(w.b_ih, G);
  if (w.b_hh) b += CRowA(w.b_hh, G);
  const CRowA gx(ln.gx, G), ghn(ln.gh, G), gc(ln.gc, H), bc(ln.bc, H);

  T* S0 = cache.S + si.initial() * NH;
  T* C0 = cache.Cs + si.initial() * NH;
  if (h0) std::copy(h0, h0 + NH, S0); else std::fill(S0, S0 + NH, T(0));
  if (c0) std::copy(c0, c0 + NH, C0); else std::fill(C0, C0 + NH, T(0));
  Mat<T> hd(w.rd ? N : 0, H);  // h ⊙ rd, the recurrent product's input under recurrent dropout
  drop_rows(S0, w.rd, {0, N}, H, hd.data());

  // on every thread: its share s of each step and its columns of w_hh^T: [H, |s.cols|]
  const bool completed = run_time_loop<T>(d.T, N, H, G, w.packed_hh, [&](PackedB<T>& B, Index c0_, Index c1) {
    B.pack_transposed(w.w_hh, H, c0_, c1);
  }, [&](const StepShare& s, const PackedB<T>& Wk) {
    const Range rows = s.rows, cols = s.cols, mr = s.gemm_rows;
    for (Index k = 0; k < d.T; ++k) {
      s.poll();
      const Index t = si.time_of(k);
      const bool* m = opt.mask_at(t, N);
      const T* hp = cache.S + si.before(t) * NH;
      const T* cp = cache.Cs + si.before(t) * NH;
      T* hn = cache.S + si.after(t) * NH;
      T* cn = cache.Cs + si.after(t) * NH;

      // gh[mr, cols] = (h_{t-1} ⊙ rd)[mr] · w_hh[cols]^T               [|mr|, H] x [H, |cols|]
      Wk.multiply(mr.size(), (w.rd ? hd.data() : hp) + mr.begin * H, H, gh + mr.begin * G + cols.begin,
                  G, /*accumulate=*/false);
      s.sync();
      if (s.should_stop()) break;

      // one pass per row of this thread
      with_acts(opt.acts, [&](auto phi, auto sig) {
        using Phi = decltype(phi);
        using Sig = decltype(sig);
        for (Index n = rows.begin; n < rows.end; ++n) {
          const Index r = t * N + n;
          // Rh = LN(W_hh h_{t-1})
          T* rh = cache.Rh + r * G;
          std::copy(gh + n * G, gh + (n + 1) * G, rh);
          cache.rstd[r * 3 + 1] = layer_norm_row(rh, G);
          RowA g(cache.gates + r * G, G);
          // pre = γ_x ⊙ Xh + γ_h ⊙ Rh + b
          g = gx * CRowA(cache.Xh + r * G, G) + ghn * CRowA(rh, G) + b;
          // i, f = σ(·), g = φ(·), o = σ(·)
          g.head(2 * H) = Sig::f(g.head(2 * H));
          g.segment(2 * H, H) = Phi::f(g.segment(2 * H, H));
          g.tail(H) = Sig::f(g.tail(H));
          RowA c(cn + n * H, H);
          // c' = f ⊙ c_{t-1} + i ⊙ g
          c = g.segment(H, H) * CRowA(cp + n * H, H) + g.head(H) * g.segment(2 * H, H);
          // Ch = LN(c')
          T* ch = cache.Ch + r * H;
          std::copy(cn + n * H, cn + (n + 1) * H, ch);
          cache.rstd[r * 3 + 2] = layer_norm_row(ch, H);
          // h' = o ⊙ φ(γ_c ⊙ Ch + β_c)
          RowA(hn + n * H, H) = g.tail(H) * Phi::f(gc * CRowA(ch, H) + bc);
        }
      });
      // masked rows keep the previous state
      carry_masked_rows(m, rows, H, hp, hn);
      carry_masked_rows(m, rows, H, cp, cn);
      write_output(m, opt.zero_masked, rows, H, hn, y + t * NH);
      drop_rows(hn, w.rd, rows, H, hd.data());
      s.sync();
    }
  });
  return completed;
}

// LayerNorm LSTM backward.
//   x: [T, N, C]; cache from lstm_ln_forward; dy: [T, N, H]; dh_n, dc_n: [N, H] (null = zeros).
//   Workspaces dG: [T, N, 4H] (the pre-activations' gradient), dR: [T, N, 4H] (that of W_hh h).
//   Writes dx: [T, N, C] (null to skip), dh0, dc0: [N, H], dw_ih: [4H, C], dw_hh: [4H, H],
//   db: [4H] (b_ih's and b_hh's alike), dgx, dgh: [4H], dgc, dbc: [H].
//   Returns false when a pending interrupt stopped it early.
template <typename T>
bool lstm_ln_backward(const Dims& d, const T* x, const Weights<T>& w, const LnParams<T>& ln,
                      const SeqOptions& opt, const LstmLnCache<T>& cache, const T* dy,
                      const T* dh_n, const T* dc_n, T* dG, T* dR, T* dx, T* dh0, T* dc0, T* dw_ih,
                      T* dw_hh, T* db, T* dgx, T* dgh, T* dgc, T* dbc) {
  using RowA = Eigen::Map<Eigen::Array<T, 1, Eigen::Dynamic>>;
  using CRowA = Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>>;
  const Index N = d.N, H = d.H, G = 4 * H, NH = N * H;
  const StateIndex si{d.T, opt.reverse};
  DenormalGuard ftz;  // this thread; every parallel region guards its own
  const CRowA gx(ln.gx, G), ghn(ln.gh, G), gc(ln.gc, H), bc(ln.bc, H);

  Mat<T> dh_carry(N, H), dh(N, H), dc_a(N, H), dc_b(N, H);
  if (dh_n) dh_carry = CMatMap<T>(dh_n, N, H); else dh_carry.setZero();
  if (dc_n) dc_a = CMatMap<T>(dc_n, N, H); else dc_a.setZero();
  T* dc_final = dc_a.data();
  // per thread: its sums of dL/dγ_c and dL/dβ_c over its rows and steps, [2, H] each
  Mat<T> acc = Mat<T>::Zero(2 * max_threads(), H);
  // per thread: one row's scratch, [4H] (dL/d(LN c') and dL/dRh before the LN backward)
  Mat<T> scratch(max_threads(), G);

  const bool completed = run_time_loop<T>(d.T, N, G, H, nullptr, [&](PackedB<T>& B, Index c0_, Index c1) {
    B.pack_plain(w.w_hh, G, H, c0_, c1);
  }, [&](const StepShare& s, const PackedB<T>& Wk) {
    const Range rows = s.rows, cols = s.cols, mr = s.gemm_rows;
    T* dc_cur = dc_a.data();  // dc w.r.t. c_t (every thread swaps its own copies alike)
    T* dc_prev = dc_b.data();
    RowA acc_gc(acc.data() + 2 * s.tid * H, H), acc_bc(acc.data() + (2 * s.tid + 1) * H, H);
    RowA tmp(scratch.data() + s.tid * G, G);
    for (Index k = d.T - 1; k >= 0; --k) {
      s.poll();
      const Index t = si.time_of(k);
      const bool* m = opt.mask_at(t, N);
      const T* cp = cache.Cs + si.before(t) * NH;
      T* dGt = dG + t * N * G;
      T* dRt = dR + t * N * G;

      // dh = dh_carry + dy_t
      add_output_grad(m, opt.zero_masked, rows, H, dy + t * NH, dh_carry.data(), dh.data());
      record_dh_norms(opt.dh_norms, t, N, rows, H, dh.data());
      with_acts(opt.acts, [&](auto phi, auto sig) {
        using Phi = decltype(phi);
        using Sig = decltype(sig);
        for (Index n = rows.begin; n < rows.end; ++n) {
          if (m && !m[n]) {
            // a masked step: no gate gradient, dc_{t-1} = dc_t
            std::fill(dGt + n * G, dGt + (n + 1) * G, T(0));
            std::fill(dRt + n * G, dRt + (n + 1) * G, T(0));
            std::copy(dc_cur + n * H, dc_cur + (n + 1) * H, dc_prev + n * H);
            continue;
          }
          const Index r = t * N + n;
          const CRowA g(cache.gates + r * G, G), ch(cache.Ch + r * H, H), dhr(dh.data() + n * H, H);
          const auto i = g.head(H), f = g.segment(H, H), gg = g.segment(2 * H, H), o = g.tail(H);
          RowA dg(dGt + n * G, G);
          // φ(γ_c ⊙ Ch + β_c), kept in dg's o-slot for a moment
          dg.tail(H) = Phi::f(gc * ch + bc);
          // dL/d(LN c') = dh ⊙ o ⊙ φ'(·) ⊙ γ_c   (and the sums for dγ_c, dβ_c)
          auto dln = tmp.head(H);
          dln = dhr * o * Phi::df(dg.tail(H));
          acc_gc += dln * ch;
          acc_bc += dln;
          dln *= gc;
          // d(o pre) = dh ⊙ φ(γ_c Ch + β_c) ⊙ σ'(o)
          dg.tail(H) = dhr * dg.tail(H) * Sig::df(o);
          // dc = dc_carry + LN'(c')ᵀ dL/d(LN c')       (held in dc_prev's row until the end)
          RowA dc(dc_prev + n * H, H);
          layer_norm_row_backward(dln.data(), cache.Ch + r * H, cache.rstd[r * 3 + 2], H, dc.data());
          dc += CRowA(dc_cur + n * H, H);
          // d(i pre) = dc ⊙ g ⊙ σ'(i);  d(f pre) = dc ⊙ c_{t-1} ⊙ σ'(f);  d(g pre) = dc ⊙ i ⊙ φ'(g)
          dg.head(H) = dc * gg * Sig::df(i);
          dg.segment(H, H) = dc * CRowA(cp + n * H, H) * Sig::df(f);
          dg.segment(2 * H, H) = dc * i * Phi::df(gg);
          // dc_{t-1} = dc ⊙ f
          dc *= f;
          // dL/d(W_hh h) = LN'(W_hh h)ᵀ (γ_h ⊙ dG)
          tmp = ghn * dg;
          layer_norm_row_backward(tmp.data(), cache.Rh + r * G, cache.rstd[r * 3 + 1], G, dRt + n * G);
        }
      });
      std::swap(dc_cur, dc_prev);
      s.sync();
      if (s.should_stop()) break;

      // dh_{t-1}[mr, cols] = (dR_t[mr] · w_hh[:, cols]) ⊙ rd        [|mr|, 4H] x [4H, |cols|]
      Wk.multiply(mr.size(), dRt + mr.begin * G, G, dh_carry.data() + mr.begin * H + cols.begin, H,
                  /*accumulate=*/false);
      apply_dropout_grad(w.rd, mr, cols, H, dh_carry.data());
      // masked rows: dh_{t-1} = dh
      pass_masked_cols(m, mr, cols, H, dh.data(), dh_carry.data());
      s.sync();
    }
    if (s.tid == 0) dc_final = dc_cur;
  });
  if (!completed) return false;
  std::copy(dh_carry.data(), dh_carry.data() + NH, dh0);
  std::copy(dc_final, dc_final + NH, dc0);

  const Index rows = d.T * N;
  // dγ_c, dβ_c: the threads' sums
  RowA dgc_a(dgc, H), dbc_a(dbc, H);
  dgc_a.setZero();
  dbc_a.setZero();
  for (int k = 0; k < max_threads(); ++k) {
    dgc_a += acc.row(2 * k).array();
    dbc_a += acc.row(2 * k + 1).array();
  }
  // db = Σ dG;  dγ_x = Σ dG ⊙ Xh;  dγ_h = Σ dG ⊙ Rh     (over all T*N rows)
  RowA db_a(db, G), dgx_a(dgx, G), dgh_a(dgh, G);
  db_a.setZero();
  dgx_a.setZero();
  dgh_a.setZero();
  for (Index r = 0; r < rows; ++r) {
    const CRowA g(dG + r * G, G);
    db_a += g;
    dgx_a += g * CRowA(cache.Xh + r * G, G);
    dgh_a += g * CRowA(cache.Rh + r * G, G);
  }
  // dL/d(W_ih x) = LN'(W_ih x)ᵀ (γ_x ⊙ dG), in place in dG, row by row
  for (Index r = 0; r < rows; ++r) {
    RowA g(dG + r * G, G);
    g *= gx;
    layer_norm_row_backward(g.data(), cache.Xh + r * G, cache.rstd[r * 3], G, g.data());
  }
  // dx = dGx · w_ih;  dw_ih = dGx^T · x;  dw_hh = dR^T · hprev
  Mat<T> hp_drop(w.rd ? d.T * N : 0, H);
  const T* hprev = dropped_states(cache.S + si.hprev_block() * NH, w.rd, d.T, NH, hp_drop.data());
  return input_grad(d, G, dG, w.w_ih, dx) && weight_grad(rows, G, dG, G, x, d.C, dw_ih) &&
         weight_grad(rows, G, dR, G, hprev, H, dw_hh);
}

}  // namespace rnnkit
