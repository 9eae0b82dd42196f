r"""GRU with the reset gate applied *before* the recurrent product (Keras ``reset_after=False``),
forward and backward in vectorised NumPy (the compiled kernel implements only the
``reset_after=True`` form).

Same conventions as :mod:`rnnkit.functional` (time-major, PyTorch-style row blocks r, z, n):

.. math::
    \tilde h = h_{t-1} \odot d,\quad
    r, z = \sigma(W_{i\cdot} x_t + b_{i\cdot} + W_{h\cdot} \tilde h),\quad
    n = \phi(W_{in} x_t + b_{in} + W_{hn} (r \odot \tilde h)),\quad
    h_t = (1 - z) \odot n + z \odot h_{t-1}

where ``d`` is the recurrent dropout mask (ones without it), :math:`\phi` the activation and
:math:`\sigma` the recurrent activation (as the fused kernels: tanh/relu/linear and
sigmoid/hard_sigmoid). There is no recurrent bias.

Shapes
------
x: [T, N, C], h0: [N, H], w_ih: [3H, C], w_hh: [3H, H], b_ih: [3H], mask: [T, N] bool,
recurrent_dropout_mask: [N, H] -> y: [T, N, H], h_n: [N, H].
Masks, ``reverse`` and ``zero_output_for_mask`` behave as in :mod:`rnnkit.functional`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np

from rnnkit import activations as _activations
from rnnkit._checks import check_cell_activations

Array = np.ndarray


@dataclass(frozen=True)
class GRUv1Cache:
    """What :func:`gru_v1_backward` needs from :func:`gru_v1_forward`."""
    x: Array                 # [T, N, C]
    w_ih: Array              # [3H, C]
    w_hh: Array              # [3H, H]
    has_bias: bool
    mask: Optional[Array]    # [T, N]
    reverse: bool
    zero_output_for_mask: bool
    rdm: Optional[Array]     # [N, H]
    S: Array                 # [T+1, N, H] S[k] = state before processing step k (in run order)
    gates: Array             # [T, N, 3H] r, z, n of each step, indexed by time
    activation: str = "tanh"
    recurrent_activation: str = "sigmoid"


class GRUv1Output(NamedTuple):
    y: Array
    h_n: Array
    cache: GRUv1Cache


class GRUv1Grads(NamedTuple):
    dx: Array
    dh0: Array
    dw_ih: Array
    dw_hh: Array
    db_ih: Optional[Array]


def gru_v1_forward(x: Array, h0: Optional[Array], w_ih: Array, w_hh: Array, b_ih: Optional[Array], *,
                   mask: Optional[Array] = None, reverse: bool = False, zero_output_for_mask: bool = False,
                   recurrent_dropout_mask: Optional[Array] = None, activation: str = "tanh",
                   recurrent_activation: str = "sigmoid") -> GRUv1Output:
    """Forward pass; the arrays are assumed validated by the caller (same dtype, shapes above)."""
    check_cell_activations(activation, recurrent_activation)
    phi, sig = _activations.get(activation), _activations.get(recurrent_activation)
    T, N, C = x.shape
    H = w_hh.shape[1]
    dt = x.dtype
    gx = (x.reshape(T * N, C) @ w_ih.T).reshape(T, N, 3 * H)
    if b_ih is not None:
        gx += b_ih
    w_rz = w_hh[: 2 * H]
    w_n = w_hh[2 * H:]
    h = np.zeros((N, H), dtype=dt) if h0 is None else np.array(h0, dtype=dt)
    S = np.empty((T + 1, N, H), dtype=dt)
    S[0] = h
    y = np.empty((T, N, H), dtype=dt)
    gates = np.empty((T, N, 3 * H), dtype=dt)
    order = range(T - 1, -1, -1) if reverse else range(T)
    for k, t in enumerate(order):
        hd = h if recurrent_dropout_mask is None else h * recurrent_dropout_mask
        rz = sig(gx[t, :, : 2 * H] + hd @ w_rz.T)
        r = rz[:, :H]
        z = rz[:, H:]
        n = phi(gx[t, :, 2 * H:] + (r * hd) @ w_n.T)
        h_new = (1.0 - z) * n + z * h
        gates[t, :, : 2 * H] = rz
        gates[t, :, 2 * H:] = n
        if mask is not None:
            m = mask[t][:, None]
            h = np.where(m, h_new, h)
            y[t] = np.where(m, h, 0.0) if zero_output_for_mask else h
        else:
            h = h_new
            y[t] = h
        S[k + 1] = h
    cache = GRUv1Cache(x, w_ih, w_hh, b_ih is not None, mask, bool(reverse), bool(zero_output_for_mask),
                       recurrent_dropout_mask, S, gates, activation, recurrent_activation)
    return GRUv1Output(y, h.copy(), cache)


def gru_v1_backward(cache: GRUv1Cache, dy: Array, dh_n: Optional[Array] = None) -> GRUv1Grads:
    """Backpropagation through time for :func:`gru_v1_forward`; returns fresh arrays."""
    x, w_ih, w_hh = cache.x, cache.w_ih, cache.w_hh
    T, N, C = x.shape
    H = w_hh.shape[1]
    dt = x.dtype
    w_rz = w_hh[: 2 * H]
    w_n = w_hh[2 * H:]
    rdm = cache.rdm
    phi = _activations.get(cache.activation)
    sig = _activations.get(cache.recurrent_activation)
    dgx = np.zeros((T, N, 3 * H), dtype=dt)
    dw_hh = np.zeros_like(w_hh)
    dh = np.zeros((N, H), dtype=dt) if dh_n is None else np.array(dh_n, dtype=dt)
    order = list(range(T - 1, -1, -1) if cache.reverse else range(T))
    for k in range(T - 1, -1, -1):
        t = order[k]
        h_prev = cache.S[k]
        hd = h_prev if rdm is None else h_prev * rdm
        r = cache.gates[t, :, :H]
        z = cache.gates[t, :, H:2 * H]
        n = cache.gates[t, :, 2 * H:]
        if cache.mask is None:
            dh_new = dh + dy[t]
            dh_carry = None
        else:
            m = cache.mask[t][:, None]
            g_out = np.where(m, dy[t], 0.0)
            dh_new = np.where(m, dh + g_out, 0.0)
            # masked samples: the state (and, unless zeroed, the output) is h_prev itself
            dh_carry = np.where(m, 0.0, dh + (0.0 if cache.zero_output_for_mask else dy[t]))
        dn_pre = phi.backward(dh_new * (1.0 - z), n)
        dz_pre = sig.backward(dh_new * (h_prev - n), z)
        drh = dn_pre @ w_n                      # d(r * hd)
        dr_pre = sig.backward(drh * hd, r)
        drz = np.concatenate([dr_pre, dz_pre], axis=1)
        dgx[t, :, : 2 * H] = drz
        dgx[t, :, 2 * H:] = dn_pre
        dw_hh[2 * H:] += dn_pre.T @ (r * hd)
        dw_hh[: 2 * H] += drz.T @ hd
        dhd = drh * r + drz @ w_rz
        if rdm is not None:
            dhd = dhd * rdm
        dh = dh_new * z + dhd
        if dh_carry is not None:
            dh = dh + dh_carry
    dgx2 = dgx.reshape(T * N, 3 * H)
    dx = (dgx2 @ w_ih).reshape(T, N, C)
    dw_ih = dgx2.T @ x.reshape(T * N, C)
    db_ih = dgx2.sum(axis=0) if cache.has_bias else None
    return GRUv1Grads(dx, dh, dw_ih, dw_hh, db_ih)
