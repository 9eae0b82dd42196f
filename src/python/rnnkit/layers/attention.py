"""Keras-style attention layers: :class:`Attention` (Luong, dot-product or concat scores) and
:class:`AdditiveAttention` (Bahdanau).

Both follow Keras 3 (``keras.layers.Attention`` / ``AdditiveAttention``) argument for argument:

- inputs ``[query, value]`` or ``[query, value, key]`` (``key`` defaults to ``value``);
- call keyword arguments ``mask=[query_mask, value_mask]`` (a third entry, the key's mask, is
  accepted and ignored, as in Keras: the value mask covers the key positions),
  ``return_attention_scores``, ``use_causal_mask`` and ``training``;
- a masked value position gets its score lowered by :data:`MASK_BIAS` (``1e9``, Keras's number)
  before the softmax; with ``use_causal_mask`` query step ``i`` only sees value steps
  ``j <= i``; the output at a masked query step is zero;
- ``return_attention_scores=True`` returns ``[output, weights]``, the attention distribution
  after masking, softmax and dropout (Keras returns the dropped-out weights too), and
  :meth:`~Attention.backprop` takes ``[d_output, d_weights]`` (either may be None);
- ``dropout``: inverted dropout on the attention distribution in training, drawn from
  ``layer.rng = np.random.default_rng(seed)``;
- :meth:`~Attention.compute_mask` returns the query mask.

Shapes
------
query [N, Tq, D], value [N, Tv, Dv], key [N, Tv, D] -> output [N, Tq, Dv] (and the weights
[N, Tq, Tv]); masks ``[N, Tq]`` / ``[N, Tv]`` bool.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from rnnkit._random import generator
from rnnkit._checks import as_float_array, as_mask, check_rate, check_seed, shape_str
from rnnkit._recurrent import dropout_mask
from rnnkit._rows import softmax_last_axis
from rnnkit.layers.base import Context, Layer, check_grad

__all__ = ["Attention", "AdditiveAttention", "MASK_BIAS"]

#: what Keras subtracts from the score of a masked position (``65504`` for float16, which rnnkit
#: does not have)
MASK_BIAS = 1.0e9

_ROLES = ("query", "value", "key")

class Attention(Layer):
    r"""Dot-product (Luong-style) attention, Keras 3's ``Attention``.

    For each sample, with query :math:`Q` ``[Tq, D]``, key :math:`K` ``[Tv, D]`` and value
    :math:`V` ``[Tv, Dv]``:

    .. math::

        S_{ij} = \begin{cases}
            s \, Q_i \cdot K_j & \text{score\_mode="dot"} \\
            c \sum_d \tanh\big(s (Q_{id} + K_{jd})\big) & \text{score\_mode="concat"}
        \end{cases}

        S'_{ij} = S_{ij} - 10^9 [\text{(i, j) masked}], \qquad
        A = \mathrm{dropout}(\mathrm{softmax}_j(S')), \qquad
        O_i = [\text{query } i \text{ valid}] \sum_j A_{ij} V_j

    where :math:`s` is the trainable scalar ``scale`` when ``use_scale`` (else 1) and :math:`c`
    the trainable scalar ``concat_score_weight`` (``score_mode="concat"`` only). Position
    ``(i, j)`` is masked when value step ``j`` is masked or, with ``use_causal_mask``, when
    ``j > i``.

    Parameters
    ----------
    use_scale
        Whether to learn the scalar ``scale`` (initialised to 1).
    score_mode
        ``"dot"`` or ``"concat"`` (the latter learns ``concat_score_weight``, initialised to 1).
    dropout
        Rate of inverted dropout on the attention distribution in training, in ``[0, 1)``.
    seed
        Seed of the dropout generator ``layer.rng``.
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`Layer`).

    Shapes
    ------
    inputs ``[query [N, Tq, D], value [N, Tv, Dv]]`` or ``[query, value, key [N, Tv, D]]``
    -> ``output [N, Tq, Dv]``, or ``[output, weights [N, Tq, Tv]]`` with
    ``return_attention_scores=True``. ``mask=[query_mask [N, Tq], value_mask [N, Tv]]`` (either
    may be None). Parameters (Keras's order): ``scale`` (``use_scale``) and
    ``concat_score_weight`` (``score_mode="concat"``), scalars: shape ``()`` in ``get_weights`` /
    ``set_weights``, ``[1]`` arrays in ``params`` / ``grads``.
    """

    supports_masking = True

    def __init__(self, use_scale: bool = False, score_mode: str = "dot", dropout: float = 0.0,
                 seed: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if score_mode not in ("dot", "concat"):
            raise ValueError(f"score_mode: expected one of 'dot', 'concat', got {score_mode!r}")
        self.use_scale = bool(use_scale)
        self.score_mode = score_mode
        self.dropout = check_rate("dropout", dropout)
        self.seed = check_seed("seed", seed)
        self.rng = generator(self.seed)

    # ---- inputs ---------------------------------------------------------------------------------
    def _check_list(self, what: str, value: Any, lo: int, hi: int, form: str) -> None:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{self.name}: {what}: expected a list {form}, got {type(value).__name__}")
        if not lo <= len(value) <= hi:
            raise ValueError(f"{self.name}: {what}: expected a list {form} (length {lo} to {hi}), "
                             f"got length {len(value)}")

    def _check_shapes(self, shapes: Sequence[Sequence[Optional[int]]]) -> None:
        """ValueError naming the input unless ``shapes`` (query, value[, key]) are compatible."""
        for i, s in enumerate(shapes):
            if len(s) != 3:
                raise ValueError(f"{self.name}: inputs[{i}] ({_ROLES[i]}): expected shape (batch, steps, "
                                 f"features), got {shape_str(s)}")
        q, v = shapes[0], shapes[1]
        k = shapes[2] if len(shapes) > 2 else v
        kname = "inputs[2] (key)" if len(shapes) > 2 else "inputs[1] (value, also the key)"

        def differ(a: Optional[int], b: Optional[int]) -> bool:
            return a is not None and b is not None and a != b

        for i, s in enumerate(shapes[1:], start=1):
            if differ(s[0], q[0]):
                raise ValueError(f"{self.name}: inputs[{i}] ({_ROLES[i]}): batch size {s[0]} differs from "
                                 f"the query's {q[0]} (query {shape_str(q)}, {_ROLES[i]} {shape_str(s)})")
        if len(shapes) > 2 and differ(k[1], v[1]):
            raise ValueError(f"{self.name}: inputs[2] (key): expected the value's {v[1]} steps, got shape "
                             f"{shape_str(k)} (value {shape_str(v)})")
        if differ(k[2], q[2]):
            raise ValueError(f"{self.name}: {kname}: expected the query's {q[2]} features, got shape "
                             f"{shape_str(k)} (query {shape_str(q)})")

    def check_inputs(self, inputs: Any) -> List[np.ndarray]:
        """``[query, value]`` or ``[query, value, key]`` as float arrays of the layer's dtype."""
        self._check_list("inputs", inputs, 2, 3, "[query, value] or [query, value, key]")
        out = []
        for i, a in enumerate(inputs):
            arr = as_float_array(f"{self.name}: inputs[{i}] ({_ROLES[i]})", a, contiguous=False)
            out.append(arr if arr.dtype == self.dtype else arr.astype(self.dtype))
        self._check_shapes([a.shape for a in out])
        return out

    def _masks(self, mask: Any, n: int, tq: int, tv: int) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        if mask is None:
            return None, None
        self._check_list("mask", mask, 2, 3, "[query_mask, value_mask]")
        qm = None if mask[0] is None else as_mask(f"{self.name}: mask[0] (query_mask)", mask[0], (n, tq))
        vm = None if mask[1] is None else as_mask(f"{self.name}: mask[1] (value_mask)", mask[1], (n, tv))
        return qm, vm

    # ---- building and shapes --------------------------------------------------------------------
    def build(self, input_shape: Any) -> None:
        self._check_list("input_shape", input_shape, 2, 3, "of the shapes of [query, value(, key)]")
        self._check_shapes([tuple(s) for s in input_shape])
        # Keras's scalars (shape ())
        if self.use_scale:
            self.add_weight("scale", (), "ones")
        if self.score_mode == "concat":
            self.add_weight("concat_score_weight", (), "ones")
        self.built = True

    def compute_output_shape(self, input_shape: Any) -> Any:
        q, v = tuple(input_shape[0]), tuple(input_shape[1])
        return q[:-1] + (v[-1],)

    def compute_output_shape_of_call(self, input_shape: Any, **call_kwargs: Any) -> Any:
        """With ``return_attention_scores=True`` the call also returns the scores ``[N, Tq, Tv]``."""
        out = self.compute_output_shape(input_shape)
        if call_kwargs.get("return_attention_scores", False):
            q, v = tuple(input_shape[0]), tuple(input_shape[1])
            return [out, q[:-1] + (v[1],)]
        return out

    def compute_mask(self, inputs: Any, mask: Any) -> Optional[np.ndarray]:
        """The query mask (``mask[0]``), or None: Keras's rule."""
        if mask is None:
            return None
        self._check_list("mask", mask, 2, 3, "[query_mask, value_mask]")
        if mask[0] is None:
            return None
        q = inputs[0]
        return as_mask(f"{self.name}: mask[0] (query_mask)", mask[0], tuple(q.shape[:2]))

    def _check_features(self, q: np.ndarray) -> None:
        """ValueError when the query's features do not fit the parameters (none to fit here)."""

    # ---- scores -----------------------------------------------------------------------------------
    def _scores(self, q: np.ndarray, k: np.ndarray, ctx: Context) -> np.ndarray:
        """``S [N, Tq, Tv]``; keeps what :meth:`_scores_backward` needs on ``ctx``."""
        p = self.params
        if self.score_mode == "dot":
            raw = np.matmul(q, k.transpose(0, 2, 1))
            ctx.raw = raw
            return raw * p["scale"] if self.use_scale else raw
        qk = q[:, :, None, :] + k[:, None, :, :]  # [N, Tq, Tv, D]
        th = np.tanh(p["scale"] * qk if self.use_scale else qk)
        tsum = th.sum(axis=-1)
        ctx.qk, ctx.th, ctx.tsum = qk, th, tsum
        return p["concat_score_weight"] * tsum

    def _scores_backward(self, ds: np.ndarray, ctx: Context) -> Tuple[Optional[np.ndarray], Optional[np.ndarray],
                                                                     Dict[str, np.ndarray]]:
        """``(dq, dk, parameter gradients)`` from ``dS``; dq/dk are None when not needed."""
        p = self.params
        pg: Dict[str, np.ndarray] = {}
        need = ctx.need_input_grad
        if self.score_mode == "dot":
            if self.use_scale:
                pg["scale"] = np.asarray(np.sum(ds * ctx.raw), dtype=self.dtype)
                ds = ds * p["scale"]
            if not need:
                return None, None, pg
            return np.matmul(ds, ctx.k), np.matmul(ds.transpose(0, 2, 1), ctx.q), pg
        c = p["concat_score_weight"]
        pg["concat_score_weight"] = np.asarray(np.sum(ds * ctx.tsum), dtype=self.dtype)
        du = (ds * c)[..., None] * (1.0 - ctx.th * ctx.th)  # d/d(the tanh argument) [N, Tq, Tv, D]
        if self.use_scale:
            pg["scale"] = np.asarray(np.sum(du * ctx.qk), dtype=self.dtype)
            du = du * p["scale"]
        if not need:
            return None, None, pg
        return du.sum(axis=2), du.sum(axis=1), pg

    # ---- the eager protocol -----------------------------------------------------------------------
    def call(self, inputs: List[np.ndarray], ctx: Context, training: bool = False, mask: Any = None,
             return_attention_scores: bool = False, use_causal_mask: bool = False) -> Any:
        q, v = inputs[0], inputs[1]
        k = inputs[2] if len(inputs) > 2 else v
        n, tq, tv = q.shape[0], q.shape[1], v.shape[1]
        self._check_features(q)
        qm, vm = self._masks(mask, n, tq, tv)
        ctx.q, ctx.k, ctx.v, ctx.n_inputs = q, k, v, len(inputs)
        scores = self._scores(q, k, ctx)
        # positions that may be attended to: [N or 1, 1 or Tq, Tv]
        allowed = None if vm is None else vm[:, None, :]
        if use_causal_mask:
            causal = np.tril(np.ones((tq, tv), dtype=bool))[None]  # row i >= column j
            allowed = causal if allowed is None else allowed & causal
        if allowed is not None:
            scores = np.where(allowed, scores, scores - np.asarray(MASK_BIAS, dtype=self.dtype))
        weights = softmax_last_axis(np.ascontiguousarray(scores, dtype=self.dtype))
        if training and self.dropout > 0.0:
            ctx.drop = dropout_mask(self.rng, self.dropout, weights.shape, self.dtype)
            dropped = weights * ctx.drop
        else:
            ctx.drop = None
            dropped = weights
        out = np.matmul(dropped, v)
        if qm is not None:
            out = np.where(qm[:, :, None], out, np.zeros((), dtype=self.dtype))
        ctx.weights, ctx.dropped, ctx.qm = weights, dropped, qm
        ctx.return_scores = bool(return_attention_scores)
        return [out, dropped] if ctx.return_scores else out

    def backprop(self, d_outputs: Any, ctx: Context) -> List[Optional[np.ndarray]]:
        r"""``[dquery, dvalue]`` or ``[dquery, dvalue, dkey]`` (Nones when ``ctx.need_input_grad``
        is False); accumulates the parameter gradients.

        ``d_outputs``: ``d_output`` or, after ``return_attention_scores=True``,
        ``[d_output, d_weights]`` (None entries are zeros). With :math:`P` the softmax output,
        :math:`M` the dropout mask and :math:`A = P M`:
        :math:`dA = dO\,V^T + d_{weights}`, :math:`dV = A^T dO`,
        :math:`dS = P \odot (dP - \sum_j dP \odot P)` with :math:`dP = dA \odot M`.
        """
        n, tq, tv, dv_ = ctx.q.shape[0], ctx.q.shape[1], ctx.v.shape[1], ctx.v.shape[2]
        if ctx.return_scores:
            if not isinstance(d_outputs, (list, tuple)) or len(d_outputs) != 2:
                got = type(d_outputs).__name__
                if isinstance(d_outputs, (list, tuple)):
                    got += f" of length {len(d_outputs)}"
                raise ValueError(f"{self.name}: d_outputs: expected [d_output, d_attention_scores] (the call "
                                 f"returned the scores), got {got}")
            d_out, d_w = d_outputs
        else:
            d_out, d_w = d_outputs, None
        d_out = None if d_out is None else check_grad(self, "d_output", d_out, (n, tq, dv_))
        d_w = None if d_w is None else check_grad(self, "d_attention_scores", d_w, (n, tq, tv))
        if d_out is not None and ctx.qm is not None:
            d_out = np.where(ctx.qm[:, :, None], d_out, np.zeros((), dtype=self.dtype))
        if d_out is not None:
            d_a = np.matmul(d_out, ctx.v.transpose(0, 2, 1))
            if d_w is not None:
                d_a += d_w
            d_v = np.matmul(ctx.dropped.transpose(0, 2, 1), d_out)
        else:
            d_a = np.zeros((n, tq, tv), dtype=self.dtype) if d_w is None else np.array(d_w, dtype=self.dtype)
            d_v = np.zeros_like(ctx.v)
        d_p = d_a if ctx.drop is None else d_a * ctx.drop
        p = ctx.weights
        d_s = p * (d_p - np.sum(d_p * p, axis=-1, keepdims=True))
        d_q, d_k, pg = self._scores_backward(d_s, ctx)
        if pg:
            self.accumulate_grads(pg)
        if not ctx.need_input_grad:
            return [None] * ctx.n_inputs
        if ctx.n_inputs == 2:
            return [d_q, d_v + d_k]
        return [d_q, d_v, d_k]

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        cfg.update({"use_scale": self.use_scale, "score_mode": self.score_mode, "dropout": self.dropout,
                    "seed": self.seed})
        return cfg


class AdditiveAttention(Attention):
    r"""Additive (Bahdanau-style) attention, Keras 3's ``AdditiveAttention``.

    As :class:`Attention` (masks, causal mask, dropout, query mask, returned weights) with the
    scores

    .. math::

        S_{ij} = \sum_d s_d \tanh(Q_{id} + K_{jd})

    where :math:`s` is the trainable vector ``scale`` ``[D]`` (Glorot-uniform initialised) when
    ``use_scale``, else all ones.

    Parameters
    ----------
    use_scale
        Whether to learn ``scale`` (Keras default True).
    dropout
        Rate of inverted dropout on the attention distribution in training, in ``[0, 1)``.
    seed
        Seed of the dropout generator ``layer.rng``.
    **kwargs
        ``name``, ``input_shape``, ``dtype``, ``trainable`` (see :class:`Layer`).

    Shapes
    ------
    inputs ``[query [N, Tq, D], value [N, Tv, Dv]]`` or ``[query, value, key [N, Tv, D]]``
    -> ``output [N, Tq, Dv]`` (and ``weights [N, Tq, Tv]``). Parameter: ``scale [D]``
    (``use_scale``).
    """

    def __init__(self, use_scale: bool = True, dropout: float = 0.0, seed: Optional[int] = None,
                 **kwargs: Any) -> None:
        if "score_mode" in kwargs:
            raise TypeError("score_mode: AdditiveAttention has no score_mode (its scores are additive); "
                            "use Attention(score_mode=...)")
        super().__init__(use_scale=use_scale, score_mode="dot", dropout=dropout, seed=seed, **kwargs)

    def build(self, input_shape: Any) -> None:
        self._check_list("input_shape", input_shape, 2, 3, "of the shapes of [query, value(, key)]")
        self._check_shapes([tuple(s) for s in input_shape])
        dim = input_shape[0][-1]
        if dim is None:
            raise ValueError(f"{self.name}: input_shape: the query's last size must be known, got "
                             f"{shape_str(input_shape[0])}")
        if self.use_scale:
            self.add_weight("scale", (dim,), "glorot_uniform")
        self.built = True

    def _scalar_keys(self) -> Tuple[str, ...]:
        return ()  # scale is a [D] vector, stored as it is

    def _check_features(self, q: np.ndarray) -> None:
        if self.use_scale and q.shape[2] != self.params["scale"].shape[0]:
            raise ValueError(f"{self.name}: inputs[0] (query): expected {self.params['scale'].shape[0]} "
                             f"features (the size of scale), got shape {shape_str(q.shape)}")

    def _scores(self, q: np.ndarray, k: np.ndarray, ctx: Context) -> np.ndarray:
        th = np.tanh(q[:, :, None, :] + k[:, None, :, :])  # [N, Tq, Tv, D]
        ctx.th = th
        return (th * self.params["scale"]).sum(axis=-1) if self.use_scale else th.sum(axis=-1)

    def _scores_backward(self, ds: np.ndarray, ctx: Context) -> Tuple[Optional[np.ndarray], Optional[np.ndarray],
                                                                     Dict[str, np.ndarray]]:
        pg: Dict[str, np.ndarray] = {}
        if self.use_scale:
            # sum over N, Tq, Tv of dS * tanh(.), as one product per sample
            pg["scale"] = np.einsum("nij,nijd->d", ds, ctx.th)
        if not ctx.need_input_grad:
            return None, None, pg
        g = ds[..., None] * (1.0 - ctx.th * ctx.th)
        if self.use_scale:
            g = g * self.params["scale"]
        return g.sum(axis=2), g.sum(axis=1), pg

    def get_config(self) -> Dict[str, Any]:
        cfg = super().get_config()
        del cfg["score_mode"]
        return cfg
