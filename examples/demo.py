"""A 30-second tour of rnnkit's kernels: LSTM, GRU and RNN forward + backward on random data.

Prints shapes, timings and (when PyTorch is installed) the largest difference to torch.nn.LSTM on
the same weights. Run: python examples/demo.py
"""
from __future__ import annotations

import time

import numpy as np

import rnnkit
from rnnkit import functional as F
from rnnkit.streaming import LSTMStream


def median_ms(fn, repeats: int = 7) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def main() -> None:
    info = rnnkit.build_info()
    print(f"rnnkit {rnnkit.__version__}: SIMD {info['simd']}, OpenMP {info['openmp']}, "
          f"{info['num_threads']} threads, Eigen {info['eigen_version']}")
    T, N, C, H = 100, 64, 256, 256
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, N, C), dtype=np.float32)
    k = 1 / np.sqrt(H)

    def weights(G: int):
        return [rng.uniform(-k, k, s).astype(np.float32) for s in ((G * H, C), (G * H, H), (G * H,), (G * H,))]

    print(f"\nx: [T, N, C] = {list(x.shape)}, H = {H}, float32")
    print(f"{'cell':5} {'forward ms':>11} {'fwd+bwd ms':>11} {'GFLOP/s (train)':>16}")
    for name, G in (("LSTM", 4), ("GRU", 3), ("RNN", 1)):
        w = weights(G)
        dy = np.ones((T, N, H), np.float32)
        if name == "LSTM":
            fwd = lambda: F.lstm_forward(x, None, None, *w)
            bwd = lambda o: F.lstm_backward(o.cache, dy)
        elif name == "GRU":
            fwd = lambda: F.gru_forward(x, None, *w)
            bwd = lambda o: F.gru_backward(o.cache, dy)
        else:
            fwd = lambda: F.rnn_forward(x, None, *w)
            bwd = lambda o: F.rnn_backward(o.cache, dy)
        t_f = median_ms(fwd)
        t_fb = median_ms(lambda: bwd(fwd()))
        flops = 3 * 2 * T * N * (C + H) * G * H
        print(f"{name:5} {t_f:11.2f} {t_fb:11.2f} {flops / t_fb / 1e6:16.1f}")

    w = weights(4)
    out = F.lstm_forward(x, None, None, *w)
    grads = F.lstm_backward(out.cache, np.ones_like(out.y))
    print("\nLSTM outputs:", {k_: list(v.shape) for k_, v in (("y", out.y), ("h_n", out.h_n), ("c_n", out.c_n))})
    print("LSTM gradients:", {f: list(getattr(grads, f).shape) for f in grads._fields
                              if getattr(grads, f) is not None})  # (dw_hr: only with a projection)

    try:
        import torch
    except ImportError:
        print("\n(PyTorch not installed: skipping the comparison)")
    else:
        m = torch.nn.LSTM(C, H)
        with torch.no_grad():
            for p, a in zip((m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0), w):
                p.copy_(torch.from_numpy(a))
            y_t, _ = m(torch.from_numpy(x))
        print(f"\nmax |rnnkit - torch.nn.LSTM| on the same weights: {np.abs(out.y - y_t.numpy()).max():.2e}")

    # streaming at batch 1 with the state carried in C++ (the size of a small speech/sensor model)
    Cs, Hs = 64, 128
    ks = 1 / np.sqrt(Hs)
    s = LSTMStream(*[rng.uniform(-ks, ks, sh).astype(np.float32) for sh in ((4 * Hs, Cs), (4 * Hs, Hs))])
    frame = rng.standard_normal((1, Cs), dtype=np.float32)
    n = 5000
    for _ in range(100):
        s.step(frame)
    t0 = time.perf_counter()
    for _ in range(n):
        s.step(frame)
    print(f"streaming LSTMStream.step at batch 1 (C={Cs}, H={Hs}): "
          f"{(time.perf_counter() - t0) / n * 1e6:.1f} µs per step")


if __name__ == "__main__":
    main()
