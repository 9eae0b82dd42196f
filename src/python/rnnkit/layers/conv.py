"""Keras-style convolution layers: :class:`Conv1D`.

The forward is one matrix product: the receptive fields are gathered into an im2col array
``[N * T_out, kernel_size * C_in]`` (a strided view of the zero-padded input, copied once) and
multiplied by the kernel reshaped to ``[kernel_size * C_in, filters]`` (with ``groups > 1``, one
batched product over the groups). The backward takes the kernel gradient from one product
(``cols^T @ dz``) and scatters the column gradients back onto the input, one strided slice per
kernel tap (``kernel_size`` additions, no loop over samples or time steps). A call keeps its
im2col array in its context for the backward: ``kernel_size`` times the (strided) input.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from rnnkit import activations, initializers
from rnnkit._checks import check_data_format, check_int_or_single, check_positive_int, shape_str
from rnnkit.layers.base import Context, Layer, Shape, check_grad

__all__ = ["Conv1D"]

_PADDINGS = ("valid", "same", "causal")
IntOrTuple = Union[int, Sequence[int]]


def conv_output_length(steps: int, kernel_size: int, strides: int, padding: str,
                       dilation_rate: int) -> int:
    """Keras's output length of a 1-D convolution (``compute_conv_output_shape``).

    ``valid``: ``floor((T - dilation_rate * (kernel_size - 1) - 1) / strides) + 1`` (may be <= 0:
    the input is too short); ``same`` and ``causal``: ``ceil(T / strides)``.
    """
    if padding == "valid":
        return (steps - dilation_rate * (kernel_size - 1) - 1) // strides + 1
    return (steps - 1) // strides + 1


def conv_padding(steps: int, kernel_size: int, strides: int, padding: str,
                 dilation_rate: int) -> Tuple[int, int]:
    """The zeros ``(left, right)`` added along time before a ``valid`` convolution.

    ``valid``: none; ``causal``: ``dilation_rate * (kernel_size - 1)`` on the left; ``same``
    (TensorFlow's rule, which every Keras backend follows): ``total = max((T_out - 1) * strides +
    dilation_rate * (kernel_size - 1) + 1 - T, 0)``, ``left = total // 2``, the rest on the right.
    """
    span = dilation_rate * (kernel_size - 1) + 1
    if padding == "valid":
        return 0, 0
    if padding == "causal":
        return span - 1, 0
    t_out = (steps - 1) // strides + 1
    total = max((t_out - 1) * strides + span - steps, 0)
    return total // 2, total - total // 2


class Conv1D(Layer):
    r"""1-D convolution over time (Keras 3's ``Conv1D``: arguments, semantics, weight layout).

    .. math::

        y[n, t, f] = \mathrm{act}\Big(b[f] + \sum_{k=0}^{K-1} \sum_{c=0}^{C_g-1}
            W[k, c, f]\; \tilde x[n,\; t s + k d,\; g(f) C_g + c]\Big)

    with ``K = kernel_size``, ``s = strides``, ``d = dilation_rate``, ``C_g = C_in / groups``,
    ``g(f) = f // (filters / groups)`` (the group of filter ``f``) and :math:`\tilde x` the input
    zero-padded along time (see ``padding``). Like Keras (and unlike PyTorch's ``conv1d``, which
    computes the same thing) this is a cross-correlation: the kernel is not flipped.

    Parameters
    ----------
    filters
        Output channels; divisible by ``groups``.
    kernel_size
        Taps of the kernel (an int or a tuple/list of one int, as in Keras).
    strides
        Step between output positions (int or tuple of one int). ``strides > 1`` together with
        ``dilation_rate > 1`` raises ValueError, as in Keras.
    padding
        ``'valid'`` (no padding), ``'same'`` (zeros on both sides, the extra one on the right;
        ``T_out = ceil(T / strides)``) or ``'causal'`` (``dilation_rate * (kernel_size - 1)`` zeros
        on the left only, so ``y[:, t]`` never depends on ``x[:, t + 1:]``). Case-insensitive.
    data_format
        ``'channels_last'`` (default; also for None, since rnnkit has no Keras config file):
        ``[N, T, C]``; or ``'channels_first'``: ``[N, C, T]`` in and ``[N, filters, T_out]`` out.
    dilation_rate
        Spacing between kernel taps (int or tuple of one int).
    groups
        Splits the input channels and the filters into ``groups`` blocks; block ``g`` of filters
        sees only block ``g`` of the channels. ``C_in`` and ``filters`` must be divisible by it.
    activation
        ``None``/``'linear'``, ``'relu'``, ``'tanh'``, ``'sigmoid'`` or ``'softmax'``. As in Keras
        it acts along the last axis of the output: the filters for ``channels_last``, the time
        steps for ``channels_first``.
    use_bias
        Whether to add a bias.
    kernel_initializer, bias_initializer
        Keras defaults ``'glorot_uniform'`` (fans ``K * C_g`` and ``K * filters``) and ``'zeros'``.
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`Layer`).

    Masks
    -----
    Keras 3's ``Conv1D`` does not support masking: given an input with a mask it warns that the
    mask is destroyed, convolves every step (padding steps included) and hands no mask on. This
    layer does the same: a ``mask`` passed to :meth:`call` raises a ``UserWarning`` naming the
    layer and is otherwise ignored, and :meth:`compute_mask` returns None, so the layers after it
    see every step as valid. Zero the padded steps first (``Masking`` does) and pad on the right,
    or do not put a convolution between a mask and the layers that need it.

    Shapes
    ------
    ``channels_last``: x: [N, T, C_in] -> [N, T_out, filters]; ``channels_first``:
    x: [N, C_in, T] -> [N, filters, T_out], with

    - ``valid``: ``T_out = floor((T - dilation_rate * (kernel_size - 1) - 1) / strides) + 1``
      (ValueError when this is < 1);
    - ``same`` and ``causal``: ``T_out = ceil(T / strides)`` (``T`` with ``strides=1``).

    ``T`` may change from call to call (the layer is built for ``C_in`` only). Parameters (Keras
    layout, also the storage): ``kernel [kernel_size, C_in / groups, filters]``,
    ``bias [filters]``.
    """

    supports_masking = False

    def __init__(self, filters: int, kernel_size: IntOrTuple, strides: IntOrTuple = 1,
                 padding: str = "valid", data_format: Optional[str] = "channels_last",
                 dilation_rate: IntOrTuple = 1, groups: int = 1, activation: Any = None,
                 use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 bias_initializer: Any = "zeros", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        self.kernel_size = check_int_or_single("kernel_size", kernel_size)
        self.strides = check_int_or_single("strides", strides)
        self.dilation_rate = check_int_or_single("dilation_rate", dilation_rate)
        self.groups = check_positive_int("groups", groups)
        if not isinstance(padding, str):
            raise TypeError(f"padding: expected one of {list(_PADDINGS)}, got {type(padding).__name__}")
        if padding.lower() not in _PADDINGS:
            raise ValueError(f"padding: expected one of {list(_PADDINGS)}, got {padding!r}")
        self.padding = padding.lower()
        self.data_format = check_data_format(data_format)
        if self.strides > 1 and self.dilation_rate > 1:
            raise ValueError(f"strides, dilation_rate: strides > 1 is not supported together with "
                             f"dilation_rate > 1 (as in Keras), got strides={self.strides} and "
                             f"dilation_rate={self.dilation_rate}")
        if self.filters % self.groups:
            raise ValueError(f"groups: filters must be divisible by groups, got filters={self.filters} "
                             f"and groups={self.groups}")
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.input_dim: Optional[int] = None

    # ---- shapes ---------------------------------------------------------------------------------
    def _split(self, shape: Sequence[Optional[int]]) -> Tuple[Optional[int], Optional[int], Optional[int]]:
        """``(N, T, C)`` of an input shape in this layer's data format."""
        if self.data_format == "channels_last":
            return shape[0], shape[1], shape[2]
        return shape[0], shape[2], shape[1]

    def _layout(self) -> str:
        return "(batch, steps, channels)" if self.data_format == "channels_last" else "(batch, channels, steps)"

    def _output_length(self, steps: int, what: str) -> int:
        if steps < 1:
            raise ValueError(f"{self.name}: {what}: expected at least 1 time step, got {steps}")
        t_out = conv_output_length(steps, self.kernel_size, self.strides, self.padding, self.dilation_rate)
        if t_out < 1:
            span = self.dilation_rate * (self.kernel_size - 1) + 1
            raise ValueError(f"{self.name}: {what}: {steps} time step(s) are too few for kernel_size="
                             f"{self.kernel_size} with dilation_rate={self.dilation_rate} and "
                             f"padding='valid' (need at least {span})")
        return t_out

    def build(self, input_shape: Shape) -> None:
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"{self.name}: input_shape: expected 3 dimensions {self._layout()}, got "
                             f"{shape_str(input_shape)}")
        _, steps, channels = self._split(input_shape)
        if channels is None:
            raise ValueError(f"{self.name}: input_shape: the channel axis must be known, got "
                             f"{shape_str(input_shape)}")
        self.input_dim = check_positive_int("input channels", channels)
        if self.input_dim % self.groups:
            raise ValueError(f"{self.name}: groups: the input channels must be divisible by groups, got "
                             f"{self.input_dim} channels (input_shape {shape_str(input_shape)}) and "
                             f"groups={self.groups}")
        if steps is not None:
            self._output_length(int(steps), "input_shape")
        self.add_weight("kernel", (self.kernel_size, self.input_dim // self.groups, self.filters),
                        self.kernel_initializer)
        if self.use_bias:
            self.add_weight("bias", (self.filters,), self.bias_initializer)
        self.built = True

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        n, steps, _ = self._split(tuple(input_shape))
        t_out = None if steps is None else self._output_length(int(steps), "input_shape")
        if self.data_format == "channels_last":
            return (n, t_out, self.filters)
        return (n, self.filters, t_out)

    def _out_shape(self, n: int, t_out: int) -> Tuple[int, int, int]:
        return (n, t_out, self.filters) if self.data_format == "channels_last" else (n, self.filters, t_out)

    # ---- forward --------------------------------------------------------------------------------
    def check_inputs(self, inputs: Any) -> np.ndarray:
        """One float array of 3 dimensions (checked before the first call builds the layer, so
        that a wrong input is reported as ``x``, not as the build's ``input_shape``)."""
        x = super().check_inputs(inputs)
        if x.ndim != 3:
            raise ValueError(f"{self.name}: x: expected 3 dimensions {self._layout()}, got shape "
                             f"{shape_str(x.shape)}")
        if self._split(x.shape)[1] < 1:
            raise ValueError(f"{self.name}: x: expected at least 1 time step, got shape {shape_str(x.shape)}")
        return x

    def call(self, x: np.ndarray, ctx: Context, training: bool = False, mask: Any = None) -> np.ndarray:
        if x.ndim != 3:
            raise ValueError(f"{self.name}: x: expected 3 dimensions {self._layout()}, got shape "
                             f"{shape_str(x.shape)}")
        xl = x if self.data_format == "channels_last" else x.transpose(0, 2, 1)  # [N, T, C] view
        n, steps, channels = xl.shape
        if channels != self.input_dim:
            want = (None, None, self.input_dim) if self.data_format == "channels_last" else (None, self.input_dim, None)
            raise ValueError(f"{self.name}: x: expected shape {shape_str(want)} {self._layout()}, got "
                             f"{shape_str(x.shape)}")
        K, s, d, G = self.kernel_size, self.strides, self.dilation_rate, self.groups
        t_out = self._output_length(steps, "x")
        left, right = conv_padding(steps, K, s, self.padding, d)
        if left or right:
            xp = np.zeros((n, left + steps + right, channels), dtype=self.dtype)
            xp[:, left:left + steps] = xl
        else:
            xp = xl
        cg, fg = channels // G, self.filters // G
        # im2col: windows[n, t, c, k] = xp[n, t*s + k*d, c] (a view), laid out once as
        # cols[g, n*T_out + t, k*C_g + c]
        span = d * (K - 1) + 1
        win = sliding_window_view(xp, span, axis=1)[:, ::s, :, ::d]  # [N, T_out, C, K]
        win = win.reshape(n, t_out, G, cg, K).transpose(2, 0, 1, 4, 3)  # [G, N, T_out, K, C_g]
        m = n * t_out
        cols = np.ascontiguousarray(win).reshape(G, m, K * cg)
        w = self.params["kernel"]
        if G == 1:
            z = cols[0] @ w.reshape(K * cg, self.filters)  # [M, F]
        else:
            wg = w.reshape(K, cg, G, fg).transpose(2, 0, 1, 3).reshape(G, K * cg, fg)
            z = np.matmul(cols, wg).transpose(1, 0, 2).reshape(m, self.filters)
        if self.use_bias:
            z += self.params["bias"]
        z = z.reshape(n, t_out, self.filters)
        if self.data_format == "channels_first":
            z = np.ascontiguousarray(z.transpose(0, 2, 1))
        # the activation acts on the output as laid out (softmax along its last axis, as in Keras)
        y = z if self.activation is activations.linear else self.activation(z)
        ctx.cols, ctx.y = cols, y
        ctx.z = z if self.activation.needs_input else None  # gelu, swish, ... need their input
        ctx.n, ctx.steps, ctx.t_out, ctx.left, ctx.right = n, steps, t_out, left, right
        return y

    # ---- backward -------------------------------------------------------------------------------
    def _backprop_pre(self, dz: np.ndarray, ctx: Context) -> Optional[np.ndarray]:
        """From the gradient w.r.t. the pre-activation output: kernel and bias gradients, dx."""
        n, steps, t_out, left, right = ctx.n, ctx.steps, ctx.t_out, ctx.left, ctx.right
        K, s, d, G = self.kernel_size, self.strides, self.dilation_rate, self.groups
        F = self.filters
        fg = F // G
        cg = self.input_dim // G
        m = n * t_out
        if self.data_format == "channels_first":
            dz = dz.transpose(0, 2, 1)
        dz2 = np.ascontiguousarray(dz).reshape(m, F)
        cols, w = ctx.cols, self.params["kernel"]
        if G == 1:
            dw = (cols[0].T @ dz2).reshape(K, cg, F)
        else:
            dzg = np.ascontiguousarray(dz2.reshape(m, G, fg).transpose(1, 0, 2))  # [G, M, F_g]
            dwg = np.matmul(cols.transpose(0, 2, 1), dzg)  # [G, K*C_g, F_g]
            dw = dwg.reshape(G, K, cg, fg).transpose(1, 2, 0, 3).reshape(K, cg, F)
        pg = {"kernel": dw}
        if self.use_bias:
            pg["bias"] = dz2.sum(axis=0)
        self.accumulate_grads(pg)
        if not ctx.need_input_grad:
            return None
        if G == 1:
            dcols = (dz2 @ w.reshape(K * cg, F).T).reshape(1, n, t_out, K, cg)
        else:
            wg = w.reshape(K, cg, G, fg).transpose(2, 0, 1, 3).reshape(G, K * cg, fg)
            dcols = np.matmul(dzg, wg.transpose(0, 2, 1)).reshape(G, n, t_out, K, cg)
        # col2im: tap k of output step t read padded step t*s + k*d; within one tap those steps
        # are distinct, so each tap is one strided slice addition
        dxp = np.zeros((n, left + steps + right, G, cg), dtype=self.dtype)
        stop = (t_out - 1) * s + 1
        for k in range(K):
            dxp[:, k * d:k * d + stop:s] += dcols[:, :, :, k, :].transpose(1, 2, 0, 3)
        dx = dxp.reshape(n, left + steps + right, G * cg)[:, left:left + steps]
        return dx if self.data_format == "channels_last" else dx.transpose(0, 2, 1)

    def backprop(self, d_out: Any, ctx: Context) -> Optional[np.ndarray]:
        """``dx`` shaped like the input; accumulates the ``kernel`` and ``bias`` gradients."""
        d = check_grad(self, "d_out", d_out, self._out_shape(ctx.n, ctx.t_out))
        dz = d if self.activation is activations.linear else self.activation.backward(d, ctx.y, ctx.z)
        return self._backprop_pre(dz, ctx)

    @property
    def output_activation(self) -> Optional[str]:
        return self.activation.name

    def backprop_logits(self, d_logits: Any, ctx: Context) -> Optional[np.ndarray]:
        """Like :meth:`backprop` from the gradient w.r.t. the output before the activation."""
        d = check_grad(self, "d_logits", d_logits, self._out_shape(ctx.n, ctx.t_out))
        return self._backprop_pre(d, ctx)

    # ---- config ---------------------------------------------------------------------------------
    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg.update({"filters": self.filters, "kernel_size": self.kernel_size, "strides": self.strides,
                    "padding": self.padding, "data_format": self.data_format,
                    "dilation_rate": self.dilation_rate, "groups": self.groups,
                    "activation": activations.serialize(self.activation), "use_bias": self.use_bias,
                    "kernel_initializer": initializers.serialize(self.kernel_initializer),
                    "bias_initializer": initializers.serialize(self.bias_initializer)})
        return cfg
