"""Type stub of rnnkit's compiled kernels (``src/cpp/bindings.cpp``). Private: use
:mod:`rnnkit.functional`, :mod:`rnnkit.streaming` and the layers.

Every array argument must be a C-contiguous, aligned NumPy array of the call's dtype (float32 or
float64, taken from ``x``); anything else raises ValueError/TypeError (no conversion here).

Shapes: ``T`` steps, ``N`` batch, ``C`` inputs, ``H`` hidden units, ``G`` gates (1, 4, 3).
"""
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]
Mask = Optional[NDArray[np.bool_]]

# activation: 'tanh' | 'relu' | 'linear'; recurrent_activation: 'sigmoid' | 'hard_sigmoid'
# x: [T, N, C], h0: [N, H], w_ih: [H, C], w_hh: [H, H], b: [H], mask: [T, N], rd: [N, H]
# -> y: [T, N, H], S: [T+1, N, H]
def rnn_forward(x: Array, h0: Optional[Array], w_ih: Array, w_hh: Array, b_ih: Optional[Array],
                b_hh: Optional[Array], activation: str, mask: Mask, rd: Optional[Array], reverse: bool,
                zero_masked: bool) -> Tuple[Array, Array]: ...
# -> dx: [T, N, C] or None, dh0: [N, H], dw_ih: [H, C], dw_hh: [H, H], db: [H]
def rnn_backward(x: Array, w_ih: Array, w_hh: Array, activation: str, mask: Mask, rd: Optional[Array],
                 reverse: bool, zero_masked: bool, S: Array, dy: Array, dh_n: Optional[Array],
                 need_dx: bool) -> Tuple[Optional[Array], Array, Array, Array, Array]: ...
# x: [T, N, C], h0, c0: [N, H], w_ih: [4H, C], w_hh: [4H, H], b: [4H]
# -> y: [T, N, H], S, Cs: [T+1, N, H], gates: [T, N, 4H], M: None
# with a projection w_hr: [P, H]: w_hh: [4H, P], h0, y, S: [.., P], M: [T, N, H] (o ⊙ φ(c)),
# and backward also returns dw_hr: [P, H] (else None)
# zoneout of h / c: a mask [T, N, Hs] / [T, N, H] (training) or a probability *_p (inference);
# with zoneout of c the forward also returns c_new: [T, N, H] (c before zoneout; else None)
def lstm_forward(x: Array, h0: Optional[Array], c0: Optional[Array], w_ih: Array, w_hh: Array,
                 b_ih: Optional[Array], b_hh: Optional[Array], mask: Mask, rd: Optional[Array],
                 reverse: bool, zero_masked: bool, activation: str = "tanh",
                 recurrent_activation: str = "sigmoid", w_hr: Optional[Array] = None,
                 zoneout_h: Optional[Array] = None, zoneout_h_p: float = 0.0,
                 zoneout_c: Optional[Array] = None, zoneout_c_p: float = 0.0
                 ) -> Tuple[Array, Array, Array, Array, Optional[Array], Optional[Array]]: ...
# -> dx: [T, N, C] or None, dh0, dc0: [N, H], dw_ih: [4H, C], dw_hh: [4H, H], db: [4H]
def lstm_backward(x: Array, w_ih: Array, w_hh: Array, mask: Mask, rd: Optional[Array], reverse: bool,
                  zero_masked: bool, S: Array, Cs: Array, gates: Array, dy: Array, dh_n: Optional[Array],
                  dc_n: Optional[Array], need_dx: bool, activation: str = "tanh",
                  recurrent_activation: str = "sigmoid", w_hr: Optional[Array] = None,
                  M: Optional[Array] = None, zoneout_h: Optional[Array] = None,
                  zoneout_h_p: float = 0.0, zoneout_c: Optional[Array] = None,
                  zoneout_c_p: float = 0.0, c_new: Optional[Array] = None) -> Tuple[Optional[Array], Array, Array, Array, Array, Array]: ...
# x: [T, N, C], h0: [N, H], w_ih: [3H, C], w_hh: [3H, H], b: [3H]
# -> y: [T, N, H], S: [T+1, N, H], gates: [T, N, 3H], hn: [T, N, H]
def gru_forward(x: Array, h0: Optional[Array], w_ih: Array, w_hh: Array, b_ih: Optional[Array],
                b_hh: Optional[Array], mask: Mask, rd: Optional[Array], reverse: bool,
                zero_masked: bool, activation: str = "tanh", recurrent_activation: str = "sigmoid",
                reset_after: bool = True, zoneout_h: Optional[Array] = None,
                zoneout_h_p: float = 0.0) -> Tuple[Array, Array, Array, Array]: ...
# hn: W_hn h + b_hn (reset_after) or r ⊙ h̃ (reset_after=False, then b_hh must be None)
# -> dx: [T, N, C] or None, dh0: [N, H], dw_ih: [3H, C], dw_hh: [3H, H], db_ih: [3H],
#    db_hh: [3H] (None when reset_after=False)
def gru_backward(x: Array, w_ih: Array, w_hh: Array, mask: Mask, rd: Optional[Array], reverse: bool,
                 zero_masked: bool, S: Array, gates: Array, hn: Array, dy: Array, dh_n: Optional[Array],
                 need_dx: bool, activation: str = "tanh", recurrent_activation: str = "sigmoid",
                 reset_after: bool = True, zoneout_h: Optional[Array] = None, zoneout_h_p: float = 0.0
                 ) -> Tuple[Optional[Array], Array, Array, Array, Array, Optional[Array]]: ...

# LayerNorm LSTM (haste's): gamma_x, gamma_h: [4H], gamma_c, beta_c: [H]
# -> y: [T, N, H], S, Cs: [T+1, N, H], gates, x_hat, r_hat: [T, N, 4H], c_hat: [T, N, H], rstd: [T, N, 3]
def lstm_ln_forward(x: Array, h0: Optional[Array], c0: Optional[Array], w_ih: Array, w_hh: Array,
                    b_ih: Optional[Array], b_hh: Optional[Array], gamma_x: Array, gamma_h: Array,
                    gamma_c: Optional[Array], beta_c: Optional[Array], mask: Mask, rd: Optional[Array],
                    reverse: bool, zero_masked: bool, activation: str = "tanh",
                    recurrent_activation: str = "sigmoid") -> Tuple[Array, ...]: ...
# -> dx or None, dh0, dc0, dw_ih, dw_hh, db, dgamma_x, dgamma_h, dgamma_c, dbeta_c
def lstm_ln_backward(x: Array, w_ih: Array, w_hh: Array, gamma_x: Array, gamma_h: Array,
                     gamma_c: Optional[Array], beta_c: Optional[Array], mask: Mask, rd: Optional[Array],
                     reverse: bool, zero_masked: bool, S: Array, Cs: Array, gates: Array, x_hat: Array,
                     r_hat: Array, c_hat: Array, rstd: Array, dy: Array, dh_n: Optional[Array],
                     dc_n: Optional[Array], need_dx: bool, activation: str = "tanh",
                     recurrent_activation: str = "sigmoid") -> Tuple[Optional[Array], ...]: ...
# LayerNorm GRU (haste's): gamma_x, gamma_h: [3H]
# -> y: [T, N, H], S: [T+1, N, H], gates, x_hat, r_hat: [T, N, 3H], rstd: [T, N, 2]
def gru_ln_forward(x: Array, h0: Optional[Array], w_ih: Array, w_hh: Array, b_ih: Optional[Array],
                   b_hh: Optional[Array], gamma_x: Array, gamma_h: Array, mask: Mask,
                   rd: Optional[Array], reverse: bool, zero_masked: bool, activation: str = "tanh",
                   recurrent_activation: str = "sigmoid") -> Tuple[Array, ...]: ...
# -> dx or None, dh0, dw_ih, dw_hh, db_ih, db_hh, dgamma_x, dgamma_h
def gru_ln_backward(x: Array, w_ih: Array, w_hh: Array, b_hh: Optional[Array], gamma_x: Array,
                    gamma_h: Array, mask: Mask, rd: Optional[Array], reverse: bool, zero_masked: bool,
                    S: Array, gates: Array, x_hat: Array, r_hat: Array, rstd: Array, dy: Array,
                    dh_n: Optional[Array], need_dx: bool, activation: str = "tanh",
                    recurrent_activation: str = "sigmoid") -> Tuple[Optional[Array], ...]: ...

# x: [..., K] -> [..., K] / [...]
def softmax_rows(x: Array) -> Array: ...
def sum_rows(x: Array) -> Array: ...
def argmax_rows(x: Array) -> NDArray[np.int64]: ...
# erf of every entry, same shape
def erf(x: Array) -> Array: ...
# one Adam step in place; every array of var's shape
def adam_update(var: Array, grad: Array, m: Array, v: Array, v_hat: Optional[Array], alpha: float,
                b1: float, b2: float, eps: float) -> None: ...
# the same over lists of variables in one call; False (nothing touched) unless every array is an
# aligned C-contiguous ndarray of one float dtype and its variable's shape (writeable if updated)
def adam_update_many(vars: List[Array], grads: List[Array], m: List[Array], v: List[Array],
                     v_hat: Optional[List[Array]], alpha: float, b1: float, b2: float, eps: float) -> bool: ...

class _StackTrainer:
    """The fused training step of a recurrent stack under a softmax Dense (train_step.h).
    kinds: 'rnn' | 'lstm' | 'gru' (reset_after) per layer; every layer but the last returns
    sequences."""
    def __init__(self, kinds: List[str], units: List[int], activations: List[str],
                 recurrent_activations: List[str], return_sequences: List[bool]) -> None: ...
    # x: [N, T, C] (batch-major); params: per layer (w_ih [G*H, C_l], w_hh [G*H, H], b_ih, b_hh
    # [G*H] or None, then their gradient arrays, written in place); w: [H_L, K], b: [K] or None,
    # dw, db alike; y: [N, T, K] / [N, K] or labels: int64 [N, T] / [N] (exactly one)
    # -> (summed loss over the R rows, rows whose argmax matches, R)
    def step(self, x: Array, params: List[Tuple[Optional[Array], ...]], w: Array, b: Optional[Array],
             dw: Array, db: Optional[Array], y: Optional[Array] = None,
             labels: Optional[NDArray[np.int64]] = None) -> Tuple[float, int, int]: ...

class StackTrainerF32(_StackTrainer): ...
class StackTrainerF64(_StackTrainer): ...

class _Stream:
    """Streaming inference of one cell: weights packed once (in float32, bfloat16 or int8 with
    per-row scales), state carried in C++.
    kind: 'RNN' | 'LSTM' | 'GRU' | 'GRU_V1' (reset_after=False) | 'LSTM_LN' | 'GRU_LN' (LayerNorm)."""
    def __init__(self, kind: str, w_ih: Array, w_hh: Array, b_ih: Optional[Array], b_hh: Optional[Array],
                 batch_size: int, activation: str = "tanh",
                 recurrent_activation: str = "sigmoid", w_hr: Optional[Array] = None,
                 zoneout_h_p: float = 0.0, zoneout_c_p: float = 0.0, gamma_x: Optional[Array] = None,
                 gamma_h: Optional[Array] = None, gamma_c: Optional[Array] = None,
                 beta_c: Optional[Array] = None, precision: str = "float32") -> None: ...
    # x: [N, C] -> h: [N, H]
    def step(self, x: Array) -> Array: ...
    # x: [steps, N, C] -> y: [steps, N, H]
    def run(self, x: Array) -> Array: ...
    def reset(self, h0: Optional[Array] = None, c0: Optional[Array] = None) -> None: ...
    @property
    def h(self) -> Array: ...
    @property
    def c(self) -> Array: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def input_size(self) -> int: ...
    @property
    def hidden_size(self) -> int: ...
    @property
    def state_size(self) -> int: ...
    # the weights' precision: 'float32', 'bfloat16' or 'int8'
    @property
    def precision(self) -> str: ...

class StreamF32(_Stream): ...
class StreamF64(_Stream): ...

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def max_threads() -> int: ...
def build_info() -> Dict[str, Any]: ...
# test hooks
def _set_loop_plan(mode: str) -> None: ...
def _threads_of_last_call() -> int: ...
def _watch_sigint() -> bool: ...
