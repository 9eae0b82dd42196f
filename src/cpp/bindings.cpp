// The thin pybind11 layer: checks shapes (std::invalid_argument -> ValueError), allocates outputs,
// releases the GIL and calls the kernels. Arrays are taken with noconvert(): a float32/float64
// C-contiguous NumPy array is used in place; anything else is refused here (the Python layer in
// rnnkit.functional validates first and gives the detailed message).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif
#include <optional>
#include <sstream>
#include <vector>

#include "core.h"
#include "interrupt.h"
#include "gru.h"
#include "lstm.h"
#include "lstm_ln.h"
#include "gru_ln.h"
#include "optim.h"
#include "pool.h"
#include "rnn.h"
#include "rows.h"
#include "stream.h"
#include "train_step.h"

namespace py = pybind11;
using rnnkit::Index;

namespace {

template <typename T>
using Arr = py::array_t<T, py::array::c_style>;
template <typename T>
using OptArr = std::optional<Arr<T>>;
using Mask = std::optional<py::array_t<bool, py::array::c_style>>;

std::string shape_str(const std::vector<Index>& s) {
  std::ostringstream o;
  o << "(";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << (s.size() == 1 ? ",)" : ")");
  return o.str();
}

// The machine's physical memory (a bound on what one call may ask to allocate).
size_t physical_memory_bytes() {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) return size_t(pages) * size_t(page);
#endif
  return size_t(1) << 40;
}

// Requires `a`'s data to sit at a multiple of its item size (the kernels load whole items; the
// Python layer copies a misaligned view once before it gets here).
void check_aligned(const py::array& a, const std::string& name) {
  rnnkit::require(reinterpret_cast<std::uintptr_t>(a.data()) % std::uintptr_t(a.itemsize()) == 0,
                  name + ": expected an array aligned to its item size, got a misaligned view "
                         "(copy it with np.array(a))");
}

// Requires `a` to have exactly the shape `want` (and to be aligned).
void check_shape(const py::array& a, const std::vector<Index>& want, const char* name) {
  check_aligned(a, name);
  std::vector<Index> got(a.shape(), a.shape() + a.ndim());
  rnnkit::require(got == want, std::string(name) + ": expected shape " + shape_str(want) +
                                   ", got " + shape_str(got));
}

template <typename T>
const T* ptr(const OptArr<T>& a) {
  return a ? a->data() : nullptr;
}
template <typename T>
T* mptr(OptArr<T>& a) {
  return a ? a->mutable_data() : nullptr;
}

template <typename T>
void check_opt(const OptArr<T>& a, const std::vector<Index>& want, const char* name) {
  if (a) check_shape(*a, want, name);
}

// Sizes from x: [T, N, C] and w_hh: [G*H, H]; checks every weight against them.
// The sizes of a call, checked: x: [T, N, C], w_ih: [G*H, C], w_hh: [G*H, Hs], biases [G*H];
// Hs = H, or P with an LSTM projection w_hr: [P, H].
template <typename T>
rnnkit::Dims dims_of(const Arr<T>& x, const Arr<T>& w_ih, const Arr<T>& w_hh,
                     const OptArr<T>& b_ih, const OptArr<T>& b_hh, Index G,
                     const OptArr<T>& w_hr = std::nullopt) {
  rnnkit::require(x.ndim() == 3, "x: expected 3 dimensions [T, N, C], got " +
                                     std::to_string(x.ndim()));
  rnnkit::require(w_hh.ndim() == 2, "w_hh: expected 2 dimensions [G*H, H]");
  rnnkit::require(!w_hr || w_hr->ndim() == 2, "w_hr: expected 2 dimensions [P, H]");
  check_aligned(x, "x");
  rnnkit::Dims d{x.shape(0), x.shape(1), x.shape(2), w_hr ? w_hr->shape(1) : w_hh.shape(1),
                 w_hr ? w_hr->shape(0) : 0};
  rnnkit::require(d.T > 0 && d.N > 0 && d.C > 0 && d.H > 0 && (!w_hr || d.P > 0),
                  "x and w_hh: every size (T, N, C, H) must be at least 1");
  check_shape(w_hh, {G * d.H, d.state()}, "w_hh");
  check_shape(w_ih, {G * d.H, d.C}, "w_ih");
  check_opt(b_ih, {G * d.H}, "b_ih");
  check_opt(b_hh, {G * d.H}, "b_hh");
  return d;
}

const bool* mask_ptr(const Mask& mask, const rnnkit::Dims& d) {
  if (!mask) return nullptr;
  check_shape(*mask, {d.T, d.N}, "mask");
  return mask->data();
}

// The interpreter's main thread and its default SIGINT handler, looked up once at import.
struct PythonSignals {
  unsigned long main_thread = 0;
  py::object getsignal, default_handler, sigint;
};
PythonSignals& python_signals() {
  static PythonSignals* s = new PythonSignals();  // never destroyed (outlives the interpreter)
  return *s;
}

// One kernel call from Python, made with the GIL held: decides whether the kernel may stop early
// on Ctrl-C (only on the main thread, and only while SIGINT has Python's default handler, which
// raises KeyboardInterrupt; a custom handler keeps the kernel running to the end), and raises the
// KeyboardInterrupt when it did stop. See interrupt.h and core.h ("Interrupts").
class KernelCall {
 public:
  KernelCall() {
    PythonSignals& ps = python_signals();
    bool on = PyThread_get_thread_ident() == ps.main_thread && ps.getsignal &&
              ps.getsignal(ps.sigint).is(ps.default_handler) && rnnkit::watch_sigint();
    // a Ctrl-C that arrived before this call was handled by Python already
    if (on) rnnkit::interrupt_flag().store(false);
    rnnkit::interruptible_here() = on;
    rnnkit::widest_lease_here() = 0;
  }
  ~KernelCall() { rnnkit::interruptible_here() = false; }
  KernelCall(const KernelCall&) = delete;
  KernelCall& operator=(const KernelCall&) = delete;

  // With the GIL held, after `completed` came back from a kernel: returns when it completed, else
  // runs Python's handler (which raises KeyboardInterrupt) and propagates that.
  void finish(bool completed) {
    if (completed) return;
    rnnkit::interrupt_flag().store(false);
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw py::error_already_set();
  }
};

// An uninitialised C-contiguous array of `shape` (from the pool when large).
template <typename T>
Arr<T> empty(const std::vector<Index>& shape) {
  std::vector<py::ssize_t> s(shape.begin(), shape.end());
  size_t bytes = sizeof(T);
  for (Index v : shape) bytes *= size_t(v);
  if (bytes < rnnkit::BufferPool::kMinBytes) return Arr<T>(s);
  void* p = rnnkit::BufferPool::instance().take(bytes);
  py::capsule owner(p, [](void* q) { rnnkit::BufferPool::instance().give(q); });
  return Arr<T>(s, static_cast<T*>(p), owner);
}

// A new array holding a copy of a row-major matrix.
template <typename T>
Arr<T> empty_like_mat(const rnnkit::Mat<T>& m) {
  Arr<T> a(std::vector<py::ssize_t>{m.rows(), m.cols()});
  std::copy(m.data(), m.data() + m.size(), a.mutable_data());
  return a;
}

template <typename T>
bool x_dims_ok(const Arr<T>& a) {
  return a.ndim() == 2;
}

// A cell's activations from Keras's names: activation φ in tanh, relu, linear; recurrent
// activation σ in sigmoid, hard_sigmoid (the fused kernels' set, see core.h namespace acts).
rnnkit::CellActs parse_acts(const std::string& act, const std::string& rec) {
  using rnnkit::Act;
  rnnkit::CellActs a;
  if (act == "tanh") a.act = Act::Tanh;
  else if (act == "relu") a.act = Act::Relu;
  else if (act == "linear") a.act = Act::Linear;
  else throw std::invalid_argument("activation: expected 'tanh', 'relu' or 'linear', got '" + act + "'");
  if (rec == "sigmoid") a.rec = Act::Sigmoid;
  else if (rec == "hard_sigmoid") a.rec = Act::HardSigmoid;
  else throw std::invalid_argument("recurrent_activation: expected 'sigmoid' or 'hard_sigmoid', got '" +
                                   rec + "'");
  return a;
}

// The optional output of a backward's reverse loop: ‖dL/dh_t‖ of every step and row, [T, N]
// float64 (C-contiguous, writeable), or none.
using NormsOut = std::optional<py::array_t<double, py::array::c_style>>;
double* dh_norms_ptr(NormsOut& a, const rnnkit::Dims& d) {
  if (!a) return nullptr;
  check_shape(*a, {d.T, d.N}, "dh_norms");
  rnnkit::require(a->writeable(), "dh_norms: expected a writeable array");
  return a->mutable_data();
}

// One state's zoneout: a per-step array z: [T, N, W] (training masks, 1 = keep the previous
// value) or, without one, the constant p in [0, 1) (inference: the expectation; 0 = none).
template <typename T>
rnnkit::Zoneout<T> zoneout_of(const OptArr<T>& z, double p, const std::vector<Index>& shape,
                              const std::string& name) {
  rnnkit::require(p >= 0.0 && p < 1.0,
                  name + "_p: expected a zoneout probability in [0, 1), got " + std::to_string(p));
  if (z) {
    check_shape(*z, shape, name.c_str());
    check_aligned(*z, name.c_str());
    return {z->data(), T(0)};
  }
  return {nullptr, T(p)};
}

// ----------------------------------- LSTM -----------------------------------------------------

template <typename T>
py::tuple lstm_forward(const Arr<T>& x, const OptArr<T>& h0, const OptArr<T>& c0,
                       const Arr<T>& w_ih, const Arr<T>& w_hh, const OptArr<T>& b_ih,
                       const OptArr<T>& b_hh, const Mask& mask, const OptArr<T>& rd, bool reverse, bool zero_masked,
                       const std::string& act, const std::string& rec, const OptArr<T>& w_hr,
                       const OptArr<T>& zh, double zh_p, const OptArr<T>& zc, double zc_p) {
  const auto d = dims_of(x, w_ih, w_hh, b_ih, b_hh, 4, w_hr);
  const Index Hs = d.state();
  check_opt(h0, {d.N, Hs}, "h0");
  check_opt(c0, {d.N, d.H}, "c0");
  const rnnkit::SeqOptions opt{mask_ptr(mask, d), reverse, zero_masked, parse_acts(act, rec)};
  check_opt(rd, {d.N, Hs}, "recurrent_dropout_mask");
  rnnkit::Weights<T> w{w_ih.data(), w_hh.data(), ptr(b_ih), ptr(b_hh), ptr(rd)};
  w.w_hr = ptr(w_hr);
  w.zh = zoneout_of(zh, zh_p, {d.T, d.N, Hs}, "zoneout_h");
  w.zc = zoneout_of(zc, zc_p, {d.T, d.N, d.H}, "zoneout_c");
  auto y = empty<T>({d.T, d.N, Hs});
  auto S = empty<T>({d.T + 1, d.N, Hs});
  auto Cs = empty<T>({d.T + 1, d.N, d.H});
  auto gates = empty<T>({d.T, d.N, 4 * d.H});
  auto M = d.P ? empty<T>({d.T, d.N, d.H}) : Arr<T>();  // o ⊙ φ(c) before the projection
  const bool zc_on = w.zc.on();
  auto Cnew = zc_on ? empty<T>({d.T, d.N, d.H}) : Arr<T>();  // c before zoneout
  KernelCall call;
  bool completed;
  {
    py::gil_scoped_release nogil;
    completed = rnnkit::lstm_forward<T>(
        d, x.data(), ptr(h0), ptr(c0), w, opt, y.mutable_data(),
        {S.mutable_data(), Cs.mutable_data(), gates.mutable_data(), d.P ? M.mutable_data() : nullptr,
         zc_on ? Cnew.mutable_data() : nullptr});
  }
  call.finish(completed);
  return py::make_tuple(y, S, Cs, gates, d.P ? py::object(M) : py::none(),
                        zc_on ? py::object(Cnew) : py::none());
}

template <typename T>
py::tuple lstm_backward(const Arr<T>& x, const Arr<T>& w_ih, const Arr<T>& w_hh, const Mask& mask, const OptArr<T>& rd,
                        bool reverse, bool zero_masked, Arr<T>& S, Arr<T>& Cs, Arr<T>& gates,
                        const Arr<T>& dy, const OptArr<T>& dh_n, const OptArr<T>& dc_n,
                        bool need_dx, const std::string& act, const std::string& rec,
                        const OptArr<T>& w_hr, OptArr<T>& M, const OptArr<T>& zh, double zh_p,
                        const OptArr<T>& zc, double zc_p, OptArr<T>& Cnew, NormsOut dh_norms) {
  const auto d = dims_of<T>(x, w_ih, w_hh, std::nullopt, std::nullopt, 4, w_hr);
  const Index Hs = d.state();
  check_shape(S, {d.T + 1, d.N, Hs}, "cache.S");
  check_shape(Cs, {d.T + 1, d.N, d.H}, "cache.c_states");
  check_shape(gates, {d.T, d.N, 4 * d.H}, "cache.gates");
  rnnkit::require(!d.P || M, "cache.m: expected an array with a projection, got None");
  if (d.P) check_shape(*M, {d.T, d.N, d.H}, "cache.m");
  check_shape(dy, {d.T, d.N, Hs}, "dy");
  check_opt(dh_n, {d.N, Hs}, "dh_n");
  check_opt(dc_n, {d.N, d.H}, "dc_n");
  rnnkit::SeqOptions opt{mask_ptr(mask, d), reverse, zero_masked, parse_acts(act, rec)};
  opt.dh_norms = dh_norms_ptr(dh_norms, d);
  check_opt(rd, {d.N, Hs}, "recurrent_dropout_mask");
  rnnkit::Weights<T> w{w_ih.data(), w_hh.data(), nullptr, nullptr, ptr(rd)};
  w.w_hr = ptr(w_hr);
  w.zh = zoneout_of(zh, zh_p, {d.T, d.N, Hs}, "zoneout_h");
  w.zc = zoneout_of(zc, zc_p, {d.T, d.N, d.H}, "zoneout_c");
  rnnkit::require(!w.zc.on() || Cnew, "cache.c_new: expected an array with zoneout of c, got None");
  if (w.zc.on()) check_shape(*Cnew, {d.T, d.N, d.H}, "cache.c_new");
  auto dx = need_dx ? empty<T>({d.T, d.N, d.C}) : Arr<T>();
  auto dh0 = empty<T>({d.N, Hs});
  auto dc0 = empty<T>({d.N, d.H});
  auto dw_ih = empty<T>({4 * d.H, d.C});
  auto dw_hh = empty<T>({4 * d.H, Hs});
  auto db = empty<T>({4 * d.H});
  auto dw_hr = d.P ? empty<T>({d.P, d.H}) : Arr<T>();
  auto dG = empty<T>({d.T * d.N, 4 * d.H});  // workspaces
  auto dHs = d.P ? empty<T>({d.T, d.N, d.P}) : Arr<T>();
  KernelCall call;
  bool completed;
  {
    py::gil_scoped_release nogil;
    completed = rnnkit::lstm_backward<T>(
        d, x.data(), w, opt,
        {S.mutable_data(), Cs.mutable_data(), gates.mutable_data(), d.P ? M->mutable_data() : nullptr,
         w.zc.on() ? Cnew->mutable_data() : nullptr},
        dy.data(), ptr(dh_n), ptr(dc_n), dG.mutable_data(), (need_dx ? dx.mutable_data() : nullptr),
        dh0.mutable_data(), dc0.mutable_data(), dw_ih.mutable_data(), dw_hh.mutable_data(),
        db.mutable_data(), d.P ? dHs.mutable_data() : nullptr, d.P ? dw_hr.mutable_data() : nullptr);
  }
  call.finish(completed);
  return py::make_tuple(need_dx ? py::object(dx) : py::none(), dh0, dc0, dw_ih, dw_hh, db,
                        d.P ? py::object(dw_hr) : py::none());
}

// ----------------------------------- LayerNorm LSTM ------------------------------------------

// The LayerNorm cells' gains and biases, checked: gx, gh: [G*H]; gc, bc: [H] (LSTM only).
template <typename T>
rnnkit::LnParams<T> ln_params(const Arr<T>& gx, const Arr<T>& gh, const OptArr<T>& gc,
                              const OptArr<T>& bc, const rnnkit::Dims& d, Index G, bool lstm) {
  check_shape(gx, {G * d.H}, "gamma_x");
  check_shape(gh, {G * d.H}, "gamma_h");
  rnnkit::require(!lstm || (gc && bc), "gamma_c, beta_c: the LayerNorm LSTM needs both");
  if (lstm) {
    check_shape(*gc, {d.H}, "gamma_c");
    check_shape(*bc, {d.H}, "beta_c");
  }
  return {gx.data(), gh.data(), ptr(gc), ptr(bc)};
}

template <typename T>
py::tuple lstm_ln_forward(const Arr<T>& x, const OptArr<T>& h0, const OptArr<T>& c0,
                          const Arr<T>& w_ih, const Arr<T>& w_hh, const OptArr<T>& b_ih,
                          const OptArr<T>& b_hh, const Arr<T>& gx, const Arr<T>& gh,
                          const OptArr<T>& gc, const OptArr<T>& bc, const Mask& mask,
                          const OptArr<T>& rd, bool reverse, bool zero_masked,
                          const std::string& act, const std::string& rec) {
  const auto d = dims_of(x, w_ih, w_hh, b_ih, b_hh, 4);
  const auto ln = ln_params(gx, gh, gc, bc, d, 4, true);
  check_opt(h0, {d.N, d.H}, "h0");
  check_opt(c0, {d.N, d.H}, "c0");
  const rnnkit::SeqOptions opt{mask_ptr(mask, d), reverse, zero_masked, parse_acts(act, rec)};
  check_opt(rd, {d.N, d.H}, "recurrent_dropout_mask");
  const rnnkit::Weights<T> w{w_ih.data(), w_hh.data(), ptr(b_ih), ptr(b_hh), ptr(rd)};
  auto y = empty<T>({d.T, d.N, d.H});
  auto S = empty<T>({d.T + 1, d.N, d.H});
  auto Cs = empty<T>({d.T + 1, d.N, d.H});
  auto gates = empty<T>({d.T, d.N, 4 * d.H});
  auto Xh = empty<T>({d.T, d.N, 4 * d.H});
  auto Rh = empty<T>({d.T, d.N, 4 * d.H});
  auto Ch = empty<T>({d.T, d.N, d.H});
  auto rstd = empty<T>({d.T, d.N, 3});
  KernelCall call;
  bool completed;
  {
    py::gil_scoped_release nogil;
    rnnkit::Mat<T> gh_ws(d.N, 4 * d.H);
    completed = rnnkit::lstm_ln_forward<T>(
        d, x.data(), ptr(h0), ptr(c0), w, ln, opt, y.mutable_data(),
        {S.mutable_data(), Cs.mutable_data(), gates.mutable_data(), Xh.mutable_data(),
         Rh.mutable_data(), Ch.mutable_data(), rstd.mutable_data()},
        gh_ws.data());
  }
  call.finish(completed);
  return py::make_tuple(y, S, Cs, gates, Xh, Rh, Ch, rstd);
}

template <typename T>
py::tuple lstm_ln_backward(const Arr<T>& x, const Arr<T>& w_ih, const Arr<T>& w_hh,
                           const Arr<T>& gx, const Arr<T>& gh, const OptArr<T>& gc,
                           const OptArr<T>& bc, const Mask& mask, const OptArr<T>& rd,
                           bool reverse, bool zero_masked, Arr<T>& S, Arr<T>& Cs, Arr<T>& gates,
                           Arr<T>& Xh, Arr<T>& Rh, Arr<T>& Ch, Arr<T>& rstd, const Arr<T>& dy,
                           const OptArr<T>& dh_n, const OptArr<T>& dc_n, bool need_dx,
                           const std::string& act, const std::string& rec, NormsOut dh_norms) {
  const auto d = dims_of<T>(x, w_ih, w_hh, std::nullopt, std::nullopt, 4);
  const auto ln = ln_params(gx, gh, gc, bc, d, 4, true);
  check_shape(S, {d.T + 1, d.N, d.H}, "cache.S");
  check_shape(Cs, {d.T + 1, d.N, d.H}, "cache.c_states");
  check_shape(gates, {d.T, d.N, 4 * d.H}, "cache.gates");
  check_shape(Xh, {d.T, d.N, 4 * d.H}, "cache.x_hat");
  check_shape(Rh, {d.T, d.N, 4 * d.H}, "cache.r_hat");
  check_shape(Ch, {d.T, d.N, d.H}, "cache.c_hat");
  check_shape(rstd, {d.T, d.N, 3}, "cache.rstd");
  check_shape(dy, {d.T, d.N, d.H}, "dy");
  check_opt(dh_n, {d.N, d.H}, "dh_n");
  check_opt(dc_n, {d.N, d.H}, "dc_n");
  rnnkit::SeqOptions opt{mask_ptr(mask, d), reverse, zero_masked, parse_acts(act, rec)};
  opt.dh_norms = dh_norms_ptr(dh_norms, d);
  check_opt(rd, {d.N, d.H}, "recurrent_dropout_mask");
  const rnnkit::Weights<T> w{w_ih.data(), w_hh.data(), nullptr, nullptr, ptr(rd)};
  auto dx = need_dx ? empty<T>({d.T, d.N, d.C}) : Arr<T>();
  auto dh0 = empty<T>({d.N, d.H});
  auto dc0 = empty<T>({d.N, d.H});
  auto dw_ih = empty<T>({4 * d.H, d.C});
  auto dw_hh = empty<T>({4 * d.H, d.H});
  auto db = empty<T>({4 * d.H});
  auto dgx = empty<T>({4 * d.H});
  auto dgh = empty<T>({4 * d.H});
  auto dgc = empty<T>({d.H});
  auto dbc = empty<T>({d.H});
  auto dG = empty<T>({d.T * d.N, 4 * d.H});  // workspaces
  auto dR = empty<T>({d.T * d.N, 4 * d.H});
  KernelCall call;
  bool completed;
  {
    py::gil_scoped_release nogil;
    completed = rnnkit::lstm_ln_backward<T>(
        d, x.data(), w, ln, opt,
        {S.mutable_data(), Cs.mutable_data(), gates.mutable_data(), Xh.mutable_data(),
         Rh.mutable_data(), Ch.mutable_data(), rstd.mutable_data()},
        dy.data(), ptr(dh_n), ptr(dc_n), dG.mutable_data(), dR.mutable_data(),
        need_dx ? dx.mutable_data() : nullptr, dh0.mutable_data(), dc0.mutable_data(),
        dw_ih.mutable_data(), dw_hh.mutable_data(), db.mutable_data(), dgx.mutable_data(),
        dgh.mutable_data(), dgc.mutable_data(), dbc.mutable_data());
  }
  call.finish(completed);
  return py::make_tuple(need_dx ? py::object(dx) : py::none(), dh0, dc0, dw_ih, dw_hh, db, dgx, dgh,
                        dgc, dbc);
}

// ----------------------------------- LayerNorm GRU -------------------------------------------

template <typename T>
py::tuple gru_ln_forward(const Arr<T>& x, const OptArr<T>& h0, const Arr<T>& w_ih,
                         const Arr<T>& w_hh, const OptArr<T>& b_ih, const OptArr<T>& b_hh,
                         const Arr<T>& gx, const Arr<T>& gh, const Mask& mask, const OptArr<T>& rd,
                         bool reverse, bool zero_masked, const std::string& act,
                         const std::string& rec) {
  const auto d = dims_of(x, w_ih, w_hh, b_ih, b_hh, 3);
  const auto ln = ln_params<T>(gx, gh, std::nullopt, std::nullopt, d, 3, false);
  check_opt(h0, {d.N, d.H}, "h0");
  const rnnkit::SeqOptions opt{mask_ptr(mask, d), reverse, zero_masked, parse_acts(act, rec)};
  check_opt(rd, {d.N, d.H}, "recurrent_dropout_mask");
  const rnnkit::Weights<T> w{w_ih.data(), w_hh.data(), ptr(b_ih), ptr(b_hh), ptr(rd)};
  auto y = empty<T>({d.T, d.N, d.H});
  auto S = empty<T>({d.T + 1, d.N, d.H});
  auto gates = empty<T>({d.T, d.N, 3 * d.H});
  auto Xh = empty<T>({d.T, d.N, 3 * d.H});
  auto Rh = empty<T>({d.T, d.N, 3 * d.H});
  auto rstd = empty<T>({d.T, d.N, 2});
  KernelCall call;
  bool completed;
  {
    py::gil_scoped_release nogil;
    rnnkit::Mat<T> gh_ws(d.N, 3 * d.H);
    completed = rnnkit::gru_ln_forward<T>(
        d, x.data(), ptr(h0), w, ln, opt, y.mutable_data(),
        {S.mutable_data(), gates.mutable_data(), Xh.mutable_data(), Rh.mutable_data(),
         rstd.mutable_data()},
        gh_ws.data());
  }
  call.finish(completed);
  return py::make_tuple(y, S, gates, Xh, Rh, rstd);
}

template <typename T>
py::tuple gru_ln_backward(const Arr<T>& x, const Arr<T>& w_ih, const Arr<T>& w_hh,
                          const OptArr<T>& b_hh, const Arr<T>& gx, const Arr<T>& gh,
                          const Mask& mask, const OptArr<T>& rd, bool reverse, bool zero_masked,
                          Arr<T>& S, Arr<T>& gates, Arr<T>& Xh, Arr<T>& Rh, Arr<T>& rstd,
                          const Arr<T>& dy, const OptArr<T>& dh_n, bool need_dx,
                          const std::string& act, const std::string& rec, NormsOut dh_norms) {
  const auto d = dims_of<T>(x, w_ih, w_hh, std::nullopt, b_hh, 3);
  const auto ln = ln_params<T>(gx, gh, std::nullopt, std::nullopt, d, 3, false);
  check_shape(S, {d.T + 1, d.N, d.H}, "cache.S");
  check_shape(gates, {d.T, d.N, 3 * d.H}, "cache.gates");
  check_shape(Xh, {d.T, d.N, 3 * d.H}, "cache.x_hat");
  check_shape(Rh, {d.T, d.N, 3 * d.H}, "cache.r_hat");
  check_shape(rstd, {d.T, d.N, 2}, "cache.rstd");
  check_shape(dy, {d.T, d.N, d.H}, "dy");
  check_opt(dh_n, {d.N, d.H}, "dh_n");
  rnnkit::SeqOptions opt{mask_ptr(mask, d), reverse, zero_masked, parse_acts(act, rec)};
  opt.dh_norms = dh_norms_ptr(dh_norms, d);
  check_opt(rd, {d.N, d.H}, "recurrent_dropout_mask");
  const rnnkit::Weights<T> w{w_ih.data(), w_hh.data(), nullptr, ptr(b_hh), ptr(rd)};
  auto dx = need_dx ? empty<T>({d.T, d.N, d.C}) : Arr<T>();
  auto dh0 = empty<T>({d.N, d.H});
  auto dw_ih = empty<T>({3 * d.H, d.C});
  auto dw_hh = empty<T>({3 * d.H, d.H});
  auto db_ih = empty<T>({3 * d.H});
  auto db_hh = empty<T>({3 * d.H});
  auto dgx = empty<T>({3 * d.H});
  auto dgh = empty<T>({3 * d.H});
  auto dGx = empty<T>({d.T * d.N, 3 * d.H});  // workspaces
  auto dGh = empty<T>({d.T * d.N, 3 * d.H});
  auto dR = empty<T>({d.T * d.N, 3 * d.H});
  KernelCall call;
  bool completed;
  {
    py::gil_scoped_release nogil;
    completed = rnnkit::gru_ln_backward<T>(
        d, x.data(), w, ln, opt,
        {S.mutable_data(), gates.mutable_data(), Xh.mutable_data(), Rh.mutable_data(),
         rstd.mutable_data()},
        dy.data(), ptr(dh_n), dGx.mutable_data(), dGh.mutable_data(), dR.mutable_data(),
        need_dx ? dx.mutable_data() : nullptr, dh0.mutable_data(), dw_ih.mutable_data(),
        dw_hh.mutable_data(), db_ih.mutable_data(), db_hh.mutable_data(), dgx.mutable_data(),
        dgh.mutable_data());
  }
  call.finish(completed);
  return py::make_tuple(need_dx ? py::object(dx) : py::none(), dh0, dw_ih, dw_hh, db_ih, db_hh, dgx,
                        dgh);
}

// ----------------------------------- GRU ------------------------------------------------------

template <typename T>
py::tuple gru_forward(const Arr<T>& x, const OptArr<T>& h0, const Arr<T>& w_ih, const Arr<T>& w_hh,
                      const OptArr<T>& b_ih, const OptArr<T>& b_hh, const Mask& mask, const OptArr<T>& rd, bool reverse,
                      bool zero_masked, const std::string& act, const std::string& rec,
                      bool reset_after, const OptArr<T>& zh, double zh_p) {
  const auto d = dims_of(x, w_ih, w_hh, b_ih, b_hh, 3);
  rnnkit::require(reset_after || !b_hh,
                  "b_hh: the GRU with reset_after=False has no recurrent bias, expected None");
  check_opt(h0, {d.N, d.H}, "h0");
  const rnnkit::SeqOptions opt{mask_ptr(mask, d), reverse, zero_masked, parse_acts(act, rec)};
  check_opt(rd, {d.N, d.H}, "recurrent_dropout_mask");
  rnnkit::Weights<T> w{w_ih.data(), w_hh.data(), ptr(b_ih), ptr(b_hh), ptr(rd)};
  w.zh = zoneout_of(zh, zh_p, {d.T, d.N, d.H}, "zoneout_h");
  auto y = empty<T>({d.T, d.N, d.H});
  auto S = empty<T>({d.T + 1, d.N, d.H});
  auto gates = empty<T>({d.T, d.N, 3 * d.H});
  auto hn = empty<T>({d.T, d.N, d.H});
  KernelCall call;
  bool completed;
  {
    py::gil_scoped_release nogil;
    rnnkit::Mat<T> gh(d.N, 3 * d.H);
    // hn holds W_hn h + b_hn (reset_after) or r ⊙ h̃ (reset_after=False), what backward needs
    completed = reset_after
        ? rnnkit::gru_forward<T>(d, x.data(), ptr(h0), w, opt, y.mutable_data(),
                                 {S.mutable_data(), gates.mutable_data(), hn.mutable_data()}, gh.data())
        : rnnkit::gru_v1_forward<T>(d, x.data(), ptr(h0), w, opt, y.mutable_data(),
                                    {S.mutable_data(), gates.mutable_data(), hn.mutable_data()},
                                    gh.data());
  }
  call.finish(completed);
  return py::make_tuple(y, S, gates, hn);
}

template <typename T>
py::tuple gru_backward(const Arr<T>& x, const Arr<T>& w_ih, const Arr<T>& w_hh, const Mask& mask, const OptArr<T>& rd,
                       bool reverse, bool zero_masked, Arr<T>& S, Arr<T>& gates, Arr<T>& hn,
                       const Arr<T>& dy, const OptArr<T>& dh_n, bool need_dx,
                       const std::string& act, const std::string& rec, bool reset_after,
                       const OptArr<T>& zh, double zh_p, NormsOut dh_norms) {
  const auto d = dims_of<T>(x, w_ih, w_hh, std::nullopt, std::nullopt, 3);
  check_shape(S, {d.T + 1, d.N, d.H}, "cache.S");
  check_shape(gates, {d.T, d.N, 3 * d.H}, "cache.gates");
  check_shape(hn, {d.T, d.N, d.H}, "cache.hn");
  check_shape(dy, {d.T, d.N, d.H}, "dy");
  check_opt(dh_n, {d.N, d.H}, "dh_n");
  rnnkit::SeqOptions opt{mask_ptr(mask, d), reverse, zero_masked, parse_acts(act, rec)};
  opt.dh_norms = dh_norms_ptr(dh_norms, d);
  check_opt(rd, {d.N, d.H}, "recurrent_dropout_mask");
  rnnkit::Weights<T> w{w_ih.data(), w_hh.data(), nullptr, nullptr, ptr(rd)};
  w.zh = zoneout_of(zh, zh_p, {d.T, d.N, d.H}, "zoneout_h");
  auto dx = need_dx ? empty<T>({d.T, d.N, d.C}) : Arr<T>();
  auto dh0 = empty<T>({d.N, d.H});
  auto dw_ih = empty<T>({3 * d.H, d.C});
  auto dw_hh = empty<T>({3 * d.H, d.H});
  auto db_ih = empty<T>({3 * d.H});
  auto db_hh = reset_after ? empty<T>({3 * d.H}) : Arr<T>();
  auto dGx = empty<T>({d.T * d.N, 3 * d.H});  // workspaces
  auto dGh = reset_after ? empty<T>({d.T * d.N, 3 * d.H}) : Arr<T>();
  T* dxp = need_dx ? dx.mutable_data() : nullptr;
  KernelCall call;
  bool completed;
  {
    py::gil_scoped_release nogil;
    completed = reset_after
        ? rnnkit::gru_backward<T>(d, x.data(), w, opt,
                                  {S.mutable_data(), gates.mutable_data(), hn.mutable_data()},
                                  dy.data(), ptr(dh_n), dGx.mutable_data(), dGh.mutable_data(), dxp,
                                  dh0.mutable_data(), dw_ih.mutable_data(), dw_hh.mutable_data(),
                                  db_ih.mutable_data(), db_hh.mutable_data())
        : rnnkit::gru_v1_backward<T>(d, x.data(), w, opt,
                                     {S.mutable_data(), gates.mutable_data(), hn.mutable_data()},
                                     dy.data(), ptr(dh_n), dGx.mutable_data(), dxp,
                                     dh0.mutable_data(), dw_ih.mutable_data(), dw_hh.mutable_data(),
                                     db_ih.mutable_data());
  }
  call.finish(completed);
  // reset_after=False: there is no recurrent bias, so no db_hh
  return py::make_tuple(need_dx ? py::object(dx) : py::none(), dh0, dw_ih, dw_hh, db_ih,
                        reset_after ? py::object(db_hh) : py::none());
}

// ----------------------------------- Elman RNN ------------------------------------------------


template <typename T>
py::tuple rnn_forward(const Arr<T>& x, const OptArr<T>& h0, const Arr<T>& w_ih, const Arr<T>& w_hh,
                      const OptArr<T>& b_ih, const OptArr<T>& b_hh, const std::string& act,
                      const Mask& mask, const OptArr<T>& rd, bool reverse, bool zero_masked) {
  const auto d = dims_of(x, w_ih, w_hh, b_ih, b_hh, 1);
  check_opt(h0, {d.N, d.H}, "h0");
  const rnnkit::SeqOptions opt{mask_ptr(mask, d), reverse, zero_masked, parse_acts(act, "sigmoid")};
  check_opt(rd, {d.N, d.H}, "recurrent_dropout_mask");
  const rnnkit::Weights<T> w{w_ih.data(), w_hh.data(), ptr(b_ih), ptr(b_hh), ptr(rd)};
  auto y = empty<T>({d.T, d.N, d.H});
  auto S = empty<T>({d.T + 1, d.N, d.H});
  KernelCall call;
  bool completed;
  {
    py::gil_scoped_release nogil;
    completed = rnnkit::rnn_forward<T>(d, x.data(), ptr(h0), w, opt, y.mutable_data(), S.mutable_data());
  }
  call.finish(completed);
  return py::make_tuple(y, S);
}

template <typename T>
py::tuple rnn_backward(const Arr<T>& x, const Arr<T>& w_ih, const Arr<T>& w_hh,
                       const std::string& act, const Mask& mask, const OptArr<T>& rd, bool reverse, bool zero_masked,
                       const Arr<T>& S, const Arr<T>& dy, const OptArr<T>& dh_n, bool need_dx, NormsOut dh_norms) {
  const auto d = dims_of<T>(x, w_ih, w_hh, std::nullopt, std::nullopt, 1);
  check_shape(S, {d.T + 1, d.N, d.H}, "cache.S");
  check_shape(dy, {d.T, d.N, d.H}, "dy");
  check_opt(dh_n, {d.N, d.H}, "dh_n");
  rnnkit::SeqOptions opt{mask_ptr(mask, d), reverse, zero_masked, parse_acts(act, "sigmoid")};
  opt.dh_norms = dh_norms_ptr(dh_norms, d);
  check_opt(rd, {d.N, d.H}, "recurrent_dropout_mask");
  const rnnkit::Weights<T> w{w_ih.data(), w_hh.data(), nullptr, nullptr, ptr(rd)};
  auto dx = need_dx ? empty<T>({d.T, d.N, d.C}) : Arr<T>();
  auto dh0 = empty<T>({d.N, d.H});
  auto dw_ih = empty<T>({d.H, d.C});
  auto dw_hh = empty<T>({d.H, d.H});
  auto db = empty<T>({d.H});
  auto dG = empty<T>({d.T * d.N, d.H});  // workspace
  KernelCall call;
  bool completed;
  {
    py::gil_scoped_release nogil;
    completed = rnnkit::rnn_backward<T>(d, x.data(), w, opt, S.data(), dy.data(), ptr(dh_n), dG.mutable_data(),
                            (need_dx ? dx.mutable_data() : nullptr), dh0.mutable_data(), dw_ih.mutable_data(),
                            dw_hh.mutable_data(), db.mutable_data());
  }
  call.finish(completed);
  return py::make_tuple(need_dx ? py::object(dx) : py::none(), dh0, dw_ih, dw_hh, db);
}


// ----------------------------------- streaming ------------------------------------------------

// Checks a per-call input of a stream: dtype T, C-contiguous, shape [N, C] (step) or
// [steps, N, C] (run). Errors name the argument and give expected and actual.
template <typename T>
const T* stream_input(const py::array& x, const rnnkit::Stream<T>& s, int ndim) {
  if (!py::isinstance<py::array_t<T>>(x))
    throw py::type_error("x: expected dtype " + std::string(py::str(py::dtype::of<T>())) +
                         " (the stream's), got " + std::string(py::str(x.dtype())));
  if (!(x.flags() & py::array::c_style))
    throw std::invalid_argument("x: expected a C-contiguous array (use np.ascontiguousarray)");
  check_aligned(x, "x");
  const py::ssize_t* sh = x.shape();
  const bool ok = x.ndim() == ndim && (ndim == 2 || sh[0] >= 1) &&
                  sh[ndim - 2] == s.N() && sh[ndim - 1] == s.C();
  if (!ok) {
    std::vector<Index> got(sh, sh + x.ndim());
    throw std::invalid_argument(std::string("x: expected shape ") +
                                (ndim == 3 ? "(steps, N, C) = (steps, " : "(N, C) = (") +
                                std::to_string(s.N()) + ", " + std::to_string(s.C()) + "), got " +
                                shape_str(got));
  }
  return static_cast<const T*>(x.data());
}

// Refuses a stream whose state and one-step workspaces, about N * H * (2G + 4) items, would not
// fit in the machine's memory (and sizes whose products overflow), before anything is allocated.
void check_stream_size(Index batch_size, Index C, Index H, Index G, size_t item) {
  rnnkit::require(batch_size >= 1, "batch_size: expected an int >= 1, got " +
                                       std::to_string(batch_size));
  const double bytes = double(batch_size) * double(H) * double(2 * G + 4) * double(item) +
                       double(G) * double(H) * double(C + H) * 2.0 * double(item);
  const double limit = double(physical_memory_bytes());
  if (bytes > limit) {
    std::ostringstream o;
    o << "batch_size: " << batch_size << " needs about " << bytes / double(1 << 30)
      << " GiB for the stream's state and workspaces, more than this machine's "
      << limit / double(1 << 30) << " GiB of memory";
    throw std::invalid_argument(o.str());
  }
}

using rnnkit::tuning::kStreamGilWork;

template <typename T>
void def_stream(py::module_& m, const char* name) {
  using S = rnnkit::Stream<T>;
  py::class_<S>(m, name)
      .def(py::init([](const std::string& kind, const Arr<T>& w_ih, const Arr<T>& w_hh,
                       const OptArr<T>& b_ih, const OptArr<T>& b_hh, Index batch_size,
                       const std::string& act, const std::string& rec, const OptArr<T>& w_hr,
                       double zh_p, double zc_p, const OptArr<T>& gx, const OptArr<T>& gh,
                       const OptArr<T>& gc, const OptArr<T>& bc, const std::string& precision) {
             const rnnkit::CellKind k = kind == "LSTM"      ? rnnkit::CellKind::LSTM
                                        : kind == "GRU"     ? rnnkit::CellKind::GRU
                                        : kind == "GRU_V1"  ? rnnkit::CellKind::GRUv1
                                        : kind == "LSTM_LN" ? rnnkit::CellKind::LSTMLN
                                        : kind == "GRU_LN"  ? rnnkit::CellKind::GRULN
                                                            : rnnkit::CellKind::RNN;
             rnnkit::require(kind == "LSTM" || kind == "GRU" || kind == "GRU_V1" || kind == "RNN" ||
                                 kind == "LSTM_LN" || kind == "GRU_LN",
                             "kind: expected 'RNN', 'LSTM', 'GRU', 'GRU_V1', 'LSTM_LN' or 'GRU_LN', got '" +
                                 kind + "'");
             const bool ln_kind = k == rnnkit::CellKind::LSTMLN || k == rnnkit::CellKind::GRULN;
             rnnkit::require(ln_kind == bool(gx) && ln_kind == bool(gh),
                             "gamma_x, gamma_h: expected for a LayerNorm stream only");
             rnnkit::require(!ln_kind || (zh_p == 0.0 && zc_p == 0.0 && !w_hr),
                             "zoneout, w_hr: a LayerNorm stream has neither");
             rnnkit::require(k != rnnkit::CellKind::GRUv1 || !b_hh,
                             "b_hh: the GRU with reset_after=False has no recurrent bias, expected None");
             rnnkit::require(!w_hr || k == rnnkit::CellKind::LSTM,
                             "w_hr: only an LSTM has a projection, this is " + kind);
             rnnkit::require(x_dims_ok(w_ih), "w_ih: expected 2 dimensions");
             rnnkit::require(w_hh.ndim() == 2, "w_hh: expected 2 dimensions");
             const Index G = rnnkit::gates_of(k);
             rnnkit::require(!w_hr || w_hr->ndim() == 2, "w_hr: expected 2 dimensions [P, H]");
             check_stream_size(batch_size, w_ih.shape(1), w_hr ? w_hr->shape(1) : w_hh.shape(1), G,
                               sizeof(T));
             // sizes from the weights; a one-step x of [batch, C] checks them all
             Arr<T> x(std::vector<py::ssize_t>{1, batch_size, w_ih.shape(1)});
             const auto d = dims_of(x, w_ih, w_hh, b_ih, b_hh, G, w_hr);
             rnnkit::LnParams<T> ln{};
             if (ln_kind) ln = ln_params(*gx, *gh, gc, bc, d, G, k == rnnkit::CellKind::LSTMLN);
             const auto zh = zoneout_of<T>(std::nullopt, zh_p, {}, "zoneout_h");
             const auto zc = zoneout_of<T>(std::nullopt, zc_p, {}, "zoneout_c");
             rnnkit::require(zh_p == 0.0 || k != rnnkit::CellKind::RNN,
                             "zoneout_h: an RNN stream has no zoneout");
             rnnkit::require(zc_p == 0.0 || k == rnnkit::CellKind::LSTM,
                             "zoneout_c: only an LSTM has a cell state");
             rnnkit::require(precision == "float32" || precision == "bfloat16" || precision == "int8",
                             "precision: expected 'float32', 'bfloat16' or 'int8', got '" + precision + "'");
             rnnkit::require(precision == "float32" || sizeof(T) == 4,
                             "precision: reduced precision needs float32 weights, got float64");
             const auto prec = precision == "int8"       ? rnnkit::WeightPrecision::INT8
                               : precision == "bfloat16" ? rnnkit::WeightPrecision::BF16
                                                         : rnnkit::WeightPrecision::F32;
             return new S(k, parse_acts(act, rec), d.C, d.H, d.N, w_ih.data(), w_hh.data(), ptr(b_ih),
                          ptr(b_hh), ptr(w_hr), d.P, zh.p, zc.p, ln, prec);
           }),
           py::arg("kind"), py::arg("w_ih").noconvert(), py::arg("w_hh").noconvert(),
           py::arg("b_ih").noconvert(), py::arg("b_hh").noconvert(), py::arg("batch_size"),
           py::arg("activation") = "tanh", py::arg("recurrent_activation") = "sigmoid",
           py::arg("w_hr").noconvert() = py::none(), py::arg("zoneout_h_p") = 0.0,
           py::arg("zoneout_c_p") = 0.0, py::arg("gamma_x").noconvert() = py::none(),
           py::arg("gamma_h").noconvert() = py::none(), py::arg("gamma_c").noconvert() = py::none(),
           py::arg("beta_c").noconvert() = py::none(), py::arg("precision") = "float32")
      // step(x: [N, C]) -> h: [N, H]
      .def("step",
           [](S& s, const py::array& x) {
             const T* xp = stream_input<T>(x, s, 2);
             Arr<T> y({s.N(), s.state_size()});
             T* yp = y.mutable_data();
             // one step: not interruptible (it is over in microseconds)
             if (s.N() * s.H() * (s.C() + s.H()) < kStreamGilWork) {
               s.run(xp, 1, yp);
             } else {
               py::gil_scoped_release nogil;
               s.run(xp, 1, yp);
             }
             return y;
           },
           py::arg("x"))
      // run(x: [steps, N, C]) -> y: [steps, N, H]
      .def("run",
           [](S& s, const py::array& x) {
             const T* xp = stream_input<T>(x, s, 3);
             const Index steps = x.shape(0);
             auto y = empty<T>({steps, s.N(), s.state_size()});
             T* yp = y.mutable_data();
             KernelCall call;
             bool completed;
             if (steps * s.N() * s.H() * (s.C() + s.H()) < kStreamGilWork) {
               completed = s.run(xp, steps, yp);
             } else {
               py::gil_scoped_release nogil;
               completed = s.run(xp, steps, yp);
             }
             call.finish(completed);  // an interrupted chunk leaves the carried state unchanged
             return y;
           },
           py::arg("x"))
      .def("reset",
           [](S& s, const OptArr<T>& h0, const OptArr<T>& c0) {
             check_opt(h0, {s.N(), s.state_size()}, "h0");
             check_opt(c0, {s.N(), s.H()}, "c0");
             s.reset(ptr(h0), ptr(c0));
           },
           py::arg("h0").noconvert() = py::none(), py::arg("c0").noconvert() = py::none())
      .def_property_readonly("h", [](const S& s) { return Arr<T>(empty_like_mat(s.h())); })
      .def_property_readonly("c", [](const S& s) { return Arr<T>(empty_like_mat(s.c())); })
      .def_property_readonly("batch_size", &S::N)
      .def_property_readonly("precision", [](const S& s) {
        return std::string(s.precision() == rnnkit::WeightPrecision::INT8   ? "int8"
                           : s.precision() == rnnkit::WeightPrecision::BF16 ? "bfloat16"
                                                                            : "float32");
      })
      .def_property_readonly("input_size", &S::C)
      .def_property_readonly("hidden_size", &S::H)
      .def_property_readonly("state_size", &S::state_size);
}

// Row-wise helpers over the last axis of x: [..., K] (C-contiguous, K >= 1), see rows.h.
template <typename T>
std::pair<Index, Index> rows_of(const Arr<T>& x, const char* name) {
  rnnkit::require(x.ndim() >= 1, std::string(name) + ": expected at least 1 dimension, got 0");
  check_aligned(x, name);
  const Index K = x.shape(x.ndim() - 1);
  rnnkit::require(K >= 1, std::string(name) + ": the last axis must not be empty");
  return {Index(x.size()) / K, K};
}

template <typename T>
Arr<T> softmax_rows(const Arr<T>& x) {
  const auto [M, K] = rows_of(x, "x");
  Arr<T> out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  const T* xp = x.data();
  T* op = out.mutable_data();
  py::gil_scoped_release release;
  rnnkit::softmax_rows(xp, M, K, op);
  return out;
}

template <typename T>
Arr<T> sum_rows(const Arr<T>& x) {
  const auto [M, K] = rows_of(x, "x");
  Arr<T> out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim() - 1));
  rnnkit::sum_rows(x.data(), M, K, out.mutable_data());
  return out;
}

template <typename T>
Arr<T> erf_all(const Arr<T>& x) {
  check_aligned(x, "x");
  Arr<T> out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  rnnkit::erf_all(x.data(), Index(x.size()), out.mutable_data());
  return out;
}

template <typename T>
py::array_t<std::int64_t> argmax_rows(const Arr<T>& x) {
  const auto [M, K] = rows_of(x, "x");
  py::array_t<std::int64_t> out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim() - 1));
  rnnkit::argmax_rows(x.data(), M, K, out.mutable_data());
  return out;
}

// One Adam step in place: var, grad, m, v (and v_hat for AMSGrad): one shape, C-contiguous.
template <typename T>
void adam_update(Arr<T> var, const Arr<T>& grad, Arr<T> m, Arr<T> v, OptArr<T> v_hat, double alpha,
                 double b1, double b2, double eps) {
  const std::vector<Index> shape(var.shape(), var.shape() + var.ndim());
  check_shape(var, shape, "var");
  check_shape(grad, shape, "grad");
  check_shape(m, shape, "m");
  check_shape(v, shape, "v");
  check_opt(v_hat, shape, "v_hat");
  rnnkit::require(var.writeable() && m.writeable() && v.writeable() &&
                      (!v_hat || v_hat->writeable()),
                  "var, m, v, v_hat: expected writeable arrays");
  rnnkit::adam_update<T>(Index(var.size()), var.mutable_data(), grad.data(), m.mutable_data(),
                         v.mutable_data(), mptr(v_hat), T(alpha), T(b1), T(b2), T(eps));
}

// Whether `h` is a C-contiguous, aligned ndarray of T with `size` items (writeable if asked).
template <typename T>
T* usable(const py::handle& h, py::ssize_t size, bool writeable) {
  if (!py::isinstance<py::array>(h)) return nullptr;
  py::array a = py::reinterpret_borrow<py::array>(h);
  if (!a.dtype().is(py::dtype::of<T>()) || !(a.flags() & py::array::c_style) || a.size() != size ||
      (writeable && !a.writeable()) ||
      reinterpret_cast<std::uintptr_t>(a.data()) % sizeof(T) != 0)
    return nullptr;
  return static_cast<T*>(const_cast<void*>(a.data()));
}

template <typename T>
bool adam_update_many_t(const py::list& vars, const py::list& grads, const py::list& ms,
                        const py::list& vs, const py::object& v_hats, double alpha, double b1,
                        double b2, double eps) {
  const size_t n = py::len(vars);
  const bool ams = !v_hats.is_none();
  std::vector<std::array<T*, 5>> p(n);
  std::vector<Index> sizes(n);
  for (size_t i = 0; i < n; ++i) {
    py::array v = py::reinterpret_borrow<py::array>(vars[i]);
    const py::ssize_t size = v.size();
    for (py::handle h : {grads[i], ms[i], vs[i]}) {
      py::array a = py::reinterpret_borrow<py::array>(h);
      if (!py::isinstance<py::array>(h) || a.ndim() != v.ndim() ||
          !std::equal(a.shape(), a.shape() + a.ndim(), v.shape()))
        return false;
    }
    p[i] = {usable<T>(vars[i], size, true), usable<T>(grads[i], size, false), usable<T>(ms[i], size, true),
            usable<T>(vs[i], size, true), ams ? usable<T>(v_hats.cast<py::list>()[i], size, true) : nullptr};
    if (!p[i][0] || !p[i][1] || !p[i][2] || !p[i][3] || (ams && !p[i][4])) return false;
    sizes[i] = Index(size);
  }
  for (size_t i = 0; i < n; ++i)
    rnnkit::adam_update<T>(sizes[i], p[i][0], p[i][1], p[i][2], p[i][3], p[i][4], T(alpha), T(b1),
                           T(b2), T(eps));
  return true;
}

// One Adam step over many variables in one call (torch's "foreach"): var, grad, m, v (v_hat)
// lists of equal length. Returns False, touching nothing, unless every array is an aligned
// C-contiguous float32 (or every one float64) ndarray of its variable's shape (writeable where
// updated); the caller then updates variable by variable.
bool adam_update_many(const py::list& vars, const py::list& grads, const py::list& ms,
                      const py::list& vs, const py::object& v_hats, double alpha, double b1,
                      double b2, double eps) {
  const size_t n = py::len(vars);
  if (py::len(grads) != n || py::len(ms) != n || py::len(vs) != n ||
      (!v_hats.is_none() && (!py::isinstance<py::list>(v_hats) || py::len(v_hats) != n)))
    return false;
  if (n == 0) return true;
  if (!py::isinstance<py::array>(vars[0])) return false;
  const py::dtype dt = py::reinterpret_borrow<py::array>(vars[0]).dtype();
  if (dt.is(py::dtype::of<float>()))
    return adam_update_many_t<float>(vars, grads, ms, vs, v_hats, alpha, b1, b2, eps);
  if (dt.is(py::dtype::of<double>()))
    return adam_update_many_t<double>(vars, grads, ms, vs, v_hats, alpha, b1, b2, eps);
  return false;
}

template <typename T>
void def_kernels(py::module_& m) {
  m.def("adam_update", &adam_update<T>, py::arg("var").noconvert(), py::arg("grad").noconvert(),
        py::arg("m").noconvert(), py::arg("v").noconvert(), py::arg("v_hat").noconvert(),
        py::arg("alpha"), py::arg("b1"), py::arg("b2"), py::arg("eps"));
  m.def("softmax_rows", &softmax_rows<T>, py::arg("x").noconvert());
  m.def("sum_rows", &sum_rows<T>, py::arg("x").noconvert());
  m.def("argmax_rows", &argmax_rows<T>, py::arg("x").noconvert());
  m.def("erf", &erf_all<T>, py::arg("x").noconvert());
  m.def("lstm_forward", &lstm_forward<T>, py::arg("x").noconvert(), py::arg("h0").noconvert(),
        py::arg("c0").noconvert(), py::arg("w_ih").noconvert(), py::arg("w_hh").noconvert(),
        py::arg("b_ih").noconvert(), py::arg("b_hh").noconvert(), py::arg("mask").noconvert(), py::arg("rd").noconvert(),
        py::arg("reverse"), py::arg("zero_masked"), py::arg("activation") = "tanh", py::arg("recurrent_activation") = "sigmoid",
        py::arg("w_hr").noconvert() = py::none(), py::arg("zoneout_h").noconvert() = py::none(), py::arg("zoneout_h_p") = 0.0, py::arg("zoneout_c").noconvert() = py::none(), py::arg("zoneout_c_p") = 0.0);
  m.def("lstm_backward", &lstm_backward<T>, py::arg("x").noconvert(), py::arg("w_ih").noconvert(),
        py::arg("w_hh").noconvert(), py::arg("mask").noconvert(), py::arg("rd").noconvert(), py::arg("reverse"),
        py::arg("zero_masked"), py::arg("S").noconvert(), py::arg("Cs").noconvert(),
        py::arg("gates").noconvert(), py::arg("dy").noconvert(), py::arg("dh_n").noconvert(),
        py::arg("dc_n").noconvert(), py::arg("need_dx"), py::arg("activation") = "tanh", py::arg("recurrent_activation") = "sigmoid",
        py::arg("w_hr").noconvert() = py::none(), py::arg("M").noconvert() = py::none(), py::arg("zoneout_h").noconvert() = py::none(), py::arg("zoneout_h_p") = 0.0, py::arg("zoneout_c").noconvert() = py::none(), py::arg("zoneout_c_p") = 0.0,
        py::arg("c_new").noconvert() = py::none(), py::arg("dh_norms").noconvert() = py::none());
  m.def("lstm_ln_forward", &lstm_ln_forward<T>, py::arg("x").noconvert(), py::arg("h0").noconvert(),
        py::arg("c0").noconvert(), py::arg("w_ih").noconvert(), py::arg("w_hh").noconvert(),
        py::arg("b_ih").noconvert(), py::arg("b_hh").noconvert(), py::arg("gamma_x").noconvert(),
        py::arg("gamma_h").noconvert(), py::arg("gamma_c").noconvert(), py::arg("beta_c").noconvert(),
        py::arg("mask").noconvert(), py::arg("rd").noconvert(), py::arg("reverse"), py::arg("zero_masked"),
        py::arg("activation") = "tanh", py::arg("recurrent_activation") = "sigmoid");
  m.def("lstm_ln_backward", &lstm_ln_backward<T>, py::arg("x").noconvert(), py::arg("w_ih").noconvert(),
        py::arg("w_hh").noconvert(), py::arg("gamma_x").noconvert(), py::arg("gamma_h").noconvert(),
        py::arg("gamma_c").noconvert(), py::arg("beta_c").noconvert(), py::arg("mask").noconvert(),
        py::arg("rd").noconvert(), py::arg("reverse"), py::arg("zero_masked"), py::arg("S").noconvert(),
        py::arg("Cs").noconvert(), py::arg("gates").noconvert(), py::arg("x_hat").noconvert(),
        py::arg("r_hat").noconvert(), py::arg("c_hat").noconvert(), py::arg("rstd").noconvert(),
        py::arg("dy").noconvert(), py::arg("dh_n").noconvert(), py::arg("dc_n").noconvert(),
        py::arg("need_dx"), py::arg("activation") = "tanh", py::arg("recurrent_activation") = "sigmoid", py::arg("dh_norms").noconvert() = py::none());
  m.def("gru_ln_forward", &gru_ln_forward<T>, py::arg("x").noconvert(), py::arg("h0").noconvert(),
        py::arg("w_ih").noconvert(), py::arg("w_hh").noconvert(), py::arg("b_ih").noconvert(),
        py::arg("b_hh").noconvert(), py::arg("gamma_x").noconvert(), py::arg("gamma_h").noconvert(),
        py::arg("mask").noconvert(), py::arg("rd").noconvert(), py::arg("reverse"), py::arg("zero_masked"),
        py::arg("activation") = "tanh", py::arg("recurrent_activation") = "sigmoid");
  m.def("gru_ln_backward", &gru_ln_backward<T>, py::arg("x").noconvert(), py::arg("w_ih").noconvert(),
        py::arg("w_hh").noconvert(), py::arg("b_hh").noconvert(), py::arg("gamma_x").noconvert(),
        py::arg("gamma_h").noconvert(), py::arg("mask").noconvert(), py::arg("rd").noconvert(),
        py::arg("reverse"), py::arg("zero_masked"), py::arg("S").noconvert(), py::arg("gates").noconvert(),
        py::arg("x_hat").noconvert(), py::arg("r_hat").noconvert(), py::arg("rstd").noconvert(),
        py::arg("dy").noconvert(), py::arg("dh_n").noconvert(), py::arg("need_dx"), py::arg("activation") = "tanh", py::arg("recurrent_activation") = "sigmoid", py::arg("dh_norms").noconvert() = py::none());
  m.def("gru_forward", &gru_forward<T>, py::arg("x").noconvert(), py::arg("h0").noconvert(),
        py::arg("w_ih").noconvert(), py::arg("w_hh").noconvert(), py::arg("b_ih").noconvert(),
        py::arg("b_hh").noconvert(), py::arg("mask").noconvert(), py::arg("rd").noconvert(), py::arg("reverse"),
        py::arg("zero_masked"), py::arg("activation") = "tanh", py::arg("recurrent_activation") = "sigmoid", py::arg("reset_after") = true,
        py::arg("zoneout_h").noconvert() = py::none(), py::arg("zoneout_h_p") = 0.0);
  m.def("gru_backward", &gru_backward<T>, py::arg("x").noconvert(), py::arg("w_ih").noconvert(),
        py::arg("w_hh").noconvert(), py::arg("mask").noconvert(), py::arg("rd").noconvert(), py::arg("reverse"),
        py::arg("zero_masked"), py::arg("S").noconvert(), py::arg("gates").noconvert(),
        py::arg("hn").noconvert(), py::arg("dy").noconvert(), py::arg("dh_n").noconvert(),
        py::arg("need_dx"), py::arg("activation") = "tanh", py::arg("recurrent_activation") = "sigmoid", py::arg("reset_after") = true,
        py::arg("zoneout_h").noconvert() = py::none(), py::arg("zoneout_h_p") = 0.0, py::arg("dh_norms").noconvert() = py::none());
  m.def("rnn_forward", &rnn_forward<T>, py::arg("x").noconvert(), py::arg("h0").noconvert(),
        py::arg("w_ih").noconvert(), py::arg("w_hh").noconvert(), py::arg("b_ih").noconvert(),
        py::arg("b_hh").noconvert(), py::arg("activation"), py::arg("mask").noconvert(), py::arg("rd").noconvert(),
        py::arg("reverse"), py::arg("zero_masked"));
  m.def("rnn_backward", &rnn_backward<T>, py::arg("x").noconvert(), py::arg("w_ih").noconvert(),
        py::arg("w_hh").noconvert(), py::arg("activation"), py::arg("mask").noconvert(), py::arg("rd").noconvert(),
        py::arg("reverse"), py::arg("zero_masked"), py::arg("S").noconvert(),
        py::arg("dy").noconvert(), py::arg("dh_n").noconvert(), py::arg("need_dx"), py::arg("dh_norms").noconvert() = py::none());
}

std::string simd_level() {
#if defined(__AVX512F__)
  return "AVX512";
#elif defined(__AVX2__) && defined(__FMA__)
  return "AVX2+FMA";
#elif defined(__AVX2__)
  return "AVX2";
#elif defined(__AVX__)
  return "AVX";
#elif defined(__SSE4_2__)
  return "SSE4.2";
#elif defined(__SSE2__) || defined(_M_X64)
  return "SSE2";
#elif defined(__ARM_NEON)
  return "NEON";
#else
  return "none";
#endif
}

}  // namespace

// ----------------------------------- fused training step ----------------------------------------

// An array in a list argument, used in place: exactly T, C-contiguous, aligned, of `shape`
// (writeable when it receives a gradient). A list's items are not converted (a silent copy
// would lose the gradients written into it).
template <typename T>
Arr<T> list_array(const py::handle& h, const std::vector<Index>& shape, const std::string& name,
                  bool writeable) {
  // (messages built only on failure: this runs for every weight of every batch)
  if (!py::isinstance<py::array>(h))
    throw std::invalid_argument(name + ": expected a NumPy array, got " +
                                std::string(py::str(py::type::of(h).attr("__name__"))));
  py::array a = py::reinterpret_borrow<py::array>(h);
  if (!a.dtype().is(py::dtype::of<T>()))
    throw std::invalid_argument(name + ": expected dtype " + std::string(py::str(py::dtype::of<T>())) +
                                ", got " + std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style)) throw std::invalid_argument(name + ": expected a C-contiguous array");
  if (writeable && !a.writeable()) throw std::invalid_argument(name + ": expected a writeable array");
  check_shape(a, shape, name.c_str());
  return py::reinterpret_borrow<Arr<T>>(h);
}

// The fused step of rnnkit.models' recurrent stacks (train_step.h), built once per fit.
//   kinds: "rnn" | "lstm" | "gru" per layer; units, activations, recurrent activations and
//   return_sequences per layer.
template <typename T>
void def_trainer(py::module_& m, const char* name) {
  using Trainer = rnnkit::StackTrainer<T>;
  py::class_<Trainer>(m, name)
      .def(py::init([](const std::vector<std::string>& kinds, const std::vector<Index>& units,
                       const std::vector<std::string>& act, const std::vector<std::string>& rec,
                       const std::vector<bool>& seq) {
             const size_t L = kinds.size();
             rnnkit::require(L >= 1 && units.size() == L && act.size() == L && rec.size() == L &&
                                 seq.size() == L,
                             "kinds, units, activations, recurrent_activations, return_sequences: "
                             "expected one entry per layer (at least one layer)");
             std::vector<rnnkit::StackLayer> layers(L);
             for (size_t l = 0; l < L; ++l) {
               const std::string& k = kinds[l];
               rnnkit::require(k == "rnn" || k == "lstm" || k == "gru",
                               "kinds[" + std::to_string(l) + "]: expected 'rnn', 'lstm' or 'gru', got '" + k + "'");
               rnnkit::require(units[l] >= 1, "units[" + std::to_string(l) + "]: expected >= 1");
               rnnkit::require(seq[l] || l + 1 == L,
                               "return_sequences: every layer but the last must return sequences");
               layers[l].kind = k == "rnn" ? rnnkit::CellKind::RNN
                                : k == "lstm" ? rnnkit::CellKind::LSTM : rnnkit::CellKind::GRU;
               layers[l].H = units[l];
               layers[l].acts = parse_acts(act[l], rec[l]);
               layers[l].return_sequences = seq[l];
             }
             return std::make_unique<Trainer>(std::move(layers));
           }),
           py::arg("kinds"), py::arg("units"), py::arg("activations"), py::arg("recurrent_activations"),
           py::arg("return_sequences"))
      .def(
          "step",
          [](Trainer& tr, const Arr<T>& x, const py::list& params, const Arr<T>& w, const OptArr<T>& b,
             Arr<T>& dw, OptArr<T>& db, const OptArr<T>& y, const std::optional<py::array_t<std::int64_t, py::array::c_style>>& labels) {
            const auto& layers = tr.layers();
            const Index L = Index(layers.size());
            rnnkit::require(x.ndim() == 3, "x: expected 3 dimensions [N, T, C], got " + std::to_string(x.ndim()));
            check_aligned(x, "x");
            const Index N = x.shape(0), Ts = x.shape(1), C = x.shape(2);
            rnnkit::require(N >= 1 && Ts >= 1, "x: expected at least one sample and one step");
            rnnkit::require(Index(py::len(params)) == L,
                            "params: expected one entry per layer (" + std::to_string(L) + "), got " +
                                std::to_string(py::len(params)));
            std::vector<rnnkit::StackParams<T>> ps(L);
            std::vector<Arr<T>> keep;  // references for the call's duration
            Index Cl = C;
            for (Index l = 0; l < L; ++l) {
              const std::string pre = "params[" + std::to_string(l) + "]";
              py::tuple t = py::reinterpret_borrow<py::tuple>(params[l]);
              rnnkit::require(py::isinstance<py::tuple>(params[l]) && py::len(t) == 8,
                              pre + ": expected a tuple (w_ih, w_hh, b_ih, b_hh, dw_ih, dw_hh, db_ih, db_hh)");
              const Index GH = layers[l].gates() * layers[l].H, H = layers[l].H;
              const char* names[8] = {"w_ih", "w_hh", "b_ih", "b_hh", "dw_ih", "dw_hh", "db_ih", "db_hh"};
              const std::vector<Index> shapes[8] = {{GH, Cl}, {GH, H}, {GH}, {GH}, {GH, Cl}, {GH, H}, {GH}, {GH}};
              T* ptrs[8] = {};
              for (int i = 0; i < 8; ++i) {
                if (t[i].is_none()) {
                  rnnkit::require(i == 2 || i == 3 || i == 6 || i == 7, pre + "." + names[i] + ": expected an array, got None");
                  continue;
                }
                keep.push_back(list_array<T>(t[i], shapes[i], pre + "." + names[i], i >= 4));
                ptrs[i] = keep.back().mutable_data();
              }
              rnnkit::require((ptrs[2] == nullptr) == (ptrs[6] == nullptr) && (ptrs[3] == nullptr) == (ptrs[7] == nullptr),
                              pre + ": a bias and its gradient must both be given or both be None");
              ps[l] = {ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], ptrs[5], ptrs[6], ptrs[7]};
              Cl = H;
            }
            rnnkit::require(w.ndim() == 2 && w.shape(0) == Cl,
                            "w: expected shape [" + std::to_string(Cl) + ", K] (the output layer's kernel)");
            const Index K = w.shape(1);
            check_shape(w, {Cl, K}, "w");
            check_opt(b, {K}, "b");
            check_shape(dw, {Cl, K}, "dw");
            check_opt(db, {K}, "db");
            rnnkit::require(dw.writeable() && (!db || db->writeable()), "dw, db: expected writeable arrays");
            rnnkit::require(bool(b) == bool(db), "b, db: both or neither");
            rnnkit::require(bool(y) != bool(labels), "y, labels: expected exactly one of them");
            const bool seq = layers.back().return_sequences;
            const std::vector<Index> lead = seq ? std::vector<Index>{N, Ts} : std::vector<Index>{N};
            rnnkit::StepTargets<T> tg;
            if (y) {
              std::vector<Index> ys = lead;
              ys.push_back(K);
              check_shape(*y, ys, "y");
              tg.dense = y->data();
            } else {
              check_shape(*labels, lead, "labels");
              const std::int64_t* lp = labels->data();
              for (Index i = 0; i < labels->size(); ++i)
                rnnkit::require(lp[i] >= 0 && lp[i] < K, "labels: expected class labels in [0, " +
                                                             std::to_string(K) + "), got " + std::to_string(lp[i]));
              tg.labels = lp;
            }
            KernelCall call;
            rnnkit::StepResult r;
            {
              py::gil_scoped_release nogil;
              r = tr.step(N, Ts, C, x.data(), ps, w.data(), ptr(b), dw.mutable_data(), mptr(db), K, tg);
            }
            call.finish(r.completed);
            return py::make_tuple(r.loss_sum, r.correct, r.rows);
          },
          py::arg("x").noconvert(), py::arg("params"), py::arg("w").noconvert(), py::arg("b").noconvert(),
          py::arg("dw").noconvert(), py::arg("db").noconvert(), py::arg("y").noconvert() = py::none(),
          py::arg("labels").noconvert() = py::none());
}

PYBIND11_MODULE(_core, m) {
  m.doc() = "rnnkit's compiled kernels (private: use rnnkit.functional).";
  {
    PythonSignals& ps = python_signals();
    // _signal.getsignal returns the handler as stored (signal.getsignal converts it to an enum
    // first, ~10 us per kernel call)
    py::module_ signal = py::module_::import("_signal");
    ps.main_thread = py::module_::import("threading")
                         .attr("main_thread")()
                         .attr("ident")
                         .cast<unsigned long>();
    ps.getsignal = signal.attr("getsignal");
    ps.default_handler = signal.attr("default_int_handler");
    ps.sigint = signal.attr("SIGINT");
  }
  // all parallelism is rnnkit's own (leased), never Eigen's
  Eigen::setNbThreads(1);
  // test hook: the most threads the calling thread's last kernel call used (see core.h)
  m.def("_threads_of_last_call", []() { return rnnkit::widest_lease_here(); });
  // test hook: whether a SIGINT now reaches the kernels (see interrupt.h)
  m.def("_watch_sigint", &rnnkit::watch_sigint);
  def_kernels<float>(m);
  def_kernels<double>(m);
  def_stream<float>(m, "StreamF32");
  def_stream<double>(m, "StreamF64");
  m.def("adam_update_many", &adam_update_many, py::arg("vars"), py::arg("grads"), py::arg("m"),
        py::arg("v"), py::arg("v_hat"), py::arg("alpha"), py::arg("b1"), py::arg("b2"), py::arg("eps"));
  def_trainer<float>(m, "StackTrainerF32");
  def_trainer<double>(m, "StackTrainerF64");
  m.def(
      "set_num_threads",
      [](long long n) {
        rnnkit::require(n >= 1 && n <= rnnkit::max_threads(),
                        "n: expected an int in [1, " + std::to_string(rnnkit::max_threads()) +
                            "] (4x the cores), got " + std::to_string(n));
        rnnkit::set_num_threads(static_cast<int>(n));
      },
      py::arg("n"));
  m.def("max_threads", &rnnkit::max_threads);
  m.def("get_num_threads", &rnnkit::num_threads);
  // test hook: force how every time loop shares its steps among threads (see core.h LoopPlan)
  m.def(
      "_set_loop_plan",
      [](const std::string& mode) {
        using M = rnnkit::LoopPlanMode;
        M m = mode == "auto" ? M::Auto : mode == "serial" ? M::Serial
            : mode == "rows" ? M::Rows : mode == "columns" ? M::Columns : M(-1);
        rnnkit::require(m != M(-1), "mode must be 'auto', 'serial', 'rows' or 'columns', got '" +
                                        mode + "'");
        rnnkit::forced_loop_plan().store(m);
      },
      py::arg("mode"));
  m.def("build_info", []() {
    py::dict info;
    info["simd"] = simd_level();
    info["eigen_simd"] = std::string(Eigen::SimdInstructionSetsInUse());
    // how an int8 stream multiplies (gemm.h): "vnni" quantizes each row of the left operand
    // dynamically and multiplies in int8; "widen" widens the int8 weights to float
#if defined(RNNKIT_GEMM_VNNI)
    info["int8_kernel"] = "vnni";
#else
    info["int8_kernel"] = "widen";
#endif
#ifdef _OPENMP
    info["openmp"] = true;
#else
    info["openmp"] = false;
#endif
    info["num_threads"] = rnnkit::num_threads();
    info["eigen_version"] = std::to_string(EIGEN_WORLD_VERSION) + "." +
                            std::to_string(EIGEN_MAJOR_VERSION) + "." +
                            std::to_string(EIGEN_MINOR_VERSION);
    return info;
  });
}
