// GRU forward and backward over a whole sequence, in PyTorch's form (gate order r, z, n; the reset
// gate multiplies the recurrent product plus its bias — Keras's reset_after=True):
//
//   r = σ(W_ir x + b_ir + W_hr h + b_hr)      z = σ(W_iz x + b_iz + W_hz h + b_hz)
//   n = φ(W_in x + b_in + r ⊙ (W_hn h + b_hn))
//   h' = (1 - z) ⊙ n + z ⊙ h
//
// With zoneout (w.zh, Krueger et al. 2016) the state moves only part of the way:
//   h_t = h' + z_h ⊙ (h_{t-1} - h')          (both GRU forms)
//
// σ is the recurrent activation (opt.acts.rec: sigmoid or Keras's hard_sigmoid), φ the activation
// (opt.acts.act: tanh, relu or linear); PyTorch's GRU is σ = sigmoid, φ = tanh.
#pragma once

#include <type_traits>

#include "core.h"
#include "gemm.h"

namespace rnnkit {

// The fused gate pass of one row, float on SIMD packets.
//   g: [3H] input parts in (x·w_ih^T + b_ih), activated r, z, n out (kept for backward);
//   gh: [3H] recurrent parts (h·w_hh^T + b_hh);  hp: [H] h_{t-1}.
//   Out: hn: [H] W_hn h + b_hn (kept for backward), h: [H] h_t.  Phi, Sig: φ, σ (see acts).
template <typename Phi, typename Sig>
inline void gru_row_forward(float* g, const float* gh, const float* hp, float* hn, float* h,
                            Index H) {
  using namespace simd;
  for_packets(H, [&](Index j, auto L) {
    // r, z = σ(x-part + h-part)
    const Packet r = Sig::f(add(L.load(g + j), L.load(gh + j)));
    const Packet z = Sig::f(add(L.load(g + H + j), L.load(gh + H + j)));
    const Packet hnv = L.load(gh + 2 * H + j);
    // n = φ(x-part + r ⊙ (W_hn h + b_hn))
    const Packet n = Phi::f(madd(r, hnv, L.load(g + 2 * H + j)));
    L.store(g + j, r);
    L.store(g + H + j, z);
    L.store(g + 2 * H + j, n);
    L.store(hn + j, hnv);
    // h_t = n + z ⊙ (h_{t-1} - n)
    L.store(h + j, madd(z, sub(L.load(hp + j), n), n));
  });
}

// The backward gate pass of one row, float on SIMD packets.
//   g: [3H] activated r, z, n;  hp: [H] h_{t-1};  hn: [H] W_hn h + b_hn;  dh: [H] dL/dh_t.
//   Out: dgx: [3H] gradients of the input pre-activations, dgh: [3H] of the recurrent ones.
template <typename Phi, typename Sig>
inline void gru_row_backward(const float* g, const float* hp, const float* hn, const float* dh,
                             float* dgx, float* dgh, Index H) {
  using namespace simd;
  for_packets(H, [&](Index j, auto L) {
    const Packet r = L.load(g + j), z = L.load(g + H + j), n = L.load(g + 2 * H + j);
    const Packet d_h = L.load(dh + j);
    // d(n pre) = dh ⊙ (1 - z) ⊙ φ'(n)
    const Packet dn = mul(mul(d_h, sub(set1(1.f), z)), Phi::df(n));
    // d(z pre) = dh ⊙ (h_{t-1} - n) ⊙ σ'(z)
    const Packet dz = mul(mul(d_h, sub(L.load(hp + j), n)), Sig::df(z));
    // d(r pre) = d(n pre) ⊙ (W_hn h + b_hn) ⊙ σ'(r)
    const Packet dr = mul(mul(dn, L.load(hn + j)), Sig::df(r));
    L.store(dgx + j, dr);
    L.store(dgx + H + j, dz);
    L.store(dgx + 2 * H + j, dn);
    // recurrent side: r and z alike, n scaled by r
    L.store(dgh + j, dr);
    L.store(dgh + H + j, dz);
    L.store(dgh + 2 * H + j, mul(dn, r));
  });
}

// What GRU backward needs from forward, all owned by the caller.
//   S: [T+1, N, H] states (StateIndex layout); gates: [T, N, 3H] activated r, z, n;
//   hn: [T, N, H] the recurrent part of the candidate, W_hn h_{t-1} + b_hn.
template <typename T>
struct GruCache {
  T* S = nullptr;
  T* gates = nullptr;
  T* hn = nullptr;
};

// GRU forward.
//   x: [T, N, C]; h0: [N, H] (null = zeros); w_ih: [3H, C], w_hh: [3H, H], b_ih, b_hh: [3H]
//   (null = none); opt.mask: [T, N]. Workspace gh: [N, 3H]. Writes y: [T, N, H] and the cache.
//   Returns false when a pending interrupt stopped the time loop early (outputs incomplete).
template <typename T>
bool gru_forward(const Dims& d, const T* x, const T* h0, const Weights<T>& w, const SeqOptions& opt,
                 T* y, const GruCache<T>& cache, T* gh) {
  const Index N = d.N, H = d.H, G = 3 * H, NH = N * H;
  const StateIndex si{d.T, opt.reverse};
  DenormalGuard ftz;  // this thread; every parallel region guards its own
  Mat<T> hd(w.rd ? N : 0, H);  // h_{t-1} ⊙ rd (recurrent dropout only)

  // gates[t] = x_t · w_ih^T + b_ih  for all t: [T*N, 3H]   (b_hh is applied per step, inside r ⊙ ·)
  if (!input_projection(d, G, x, w.w_ih, w.b_ih, static_cast<const T*>(nullptr), cache.gates,
                   w.packed_ih))
    return false;

  T* S0 = cache.S + si.initial() * NH;
  if (h0) std::copy(h0, h0 + NH, S0); else std::fill(S0, S0 + NH, T(0));

  // hd = h ⊙ rd, the recurrent product's input under recurrent dropout
  drop_rows(S0, w.rd, {0, N}, H, hd.data());

  MatMap<T> Gh(gh, N, G);
  // on every thread: its share s of each step and its columns of w_hh^T: [H, |s.cols|], packed
  // once for the whole sequence
  const bool completed = run_time_loop<T>(d.T, N, H, G, w.packed_hh, [&](PackedB<T>& B, Index c0, Index c1) {
    B.pack_transposed(w.w_hh, H, c0, c1);
  }, [&](const StepShare& s, const PackedB<T>& Wk) {
    const Range rows = s.rows, cols = s.cols, mr = s.gemm_rows;
    for (Index k = 0; k < d.T; ++k) {
      s.poll();
      const Index t = si.time_of(k);
      const bool* m = opt.mask_at(t, N);
      MatMap<T> Gt(cache.gates + t * N * G, N, G);
      const T* hp = cache.S + si.before(t) * NH;
      T* hnext = cache.S + si.after(t) * NH;
      T* hn_t = cache.hn + t * NH;

      // Gh[mr, cols] = (h_{t-1} ⊙ rd)[mr] · w_hh[cols]^T + b_hh[cols]      [|mr|, H] x [H, |cols|]
      Wk.multiply(mr.size(), (w.rd ? hd.data() : hp) + mr.begin * H, H,
                  gh + mr.begin * G + cols.begin, G, /*accumulate=*/false);
      if (w.b_hh && cols.size() && mr.size())
        Gh.block(mr.begin, cols.begin, mr.size(), cols.size()).rowwise() +=
            CRowVecMap<T>(w.b_hh + cols.begin, cols.size());
      s.sync();
      if (s.should_stop()) break;

      // the fused gate pass of this thread's rows, for the cell's activation pair (φ, σ)
      with_acts(opt.acts, [&](auto phi, auto sig) {
        using Phi = decltype(phi);
        using Sig = decltype(sig);
        if constexpr (std::is_same_v<T, float>) {
          for (Index n = rows.begin; n < rows.end; ++n)
            gru_row_forward<Phi, Sig>(Gt.data() + n * G, gh + n * G, hp + n * H, hn_t + n * H,
                                      hnext + n * H, H);
        } else if (rows.size()) {
          const Index r0 = rows.begin, rr = rows.size();
          auto Gb = Gt.middleRows(r0, rr);
          auto Ghb = Gh.middleRows(r0, rr);
          // r, z = σ(x-part + h-part)
          Gb.leftCols(2 * H).array() = Sig::f(Gb.leftCols(2 * H).array() + Ghb.leftCols(2 * H).array());
          auto r = Gb.leftCols(H).array();
          auto z = Gb.middleCols(H, H).array();
          auto n = Gb.rightCols(H).array();
          MatMap<T> hn_b(hn_t + r0 * H, rr, H);
          // keep W_hn h + b_hn for backward
          hn_b = Ghb.rightCols(H);
          // n = φ(x-part + r ⊙ (W_hn h + b_hn))
          n = Phi::f(n + r * hn_b.array());
          // h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}  =  n + z ⊙ (h_{t-1} - n)
          MatMap<T>(hnext + r0 * H, rr, H).array() =
              n + z * (CMatMap<T>(hp + r0 * H, rr, H).array() - n);
        }
      });
      // zoneout: h_t = h' + z_h ⊙ (h_{t-1} - h')
      if (w.zh.on()) zoneout_rows(w.zh.at(t, NH), w.zh.p, rows, H, hp, hnext);
      carry_masked_rows(m, rows, H, hp, hnext);
      write_output(m, opt.zero_masked, rows, H, hnext, y + t * NH);
      drop_rows(hnext, w.rd, rows, H, hd.data());
      s.sync();
    }
  });
  return completed;
}

// GRU backward.
//   x: [T, N, C]; cache from gru_forward; dy: [T, N, H]; dh_n: [N, H] (null = zeros).
//   Workspaces dGx, dGh: [T, N, 3H] (gradients of the input and recurrent pre-activations).
//   Writes dx: [T, N, C], dh0: [N, H], dw_ih: [3H, C], dw_hh: [3H, H], db_ih, db_hh: [3H]
//   (null to skip).
//   Returns false when a pending interrupt stopped the time loop early (outputs incomplete).
template <typename T>
bool gru_backward(const Dims& d, const T* x, const Weights<T>& w, const SeqOptions& opt,
                  const GruCache<T>& cache, const T* dy, const T* dh_n, T* dGx, T* dGh, T* dx,
                  T* dh0, T* dw_ih, T* dw_hh, T* db_ih, T* db_hh) {
  const Index N = d.N, H = d.H, G = 3 * H, NH = N * H;
  const StateIndex si{d.T, opt.reverse};
  DenormalGuard ftz;  // this thread; every parallel region guards its own

  Mat<T> dh_carry(N, H), dh(N, H);
  Mat<T> dhz(w.zh.on() ? N : 0, H);  // zoneout: the gradient reaching h', dh ⊙ (1 - z_h)
  if (dh_n) dh_carry = CMatMap<T>(dh_n, N, H); else dh_carry.setZero();

  // on every thread: its share s of each step and its columns of w_hh: [3H, |s.cols|], packed
  // once for the whole sequence
  const bool completed = run_time_loop<T>(d.T, N, G, H, nullptr, [&](PackedB<T>& B, Index c0, Index c1) {
    B.pack_plain(w.w_hh, G, H, c0, c1);
  }, [&](const StepShare& s, const PackedB<T>& Wk) {
    const Range rows = s.rows, cols = s.cols, mr = s.gemm_rows;
    for (Index k = d.T - 1; k >= 0; --k) {
      s.poll();
      const Index t = si.time_of(k);
      const bool* m = opt.mask_at(t, N);
      const T* Gt = cache.gates + t * N * G;
      const T* hp = cache.S + si.before(t) * NH;
      const T* hn_t = cache.hn + t * NH;
      T* dGxt = dGx + t * N * G;
      T* dGht = dGh + t * N * G;

      // dh = dh_carry + dy_t
      add_output_grad(m, opt.zero_masked, rows, H, dy + t * NH, dh_carry.data(), dh.data());
      record_dh_norms(opt.dh_norms, t, N, rows, H, dh.data());
      // the gradient reaching h': dh, or dh ⊙ (1 - z_h) under zoneout
      const T* dnew = dh.data();
      if (w.zh.on()) {
        zoneout_grad_new(w.zh.at(t, NH), w.zh.p, rows, H, dh.data(), dhz.data());
        dnew = dhz.data();
      }
      // the fused backward pass of this thread's rows, for the cell's activation pair (φ, σ)
      with_acts(opt.acts, [&](auto phi, auto sig) {
        using Phi = decltype(phi);
        using Sig = decltype(sig);
        if constexpr (std::is_same_v<T, float>) {
          for (Index n = rows.begin; n < rows.end; ++n)
            gru_row_backward<Phi, Sig>(Gt + n * G, hp + n * H, hn_t + n * H, dnew + n * H,
                                       dGxt + n * G, dGht + n * G, H);
        } else if (rows.size()) {
          const Index r0 = rows.begin, rr = rows.size();
          CMatMap<T> Gb(Gt + r0 * G, rr, G);
          MatMap<T> dGxb(dGxt + r0 * G, rr, G), dGhb(dGht + r0 * G, rr, G);
          auto r = Gb.leftCols(H).array();
          auto z = Gb.middleCols(H, H).array();
          auto n = Gb.rightCols(H).array();
          auto hp_b = CMatMap<T>(hp + r0 * H, rr, H).array();
          auto dh_b = CMatMap<T>(dnew + r0 * H, rr, H).array();
          auto dr = dGxb.leftCols(H).array();
          auto dz = dGxb.middleCols(H, H).array();
          auto dn = dGxb.rightCols(H).array();
          // d(n pre) = dh ⊙ (1 - z) ⊙ φ'(n)          (the input part of the candidate)
          dn = dh_b * (T(1) - z) * Phi::df(n);
          // d(z pre) = dh ⊙ (h_{t-1} - n) ⊙ σ'(z)
          dz = dh_b * (hp_b - n) * Sig::df(z);
          // d(r pre) = d(n pre) ⊙ (W_hn h + b_hn) ⊙ σ'(r)
          dr = dn * CMatMap<T>(hn_t + r0 * H, rr, H).array() * Sig::df(r);
          // recurrent pre-activation gradients: r and z as above, n scaled by r
          dGhb.leftCols(2 * H) = dGxb.leftCols(2 * H);
          dGhb.rightCols(H).array() = dn * r;
        }
      });
      zero_masked_rows(m, rows, G, dGxt);
      zero_masked_rows(m, rows, G, dGht);
      s.sync();
      if (s.should_stop()) break;

      if (cols.size() && mr.size()) {
        auto dk = dh_carry.block(mr.begin, cols.begin, mr.size(), cols.size());
        // dh_{t-1}[mr, cols] = (dGh_t[mr] · w_hh[:, cols]) ⊙ rd + dh ⊙ z    [|mr|, 3H] x [3H, |cols|]
        Wk.multiply(mr.size(), dGht + mr.begin * G, G, dh_carry.data() + mr.begin * H + cols.begin,
                    H, /*accumulate=*/false);
        apply_dropout_grad(w.rd, mr, cols, H, dh_carry.data());
        dk.array() +=
            CMatMap<T>(dnew, N, H).block(mr.begin, cols.begin, mr.size(), cols.size()).array() *
            CMatMap<T>(Gt, N, G).block(mr.begin, H + cols.begin, mr.size(), cols.size()).array();
      }
      // dh_{t-1} += dh ⊙ z_h (zoneout keeps that much of h_{t-1})
      if (w.zh.on()) zoneout_grad_prev(w.zh.at(t, NH), w.zh.p, mr, cols, H, dh.data(), dh_carry.data());
      // masked rows: dh_{t-1} = dh
      pass_masked_cols(m, mr, cols, H, dh.data(), dh_carry.data());
      s.sync();
    }
  });
  if (!completed) return false;
  std::copy(dh_carry.data(), dh_carry.data() + NH, dh0);

  Mat<T> hp_drop(w.rd ? d.T * N : 0, H);
  const T* hprev = dropped_states(cache.S + si.hprev_block() * NH, w.rd, d.T, NH, hp_drop.data());
  return weight_gradients(d, G, dGx, dGh, x, hprev, w.w_ih, dx, dw_ih, dw_hh, db_ih, db_hh);
}


// ---------------------------------------------------------------------------------------------
// GRU with the reset gate *before* the recurrent product (Keras reset_after=False, the original
// form of Cho et al. and the Keras 2 / TF1 default; no recurrent bias):
//
//   h̃ = h ⊙ rd                                 (recurrent dropout; h̃ = h without it)
//   r = σ(W_ir x + b_ir + W_hr h̃)              z = σ(W_iz x + b_iz + W_hz h̃)
//   n = φ(W_in x + b_in + W_hn (r ⊙ h̃))
//   h' = (1 - z) ⊙ n + z ⊙ h
//
// Two recurrent products per step, each followed by a gate pass: [N, H] x [H, 2H] for r and z,
// then [N, H] x [H, H] for n (its input r ⊙ h̃ needs r first).
// ---------------------------------------------------------------------------------------------

// Forward gate pass 1 of one row, float on SIMD packets.
//   g: [3H] input parts in; r, z activated out (the n part untouched);  ghrz: [2H] W_rz h̃;
//   hd: [H] h̃.  Out: rh: [H] r ⊙ h̃ (the n product's input, kept for backward).
template <typename Sig>
inline void gru_v1_row_rz(float* g, const float* ghrz, const float* hd, float* rh, Index H) {
  using namespace simd;
  for_packets(H, [&](Index j, auto L) {
    // r, z = σ(x-part + h-part)
    const Packet r = Sig::f(add(L.load(g + j), L.load(ghrz + j)));
    const Packet z = Sig::f(add(L.load(g + H + j), L.load(ghrz + H + j)));
    L.store(g + j, r);
    L.store(g + H + j, z);
    // r ⊙ h̃
    L.store(rh + j, mul(r, L.load(hd + j)));
  });
}

// Forward gate pass 2 of one row, float on SIMD packets.
//   g: [3H] r, z activated, the n input part in and n activated out;  ghn: [H] W_hn (r ⊙ h̃);
//   hp: [H] h_{t-1}.  Out: h: [H] h_t.
template <typename Phi>
inline void gru_v1_row_n(float* g, const float* ghn, const float* hp, float* h, Index H) {
  using namespace simd;
  for_packets(H, [&](Index j, auto L) {
    // n = φ(x-part + W_hn (r ⊙ h̃))
    const Packet n = Phi::f(add(L.load(g + 2 * H + j), L.load(ghn + j)));
    L.store(g + 2 * H + j, n);
    // h_t = n + z ⊙ (h_{t-1} - n)
    L.store(h + j, madd(L.load(g + H + j), sub(L.load(hp + j), n), n));
  });
}

// Backward gate pass 1 of one row, float on SIMD packets.
//   g: [3H] activated r, z, n;  hp: [H] h_{t-1};  dh: [H] dL/dh_t.
//   Out: dg: [3H] the z and n slots: d(z pre), d(n pre) (the r slot is pass 2's).
template <typename Phi, typename Sig>
inline void gru_v1_row_back_zn(const float* g, const float* hp, const float* dh, float* dg, Index H) {
  using namespace simd;
  for_packets(H, [&](Index j, auto L) {
    const Packet z = L.load(g + H + j), n = L.load(g + 2 * H + j), d_h = L.load(dh + j);
    // d(z pre) = dh ⊙ (h_{t-1} - n) ⊙ σ'(z)
    L.store(dg + H + j, mul(mul(d_h, sub(L.load(hp + j), n)), Sig::df(z)));
    // d(n pre) = dh ⊙ (1 - z) ⊙ φ'(n)
    L.store(dg + 2 * H + j, mul(mul(d_h, sub(set1(1.f), z)), Phi::df(n)));
  });
}

// Backward gate pass 2 of one row, float on SIMD packets.
//   g: [3H] activated r, z, n;  hd: [H] h̃;  drh: [H] dL/d(r ⊙ h̃) = d(n pre) · W_hn.
//   Out: dg: [3H] the r slot d(r pre);  dhd: [H] the part of dL/dh̃ through r ⊙ h̃: drh ⊙ r.
template <typename Sig>
inline void gru_v1_row_back_r(const float* g, const float* hd, const float* drh, float* dg,
                              float* dhd, Index H) {
  using namespace simd;
  for_packets(H, [&](Index j, auto L) {
    const Packet r = L.load(g + j), d_rh = L.load(drh + j);
    // d(r pre) = drh ⊙ h̃ ⊙ σ'(r)
    L.store(dg + j, mul(mul(d_rh, L.load(hd + j)), Sig::df(r)));
    // dL/dh̃ (through r ⊙ h̃) = drh ⊙ r
    L.store(dhd + j, mul(d_rh, r));
  });
}

// What the v1 GRU's backward needs from its forward, all owned by the caller.
//   S: [T+1, N, H] states (StateIndex layout); gates: [T, N, 3H] activated r, z, n;
//   rh: [T, N, H] r ⊙ h̃_{t-1}, the input of the n product.
template <typename T>
struct GruV1Cache {
  T* S = nullptr;
  T* gates = nullptr;
  T* rh = nullptr;
};

// v1 GRU forward.
//   x: [T, N, C]; h0: [N, H] (null = zeros); w_ih: [3H, C], w_hh: [3H, H], b_ih: [3H] (null =
//   none; w.b_hh must be null); opt.mask: [T, N]. Workspace gh: [N, 3H]. Writes y: [T, N, H] and
//   the cache. Returns false when a pending interrupt stopped the time loop early.
template <typename T>
bool gru_v1_forward(const Dims& d, const T* x, const T* h0, const Weights<T>& w,
                    const SeqOptions& opt, T* y, const GruV1Cache<T>& cache, T* gh) {
  const Index N = d.N, H = d.H, G = 3 * H, NH = N * H;
  const StateIndex si{d.T, opt.reverse};
  DenormalGuard ftz;  // this thread; every parallel region guards its own
  Mat<T> hd(w.rd ? N : 0, H);  // h̃ = h_{t-1} ⊙ rd (recurrent dropout only)

  // gates[t] = x_t · w_ih^T + b_ih  for all t: [T*N, 3H]
  if (!input_projection(d, G, x, w.w_ih, w.b_ih, static_cast<const T*>(nullptr), cache.gates,
                        w.packed_ih))
    return false;

  T* S0 = cache.S + si.initial() * NH;
  if (h0) std::copy(h0, h0 + NH, S0); else std::fill(S0, S0 + NH, T(0));
  drop_rows(S0, w.rd, {0, N}, H, hd.data());

  const T* w_hn = w.w_hh + 2 * H * H;  // [H, H], the n rows of w_hh
  // per thread: its columns of w_hn^T, packed before its time loop (the main product's w_rz^T
  // is run_time_loop's)
  std::vector<PackedB<T>> packs_n(w.packed_hn ? 0 : max_threads());
  MatMap<T> Gh(gh, N, G);
  const bool completed = run_time_loop<T>(d.T, N, H, 2 * H, w.packed_hh, [&](PackedB<T>& B, Index c0, Index c1) {
    B.pack_transposed(w.w_hh, H, c0, c1);
  }, [&](const StepShare& s, const PackedB<T>& Wrz) {
    const Range rows = s.rows, cols = s.cols, mr = s.gemm_rows;
    // this thread's columns of the n product: all of them by rows, a slice by columns
    const Range ncols = s.by_rows ? Range{0, H} : split(H, s.tid, s.team);
    if (!w.packed_hn) {
      packs_n[s.tid].reserve(H, ncols.size());
      packs_n[s.tid].pack_transposed(w_hn, H, ncols.begin, ncols.end);
    }
    const PackedB<T>& Wn = w.packed_hn ? *w.packed_hn : packs_n[s.tid];
    for (Index k = 0; k < d.T; ++k) {
      s.poll();
      const Index t = si.time_of(k);
      const bool* m = opt.mask_at(t, N);
      T* Gt = cache.gates + t * N * G;
      const T* hp = cache.S + si.before(t) * NH;
      const T* hdp = w.rd ? hd.data() : hp;  // h̃_{t-1}
      T* hnext = cache.S + si.after(t) * NH;
      T* rh_t = cache.rh + t * NH;

      // Gh[mr, cols] = h̃[mr] · w_rz[cols]^T                   [|mr|, H] x [H, |cols| of 2H]
      Wrz.multiply(mr.size(), hdp + mr.begin * H, H, gh + mr.begin * G + cols.begin, G, false);
      s.sync();
      if (s.should_stop()) break;
      // r, z and r ⊙ h̃ of this thread's rows
      with_acts(opt.acts, [&](auto phi, auto sig) {
        using Sig = decltype(sig);
        (void)phi;
        if constexpr (std::is_same_v<T, float>) {
          for (Index n = rows.begin; n < rows.end; ++n)
            gru_v1_row_rz<Sig>(Gt + n * G, gh + n * G, hdp + n * H, rh_t + n * H, H);
        } else if (rows.size()) {
          const Index r0 = rows.begin, rr = rows.size();
          MatMap<T> Gb(Gt + r0 * G, rr, G);
          // r, z = σ(x-part + h-part)
          Gb.leftCols(2 * H).array() = Sig::f(Gb.leftCols(2 * H).array() +
                                              Gh.block(r0, 0, rr, 2 * H).array());
          // r ⊙ h̃
          MatMap<T>(rh_t + r0 * H, rr, H).array() =
              Gb.leftCols(H).array() * CMatMap<T>(hdp + r0 * H, rr, H).array();
        }
      });
      s.sync();
      // Gh[mr, 2H + ncols] = (r ⊙ h̃)[mr] · w_hn[ncols]^T         [|mr|, H] x [H, |ncols|]
      Wn.multiply(mr.size(), rh_t + mr.begin * H, H, gh + mr.begin * G + 2 * H + ncols.begin, G,
                  false);
      s.sync();
      // n and h_t of this thread's rows
      with_acts(opt.acts, [&](auto phi, auto sig) {
        using Phi = decltype(phi);
        (void)sig;
        if constexpr (std::is_same_v<T, float>) {
          for (Index n = rows.begin; n < rows.end; ++n)
            gru_v1_row_n<Phi>(Gt + n * G, gh + n * G + 2 * H, hp + n * H, hnext + n * H, H);
        } else if (rows.size()) {
          const Index r0 = rows.begin, rr = rows.size();
          MatMap<T> Gb(Gt + r0 * G, rr, G);
          auto z = Gb.middleCols(H, H).array();
          auto n = Gb.rightCols(H).array();
          // n = φ(x-part + W_hn (r ⊙ h̃))
          n = Phi::f(n + Gh.block(r0, 2 * H, rr, H).array());
          // h_t = n + z ⊙ (h_{t-1} - n)
          MatMap<T>(hnext + r0 * H, rr, H).array() =
              n + z * (CMatMap<T>(hp + r0 * H, rr, H).array() - n);
        }
      });
      // zoneout: h_t = h' + z_h ⊙ (h_{t-1} - h')
      if (w.zh.on()) zoneout_rows(w.zh.at(t, NH), w.zh.p, rows, H, hp, hnext);
      carry_masked_rows(m, rows, H, hp, hnext);
      write_output(m, opt.zero_masked, rows, H, hnext, y + t * NH);
      drop_rows(hnext, w.rd, rows, H, hd.data());
      s.sync();
    }
  });
  return completed;
}

// v1 GRU backward.
//   x: [T, N, C]; cache from gru_v1_forward; dy: [T, N, H]; dh_n: [N, H] (null = zeros).
//   Workspace dG: [T, N, 3H], the gradients of the pre-activations (those of the recurrent
//   products' outputs, W_rz h̃ and W_hn (r ⊙ h̃), are the same: no reset inside a product).
//   Writes dx: [T, N, C] (null to skip), dh0: [N, H], dw_ih: [3H, C], dw_hh: [3H, H],
//   db_ih: [3H] (null to skip). Returns false when a pending interrupt stopped it early.
template <typename T>
bool gru_v1_backward(const Dims& d, const T* x, const Weights<T>& w, const SeqOptions& opt,
                     const GruV1Cache<T>& cache, const T* dy, const T* dh_n, T* dGx, T* dx,
                     T* dh0, T* dw_ih, T* dw_hh, T* db_ih) {
  const Index N = d.N, H = d.H, G = 3 * H, NH = N * H;
  const StateIndex si{d.T, opt.reverse};
  DenormalGuard ftz;  // this thread; every parallel region guards its own

  // dh_carry: dL/dh after the current step; dh = dh_carry + dy_t; drh: dL/d(r ⊙ h̃) of a step;
  // hd: h̃_{t-1} of a step's rows (recurrent dropout only)
  Mat<T> dh_carry(N, H), dh(N, H), drh(N, H), hd(w.rd ? N : 0, H);
  Mat<T> dhz(w.zh.on() ? N : 0, H);  // zoneout: the gradient reaching h', dh ⊙ (1 - z_h)
  if (dh_n) dh_carry = CMatMap<T>(dh_n, N, H); else dh_carry.setZero();

  const T* w_hn = w.w_hh + 2 * H * H;
  std::vector<PackedB<T>> packs_n(max_threads());
  // the main product: dh̃[mr, cols] = dG_rz[mr] · w_rz[:, cols]     [|mr|, 2H] x [2H, |cols| of H]
  const bool completed = run_time_loop<T>(d.T, N, 2 * H, H, nullptr, [&](PackedB<T>& B, Index c0, Index c1) {
    B.pack_plain(w.w_hh, 2 * H, H, c0, c1);
  }, [&](const StepShare& s, const PackedB<T>& Wrz) {
    const Range rows = s.rows, cols = s.cols, mr = s.gemm_rows;
    // the n product drh = dG_n · w_hn has H columns too: the same slice as the main product's
    PackedB<T>& Wn = packs_n[s.tid];
    Wn.reserve(H, cols.size());
    Wn.pack_plain(w_hn, H, H, cols.begin, cols.end);
    for (Index k = d.T - 1; k >= 0; --k) {
      s.poll();
      const Index t = si.time_of(k);
      const bool* m = opt.mask_at(t, N);
      const T* Gt = cache.gates + t * N * G;
      const T* hp = cache.S + si.before(t) * NH;
      T* dGxt = dGx + t * N * G;
      // h̃_{t-1} of this thread's rows
      const T* hdp = hp;
      if (w.rd) {
        drop_rows(hp, w.rd, rows, H, hd.data());
        hdp = hd.data();
      }

      // dh = dh_carry + dy_t; then d(z pre), d(n pre) of this thread's rows
      add_output_grad(m, opt.zero_masked, rows, H, dy + t * NH, dh_carry.data(), dh.data());
      record_dh_norms(opt.dh_norms, t, N, rows, H, dh.data());
      // the gradient reaching h': dh, or dh ⊙ (1 - z_h) under zoneout
      const T* dnew = dh.data();
      if (w.zh.on()) {
        zoneout_grad_new(w.zh.at(t, NH), w.zh.p, rows, H, dh.data(), dhz.data());
        dnew = dhz.data();
      }
      with_acts(opt.acts, [&](auto phi, auto sig) {
        using Phi = decltype(phi);
        using Sig = decltype(sig);
        if constexpr (std::is_same_v<T, float>) {
          for (Index n = rows.begin; n < rows.end; ++n)
            gru_v1_row_back_zn<Phi, Sig>(Gt + n * G, hp + n * H, dnew + n * H, dGxt + n * G, H);
        } else if (rows.size()) {
          const Index r0 = rows.begin, rr = rows.size();
          CMatMap<T> Gb(Gt + r0 * G, rr, G);
          MatMap<T> dGb(dGxt + r0 * G, rr, G);
          auto z = Gb.middleCols(H, H).array();
          auto n = Gb.rightCols(H).array();
          auto dh_b = CMatMap<T>(dnew + r0 * H, rr, H).array();
          // d(z pre) = dh ⊙ (h_{t-1} - n) ⊙ σ'(z)
          dGb.middleCols(H, H).array() =
              dh_b * (CMatMap<T>(hp + r0 * H, rr, H).array() - n) * Sig::df(z);
          // d(n pre) = dh ⊙ (1 - z) ⊙ φ'(n)
          dGb.rightCols(H).array() = dh_b * (T(1) - z) * Phi::df(n);
        }
      });
      // masked rows: no gate gradient (so nothing reaches the products or the weights)
      zero_masked_rows(m, rows, G, dGxt);
      s.sync();
      if (s.should_stop()) break;
      // drh[mr, cols] = d(n pre)[mr] · w_hn[:, cols]                 [|mr|, H] x [H, |cols|]
      Wn.multiply(mr.size(), dGxt + mr.begin * G + 2 * H, G, drh.data() + mr.begin * H + cols.begin,
                  H, false);
      s.sync();
      // d(r pre) and the part of dh̃ through r ⊙ h̃ (into dh_carry) of this thread's rows
      with_acts(opt.acts, [&](auto phi, auto sig) {
        using Sig = decltype(sig);
        (void)phi;
        if constexpr (std::is_same_v<T, float>) {
          for (Index n = rows.begin; n < rows.end; ++n)
            gru_v1_row_back_r<Sig>(Gt + n * G, hdp + n * H, drh.data() + n * H, dGxt + n * G,
                                   dh_carry.data() + n * H, H);
        } else if (rows.size()) {
          const Index r0 = rows.begin, rr = rows.size();
          auto r = CMatMap<T>(Gt + r0 * G, rr, G).leftCols(H).array();
          auto drh_b = drh.middleRows(r0, rr).array();
          // d(r pre) = drh ⊙ h̃ ⊙ σ'(r)
          MatMap<T>(dGxt + r0 * G, rr, G).leftCols(H).array() =
              drh_b * CMatMap<T>(hdp + r0 * H, rr, H).array() * Sig::df(r);
          // dh̃ (through r ⊙ h̃) = drh ⊙ r
          dh_carry.middleRows(r0, rr).array() = drh_b * r;
        }
      });
      s.sync();
      if (cols.size() && mr.size()) {
        // dh̃[mr, cols] += d(r, z pre)[mr] · w_rz[:, cols]            [|mr|, 2H] x [2H, |cols|]
        Wrz.multiply(mr.size(), dGxt + mr.begin * G, G, dh_carry.data() + mr.begin * H + cols.begin,
                     H, /*accumulate=*/true);
        // dh_{t-1} = dh̃ ⊙ rd + dh ⊙ z
        apply_dropout_grad(w.rd, mr, cols, H, dh_carry.data());
        dh_carry.block(mr.begin, cols.begin, mr.size(), cols.size()).array() +=
            CMatMap<T>(dnew, N, H).block(mr.begin, cols.begin, mr.size(), cols.size()).array() *
            CMatMap<T>(Gt, N, G).block(mr.begin, H + cols.begin, mr.size(), cols.size()).array();
      }
      // dh_{t-1} += dh ⊙ z_h (zoneout keeps that much of h_{t-1})
      if (w.zh.on()) zoneout_grad_prev(w.zh.at(t, NH), w.zh.p, mr, cols, H, dh.data(), dh_carry.data());
      // masked rows: dh_{t-1} = dh
      pass_masked_cols(m, mr, cols, H, dh.data(), dh_carry.data());
      s.sync();
    }
  });
  if (!completed) return false;
  std::copy(dh_carry.data(), dh_carry.data() + NH, dh0);

  const Index rows = d.T * N;
  Mat<T> hp_drop(w.rd ? d.T * N : 0, H);
  const T* hprev = dropped_states(cache.S + si.hprev_block() * NH, w.rd, d.T, NH, hp_drop.data());
  // dx = dGx · w_ih;  dw_ih = dGx^T · x;  dw_rz = dG_rz^T · h̃prev;  dw_hn = dG_n^T · (r ⊙ h̃)
  if (!input_grad(d, G, dGx, w.w_ih, dx) || !weight_grad(rows, G, dGx, G, x, d.C, dw_ih) ||
      !weight_grad(rows, 2 * H, dGx, G, hprev, H, dw_hh) ||
      !weight_grad(rows, H, dGx + 2 * H, G, cache.rh, H, dw_hh + 2 * H * H))
    return false;
  // db_ih = sum over all T*N rows
  if (db_ih) column_sums(dGx, rows, G, db_ih);
  return true;
}

}  // namespace rnnkit
