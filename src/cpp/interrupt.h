// Ctrl-C during a kernel: a C-level SIGINT handler chained in front of the current one (Python's).
//
// While a kernel runs, the GIL is released and Python's own handler only records the signal; the
// KeyboardInterrupt would come after the kernel returns, seconds or minutes later. The chained
// handler also raises rnnkit's interrupt_flag() (core.h), which every time loop polls once per
// step, then calls the previous handler, so Python still sees the signal as usual.
// POSIX only; elsewhere watch_sigint() returns false and kernels run to the end.
#pragma once

#include "core.h"

#if defined(__unix__) || defined(__APPLE__)
#include <csignal>
#define RNNKIT_HAS_SIGACTION 1
#endif

namespace rnnkit {

#ifdef RNNKIT_HAS_SIGACTION
namespace detail {

// The action that was installed before ours (set only while ours is not installed).
inline struct sigaction& previous_sigint() {
  static struct sigaction a {};
  return a;
}

// Async-signal-safe: one lock-free atomic store, then the previous handler.
inline void on_sigint(int sig, siginfo_t* info, void* uctx) {
  interrupt_flag().store(true, std::memory_order_relaxed);
  const struct sigaction& prev = previous_sigint();
  if (prev.sa_flags & SA_SIGINFO) {
    if (prev.sa_sigaction) prev.sa_sigaction(sig, info, uctx);
  } else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN && prev.sa_handler) {
    prev.sa_handler(sig);
  }
}

}  // namespace detail
#endif

// Makes sure a SIGINT raises interrupt_flag(): (re)installs the chained handler when the current
// action is some other function (Python replaces it whenever signal.signal() is called). Returns
// false when SIGINT is ignored or has its default action (then nothing is to be interrupted).
inline bool watch_sigint() {
#ifdef RNNKIT_HAS_SIGACTION
  interrupt_flag();  // the flag exists before any handler can touch it
  struct sigaction cur {};
  if (sigaction(SIGINT, nullptr, &cur) != 0) return false;
  if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == detail::on_sigint) return true;
  if (!(cur.sa_flags & SA_SIGINFO) && (cur.sa_handler == SIG_DFL || cur.sa_handler == SIG_IGN))
    return false;
  detail::previous_sigint() = cur;
  struct sigaction ours = cur;  // the same mask and flags (SA_ONSTACK, ...)
  ours.sa_flags |= SA_SIGINFO;
  ours.sa_sigaction = detail::on_sigint;
  return sigaction(SIGINT, &ours, nullptr) == 0;
#else
  return false;
#endif
}

}  // namespace rnnkit
