// Layer-normalized GRU (haste's LayerNormGRU formulation), PyTorch's form and gate order r, z, n:
//
//   X = γ_x ⊙ LN(W_ih x) + b_ih        R = γ_h ⊙ LN(W_hh h_{t-1}) + b_hh        [3H] each
//   r = σ(X_r + R_r)      z = σ(X_z + R_z)      n = φ(X_n + r ⊙ R_n)
//   h' = (1 - z) ⊙ n + z ⊙ h
//
// LN normalizes a row of 3H (core.h layer_norm_row). The input products of all steps are one GEMM,
// normalized before the time loop; each step is the recurrent GEMM, then one pass per row that
// normalizes it and applies the gates. Backward: a reverse loop for the row passes and the dh
// recurrence, then dx, the weight gradients, the biases' and the gains' gradients from
// whole-sequence products and column sums.
#pragma once

#include <type_traits>
#include <vector>

#include "core.h"
#include "gemm.h"
#include "lstm_ln.h"  // LnParams

namespace rnnkit {

// What the LayerNorm GRU's backward needs from its forward, all owned by the caller.
//   S: [T+1, N, H] states (StateIndex layout); gates: [T, N, 3H] activated r, z, n;
//   Xh: [T, N, 3H] LN(W_ih x) and Rh: [T, N, 3H] LN(W_hh h_{t-1}), before their gains;
//   rstd: [T, N, 2] the two 1/σ of each row (x, h).
template <typename T>
struct GruLnCache {
  T* S = nullptr;
  T* gates = nullptr;
  T* Xh = nullptr;
  T* Rh = nullptr;
  T* rstd = nullptr;
};

// LayerNorm GRU forward.
//   x: [T, N, C]; h0: [N, H] (null = zeros); w_ih: [3H, C], w_hh: [3H, H], b_ih, b_hh: [3H]
//   (null = none); ln.gx, ln.gh: [3H]; rd: [N, H] (null = none); opt.mask: [T, N].
//   Workspace gh: [N, 3H]. Writes y: [T, N, H] and the cache.
//   Returns false when a pending interrupt stopped it early (outputs incomplete).
template <typename T>
bool gru_ln_forward(const Dims& d, const T* x, const T* h0, const Weights<T>& w,
                    const LnParams<T>& ln, const SeqOptions& opt, T* y, const GruLnCache<T>& cache,
                    T* gh) {
  using RowA = Eigen::Map<Eigen::Array<T, 1, Eigen::Dynamic>>;
  using CRowA = Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>>;
  const Index N = d.N, H = d.H, G = 3 * H, NH = N * H;
  const StateIndex si{d.T, opt.reverse};
  DenormalGuard ftz;  // this thread; every parallel region guards its own

  // Xh[t] = W_ih x_t for all t: [T*N, 3H], then each row normalized: Xh = LN(W_ih x)
  if (!input_projection(d, G, x, w.w_ih, static_cast<const T*>(nullptr),
                        static_cast<const T*>(nullptr), cache.Xh, w.packed_ih))
    return false;
  for (Index r = 0; r < d.T * N; ++r) cache.rstd[r * 2] = layer_norm_row(cache.Xh + r * G, G);

  const Eigen::Array<T, 1, Eigen::Dynamic> bx =
      w.b_ih ? Eigen::Array<T, 1, Eigen::Dynamic>(CRowA(w.b_ih, G))
             : Eigen::Array<T, 1, Eigen::Dynamic>::Zero(G);
  const Eigen::Array<T, 1, Eigen::Dynamic> bh =
      w.b_hh ? Eigen::Array<T, 1, Eigen::Dynamic>(CRowA(w.b_hh, G))
             : Eigen::Array<T, 1, Eigen::Dynamic>::Zero(G);
  const CRowA gx(ln.gx, G), ghn(ln.gh, G);

  T* S0 = cache.S + si.initial() * NH;
  if (h0) std::copy(h0, h0 + NH, S0); else std::fill(S0, S0 + NH, T(0));
  Mat<T> hd(w.rd ? N : 0, H);  // h ⊙ rd, the recurrent product's input under recurrent dropout
  drop_rows(S0, w.rd, {0, N}, H, hd.data());

  // on every thread: its share s of each step and its columns of w_hh^T: [H, |s.cols|]
  const bool completed = run_time_loop<T>(d.T, N, H, G, w.packed_hh, [&](PackedB<T>& B, Index c0, Index c1) {
    B.pack_transposed(w.w_hh, H, c0, c1);
  }, [&](const StepShare& s, const PackedB<T>& Wk) {
    const Range rows = s.rows, cols = s.cols, mr = s.gemm_rows;
    // per thread: R of one row, [3H]
    Eigen::Array<T, 1, Eigen::Dynamic> R(G);
    for (Index k = 0; k < d.T; ++k) {
      s.poll();
      const Index t = si.time_of(k);
      const bool* m = opt.mask_at(t, N);
      const T* hp = cache.S + si.before(t) * NH;
      T* hn = cache.S + si.after(t) * NH;

      // gh[mr, cols] = (h_{t-1} ⊙ rd)[mr] · w_hh[cols]^T               [|mr|, H] x [H, |cols|]
      Wk.multiply(mr.size(), (w.rd ? hd.data() : hp) + mr.begin * H, H, gh + mr.begin * G + cols.begin,
                  G, /*accumulate=*/false);
      s.sync();
      if (s.should_stop()) break;

      with_acts(opt.acts, [&](auto phi, auto sig) {
        using Phi = decltype(phi);
        using Sig = decltype(sig);
        for (Index n = rows.begin; n < rows.end; ++n) {
          const Index r = t * N + n;
          // Rh = LN(W_hh h_{t-1});  R = γ_h ⊙ Rh + b_hh
          T* rh = cache.Rh + r * G;
          std::copy(gh + n * G, gh + (n + 1) * G, rh);
          cache.rstd[r * 2 + 1] = layer_norm_row(rh, G);
          R = ghn * CRowA(rh, G) + bh;
          RowA g(cache.gates + r * G, G);
          // X = γ_x ⊙ Xh + b_ih
          g = gx * CRowA(cache.Xh + r * G, G) + bx;
          // r, z = σ(X + R)
          g.head(2 * H) = Sig::f(g.head(2 * H) + R.head(2 * H));
          // n = φ(X_n + r ⊙ R_n)
          g.tail(H) = Phi::f(g.tail(H) + g.head(H) * R.tail(H));
          // h' = n + z ⊙ (h_{t-1} - n)
          RowA(hn + n * H, H) = g.tail(H) + g.segment(H, H) * (CRowA(hp + n * H, H) - g.tail(H));
        }
      });
      carry_masked_rows(m, rows, H, hp, hn);
      write_output(m, opt.zero_masked, rows, H, hn, y + t * NH);
      drop_rows(hn, w.rd, rows, H, hd.data());
      s.sync();
    }
  });
  return completed;
}

// LayerNorm GRU backward.
//   x: [T, N, C]; cache from gru_ln_forward; dy: [T, N, H]; dh_n: [N, H] (null = zeros).
//   Workspaces dGx, dGh, dR: [T, N, 3H] (the gradients of X, of R and of W_hh h).
//   Writes dx: [T, N, C] (null to skip), dh0: [N, H], dw_ih: [3H, C], dw_hh: [3H, H],
//   db_ih, db_hh, dgx, dgh: [3H]. Returns false when a pending interrupt stopped it early.
template <typename T>
bool gru_ln_backward(const Dims& d, const T* x, const Weights<T>& w, const LnParams<T>& ln,
                     const SeqOptions& opt, const GruLnCache<T>& cache, const T* dy,
                     const T* dh_n, T* dGx, T* dGh, T* dR, T* dx, T* dh0, T* dw_ih, T* dw_hh,
                     T* db_ih, T* db_hh, T* dgx, T* dgh) {
  using RowA = Eigen::Map<Eigen::Array<T, 1, Eigen::Dynamic>>;
  using CRowA = Eigen::Map<const Eigen::Array<T, 1, Eigen::Dynamic>>;
  const Index N = d.N, H = d.H, G = 3 * H, NH = N * H;
  const StateIndex si{d.T, opt.reverse};
  DenormalGuard ftz;  // this thread; every parallel region guards its own
  const CRowA gx(ln.gx, G), ghn(ln.gh, G);
  const Eigen::Array<T, 1, Eigen::Dynamic> bhn =
      w.b_hh ? Eigen::Array<T, 1, Eigen::Dynamic>(CRowA(w.b_hh + 2 * H, H))
             : Eigen::Array<T, 1, Eigen::Dynamic>::Zero(H);

  Mat<T> dh_carry(N, H), dh(N, H);
  if (dh_n) dh_carry = CMatMap<T>(dh_n, N, H); else dh_carry.setZero();

  const bool completed = run_time_loop<T>(d.T, N, G, H, nullptr, [&](PackedB<T>& B, Index c0, Index c1) {
    B.pack_plain(w.w_hh, G, H, c0, c1);
  }, [&](const StepShare& s, const PackedB<T>& Wk) {
    const Range rows = s.rows, cols = s.cols, mr = s.gemm_rows;
    Eigen::Array<T, 1, Eigen::Dynamic> tmp(G);  // per thread: γ_h ⊙ dR̂ of one row
    for (Index k = d.T - 1; k >= 0; --k) {
      s.poll();
      const Index t = si.time_of(k);
      const bool* m = opt.mask_at(t, N);
      const T* hp = cache.S + si.before(t) * NH;
      T* dGxt = dGx + t * N * G;
      T* dGht = dGh + t * N * G;
      T* dRt = dR + t * N * G;

      // dh = dh_carry + dy_t
      add_output_grad(m, opt.zero_masked, rows, H, dy + t * NH, dh_carry.data(), dh.data());
      record_dh_norms(opt.dh_norms, t, N, rows, H, dh.data());
      with_acts(opt.acts, [&](auto phi, auto sig) {
        using Phi = decltype(phi);
        using Sig = decltype(sig);
        for (Index n = rows.begin; n < rows.end; ++n) {
          if (m && !m[n]) {
            // a masked step: no gradient into the gates or the products
            std::fill(dGxt + n * G, dGxt + (n + 1) * G, T(0));
            std::fill(dGht + n * G, dGht + (n + 1) * G, T(0));
            std::fill(dRt + n * G, dRt + (n + 1) * G, T(0));
            continue;
          }
          const Index r = t * N + n;
          const CRowA g(cache.gates + r * G, G), dhr(dh.data() + n * H, H);
          const auto rr = g.head(H), z = g.segment(H, H), nn = g.tail(H);
          RowA dgx_r(dGxt + n * G, G), dgh_r(dGht + n * G, G);
          // d(n pre) = dh ⊙ (1 - z) ⊙ φ'(n)
          dgx_r.tail(H) = dhr * (T(1) - z) * Phi::df(nn);
          // d(z pre) = dh ⊙ (h_{t-1} - n) ⊙ σ'(z)
          dgx_r.segment(H, H) = dhr * (CRowA(hp + n * H, H) - nn) * Sig::df(z);
          // d(r pre) = d(n pre) ⊙ R_n ⊙ σ'(r),  R_n = γ_h,n ⊙ Rh_n + b_hn
          dgx_r.head(H) = dgx_r.tail(H) * (ghn.tail(H) * CRowA(cache.Rh + r * G + 2 * H, H) + bhn) *
                          Sig::df(rr);
          // dR: r and z as dX, n scaled by r
          dgh_r.head(2 * H) = dgx_r.head(2 * H);
          dgh_r.tail(H) = dgx_r.tail(H) * rr;
          // dL/d(W_hh h) = LN'(W_hh h)ᵀ (γ_h ⊙ dR)
          tmp = ghn * dgh_r;
          layer_norm_row_backward(tmp.data(), cache.Rh + r * G, cache.rstd[r * 2 + 1], G, dRt + n * G);
        }
      });
      s.sync();
      if (s.should_stop()) break;

      if (cols.size() && mr.size()) {
        // dh_{t-1}[mr, cols] = (dR_t[mr] · w_hh[:, cols]) ⊙ rd + dh ⊙ z    [|mr|, 3H] x [3H, |cols|]
        Wk.multiply(mr.size(), dRt + mr.begin * G, G, dh_carry.data() + mr.begin * H + cols.begin, H,
                    /*accumulate=*/false);
        apply_dropout_grad(w.rd, mr, cols, H, dh_carry.data());
        dh_carry.block(mr.begin, cols.begin, mr.size(), cols.size()).array() +=
            dh.block(mr.begin, cols.begin, mr.size(), cols.size()).array() *
            CMatMap<T>(cache.gates + t * N * G, N, G)
                .block(mr.begin, H + cols.begin, mr.size(), cols.size())
                .array();
      }
      // masked rows: dh_{t-1} = dh
      pass_masked_cols(m, mr, cols, H, dh.data(), dh_carry.data());
      s.sync();
    }
  });
  if (!completed) return false;
  std::copy(dh_carry.data(), dh_carry.data() + NH, dh0);

  const Index rows = d.T * N;
  // db_ih = Σ dGx;  db_hh = Σ dGh;  dγ_x = Σ dGx ⊙ Xh;  dγ_h = Σ dGh ⊙ Rh     (all T*N rows)
  RowA dbi(db_ih, G), dbh(db_hh, G), dgx_a(dgx, G), dgh_a(dgh, G);
  dbi.setZero();
  dbh.setZero();
  dgx_a.setZero();
  dgh_a.setZero();
  for (Index r = 0; r < rows; ++r) {
    const CRowA gxr(dGx + r * G, G), ghr(dGh + r * G, G);
    dbi += gxr;
    dbh += ghr;
    dgx_a += gxr * CRowA(cache.Xh + r * G, G);
    dgh_a += ghr * CRowA(cache.Rh + r * G, G);
  }
  // dL/d(W_ih x) = LN'(W_ih x)ᵀ (γ_x ⊙ dGx), in place, row by row
  for (Index r = 0; r < rows; ++r) {
    RowA g(dGx + r * G, G);
    g *= gx;
    layer_norm_row_backward(g.data(), cache.Xh + r * G, cache.rstd[r * 2], G, g.data());
  }
  // dx = dGx · w_ih;  dw_ih = dGx^T · x;  dw_hh = dR^T · hprev
  Mat<T> hp_drop(w.rd ? d.T * N : 0, H);
  const T* hprev = dropped_states(cache.S + si.hprev_block() * NH, w.rd, d.T, NH, hp_drop.data());
  return input_grad(d, G, dGx, w.w_ih, dx) && weight_grad(rows, G, dGx, G, x, d.C, dw_ih) &&
         weight_grad(rows, G, dR, G, hprev, H, dw_hh);
}

}  // namespace rnnkit
