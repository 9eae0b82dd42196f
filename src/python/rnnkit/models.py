"""Layer containers: :class:`FeedForwardNetwork`, :class:`RecurrentNetwork` and Keras's
:class:`Sequential` (compile / fit / evaluate / predict / summary / save), plus
:func:`load_model`.

Inputs are batch-major like Keras: ``[N, T, C]`` for sequences (``[N, T]`` integer indices in
front of an ``Embedding``). Masks produced by ``Embedding(mask_zero=True)`` or ``Masking`` flow
from layer to layer (``layer.compute_mask``) and, when the output keeps the time axis, mask the
loss and the metrics.
"""
from __future__ import annotations

import itertools
import threading
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from rnnkit import losses as _losses
from rnnkit import metrics as _metrics
from rnnkit import optimizers as _optimizers
from rnnkit._threads import PerThread
from rnnkit.callbacks import Callback, History
from rnnkit.layers.base import Layer

__all__ = ["FeedForwardNetwork", "RecurrentNetwork", "Sequential", "load_model"]

Shape = Tuple[Optional[int], ...]

_seq_ids = itertools.count()


def _check_layers(layers: Any, arg: str = "layers") -> List[Layer]:
    if layers is None:
        return []
    if isinstance(layers, Layer):
        raise TypeError(f"{arg}: expected a list of layers, got a single {type(layers).__name__}; "
                        f"wrap it in a list")
    out = list(layers)
    for i, layer in enumerate(out):
        if not isinstance(layer, Layer):
            raise TypeError(f"{arg}[{i}]: expected an rnnkit Layer, got {type(layer).__name__}")
    names = [layer.name for layer in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{arg}: layer names must be unique within a model, got duplicates {dup}")
    return out


def _first(x: Any) -> Any:
    """The main output of a layer that may return ``[output, *states]``."""
    return x[0] if isinstance(x, list) else x


class FeedForwardNetwork:
    """Layers applied one after the other: ``output = layer(output)`` in order; :meth:`backward`
    runs them in reverse. Masks from ``Embedding``/``Masking`` are passed along.

    Parameters
    ----------
    layers
        The layers, in order.

    Shapes
    ------
    ``x``: the first layer's input (``[N, T, C]``, ``[N, C]``, or ``[N, T]`` integer indices for
    an ``Embedding``) -> the last layer's output. ``backward(d_out)`` takes an array shaped like
    the output and returns one shaped like ``x`` (None when the first layer is an
    ``Embedding``, which has no input gradient).
    """

    output_mask = PerThread("the mask after the last layer, from this thread's last forward")

    def __init__(self, layers: Optional[Sequence[Layer]] = None) -> None:
        self.layers: List[Layer] = _check_layers(layers)

    # ---- running ------------------------------------------------------------------------------
    def forward(self, x: Any, mask: Optional[np.ndarray] = None, training: bool = False) -> np.ndarray:
        """Runs every layer in order; :attr:`output_mask` is the mask after the last layer."""
        if not self.layers:
            raise ValueError("layers: the network has no layers")
        out = x
        for layer in self.layers:
            next_mask = _first(layer.compute_mask(out, mask))
            out = layer(out, mask=mask, training=training)
            if isinstance(out, list):
                raise ValueError(f"{layer.name}: returns {len(out)} outputs (return_state=True?); "
                                 f"{type(self).__name__} layers must return one array")
            mask = next_mask
        self.output_mask = mask
        return out

    __call__ = forward

    def backward(self, d_out: Any) -> Optional[np.ndarray]:
        """Gradient w.r.t. the input of the last :meth:`forward`; parameter gradients accumulate
        into each ``layer.grads``."""
        d = d_out
        for layer in reversed(self.layers):
            d = layer.backward(d)
            if d is None:  # an Embedding: nothing flows further back
                break
        return d

    # ---- parameters ---------------------------------------------------------------------------
    def zero_grad(self) -> None:
        for layer in self.layers:
            layer.zero_grad()

    def trainable_variables(self) -> Tuple[List[np.ndarray], List[np.ndarray]]:
        """``(params, grads)``: the arrays of every trainable layer, layer by layer in
        ``layer.params`` order (what the optimizer updates)."""
        params: List[np.ndarray] = []
        grads: List[np.ndarray] = []
        for layer in self.layers:
            if layer.trainable:
                for k, p in layer.params.items():
                    params.append(p)
                    grads.append(layer.grads[k])
        return params, grads

    def get_weights(self) -> List[np.ndarray]:
        """Every layer's ``get_weights()`` in order (Keras's order and layout)."""
        out: List[np.ndarray] = []
        for layer in self.layers:
            out.extend(layer.get_weights())
        return out

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Inverse of :meth:`get_weights` (the layers must be built)."""
        weights = list(weights)
        counts = [len(layer.get_weights()) for layer in self.layers]
        if sum(counts) != len(weights):
            raise ValueError(f"weights: expected {sum(counts)} arrays ({', '.join(f'{l.name}: {c}' for l, c in zip(self.layers, counts))}), "
                             f"got {len(weights)}")
        i = 0
        for layer, c in zip(self.layers, counts):
            layer.set_weights(weights[i:i + c])
            i += c

    def count_params(self) -> int:
        return int(sum(layer.count_params() for layer in self.layers))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} layers={[layer.name for layer in self.layers]}>"


def _is_recurrent(layer: Layer) -> bool:
    return hasattr(layer, "return_state")


@contextmanager
def _returning_state(layer: Layer) -> Iterator[None]:
    """Temporarily switches on ``return_state`` of a recurrent layer (and of the sublayers of a
    wrapper such as ``Bidirectional``)."""
    targets = [layer] + [getattr(layer, a) for a in ("forward_layer", "backward_layer")
                         if isinstance(getattr(layer, a, None), Layer)]
    old = [t.return_state for t in targets]  # type: ignore[attr-defined]
    for t in targets:
        t.return_state = True  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for t, o in zip(targets, old):
            t.return_state = o  # type: ignore[attr-defined]


class RecurrentNetwork(FeedForwardNetwork):
    """Layers in order with the recurrent layers' states threaded through:
    ``output, state[i] = layer(output, initial_state=state[i])`` for every recurrent layer.

    Each recurrent layer (``SimpleRNN``, ``LSTM``, ``GRU``, ``Bidirectional``) is called with its
    own ``initial_state`` and with ``return_state`` switched on for the call, so feeding the
    returned state back continues the sequence: ``forward(x[:, :k])`` then
    ``forward(x[:, k:], state)`` gives the outputs of ``forward(x)``.

    Parameters
    ----------
    layers
        The layers, in order.

    Shapes
    ------
    ``x``: ``[N, T, C]``; ``state``: a list with one entry per layer, ``None`` for non-recurrent
    layers (and for zero initial states), else that layer's list of state arrays (``[h]`` or
    ``[h, c]``, each ``[N, U]``; forward then backward states for ``Bidirectional``).
    ``forward`` returns ``(output, state)``; ``backward(d_out, d_state=None)`` returns ``dx`` and
    sets :attr:`d_initial_state` (same structure as ``state``).
    """

    d_initial_state = PerThread("initial-state gradients from this thread's last backward")

    def __init__(self, layers: Optional[Sequence[Layer]] = None) -> None:
        super().__init__(layers)
        # forward/backward switch the layers' return_state for the call: one call at a time
        self._call_lock = threading.RLock()

    def forward(self, x: Any, state: Optional[Sequence[Any]] = None,  # type: ignore[override]
                mask: Optional[np.ndarray] = None, training: bool = False
                ) -> Tuple[np.ndarray, List[Optional[List[np.ndarray]]]]:
        """Runs the layers; returns ``(output, final_state)``."""
        with self._call_lock:
            return self._forward(x, state, mask, training)

    def _forward(self, x: Any, state: Optional[Sequence[Any]], mask: Optional[np.ndarray],
                 training: bool) -> Tuple[np.ndarray, List[Optional[List[np.ndarray]]]]:
        if not self.layers:
            raise ValueError("layers: the network has no layers")
        if state is None:
            state = [None] * len(self.layers)
        elif not isinstance(state, (list, tuple)) or len(state) != len(self.layers):
            got = len(state) if isinstance(state, (list, tuple)) else type(state).__name__
            raise ValueError(f"state: expected a list with one entry per layer ({len(self.layers)}), "
                             f"got {got}")
        out = x
        new_state: List[Optional[List[np.ndarray]]] = []
        for i, layer in enumerate(self.layers):
            if _is_recurrent(layer):
                with _returning_state(layer):
                    next_mask = _first(layer.compute_mask(out, mask))
                    res = layer(out, mask=mask, initial_state=state[i], training=training)
                out, st = res[0], list(res[1:])
                new_state.append(st)
            else:
                if state[i] is not None:
                    raise ValueError(f"state[{i}]: layer {layer.name!r} is not recurrent; expected "
                                     f"None, got {type(state[i]).__name__}")
                next_mask = _first(layer.compute_mask(out, mask))
                out = layer(out, mask=mask, training=training)
                new_state.append(None)
            mask = next_mask
        self.output_mask = mask
        return out, new_state

    __call__ = forward  # type: ignore[assignment]

    def backward(self, d_out: Any, d_state: Optional[Sequence[Any]] = None) -> Optional[np.ndarray]:
        """Gradient w.r.t. ``x`` from the gradient w.r.t. the output and (optionally) w.r.t. the
        returned final states (``d_state``: one entry per layer, None = zeros)."""
        with self._call_lock:
            return self._backward(d_out, d_state)

    def _backward(self, d_out: Any, d_state: Optional[Sequence[Any]]) -> Optional[np.ndarray]:
        if d_state is None:
            d_state = [None] * len(self.layers)
        elif not isinstance(d_state, (list, tuple)) or len(d_state) != len(self.layers):
            got = len(d_state) if isinstance(d_state, (list, tuple)) else type(d_state).__name__
            raise ValueError(f"d_state: expected a list with one entry per layer ({len(self.layers)}), "
                             f"got {got}")
        d = d_out
        d_init: List[Any] = [None] * len(self.layers)
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            if _is_recurrent(layer):
                ds = d_state[i]
                n = self._n_states(layer)
                ds = [None] * n if ds is None else list(ds)
                if len(ds) != n:
                    raise ValueError(f"d_state[{i}]: expected {n} state gradients for {layer.name!r}, "
                                     f"got {len(ds)}")
                with _returning_state(layer):
                    d = layer.backward([d] + ds)
                d_init[i] = self._initial_state_grads(layer)
            else:
                if d_state[i] is not None:
                    raise ValueError(f"d_state[{i}]: layer {layer.name!r} is not recurrent; expected None")
                d = layer.backward(d)
            if d is None:
                break
        self.d_initial_state = d_init
        return d

    @staticmethod
    def _n_states(layer: Layer) -> int:
        with _returning_state(layer):
            shp = layer.compute_output_shape((None, None, 1))
        return len(shp) - 1

    @staticmethod
    def _initial_state_grads(layer: Layer) -> Optional[List[np.ndarray]]:
        g = getattr(layer, "d_initial_state", None)
        if g is not None:
            return list(g)
        subs = [getattr(layer, a, None) for a in ("forward_layer", "backward_layer")]
        if all(s is not None and getattr(s, "d_initial_state", None) is not None for s in subs):
            return list(subs[0].d_initial_state) + list(subs[1].d_initial_state)  # type: ignore[union-attr]
        return None


def _activation_name(layer: Layer) -> Optional[str]:
    act = getattr(layer, "activation", None)
    return getattr(act, "name", None)


def _fmt_shape(shape: Any) -> str:
    if isinstance(shape, list):
        return ", ".join(_fmt_shape(s) for s in shape)
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


class Sequential(FeedForwardNetwork):
    """A linear stack of layers with Keras's training API.

    Parameters
    ----------
    layers
        Initial layers (more with :meth:`add`).
    name
        Model name (default ``'sequential'``, ``'sequential_1'``, ...).

    Shapes
    ------
    ``x``: ``[N, ...]`` matching the first layer (``[N, T, C]`` floats for recurrent layers,
    ``[N, T]`` ints for ``Embedding``); ``y``: the output's shape (``[N, K]`` or ``[N, T, K]``),
    or integer labels without the class axis for ``sparse_categorical_crossentropy``.
    ``predict`` returns ``[N, *output_shape]``.

    Examples
    --------
    >>> model = Sequential()
    >>> model.add(LSTM(units=64, return_sequences=True, input_shape=(timesteps, input_dim)))
    >>> model.add(Dense(units=output_dim, activation='softmax'))
    >>> model.compile(loss='categorical_crossentropy', optimizer='adam', metrics=['accuracy'])
    >>> history = model.fit(X_train, y_train, epochs=10, batch_size=32)
    """

    def __init__(self, layers: Optional[Sequence[Layer]] = None, name: Optional[str] = None) -> None:
        super().__init__(None)
        k = next(_seq_ids)
        self.name = name or ("sequential" if k == 0 else f"sequential_{k}")
        self.loss: Optional[_losses.Loss] = None
        self.optimizer: Optional[_optimizers.Optimizer] = None
        self.compiled_metrics: List[_metrics.Metric] = []
        self.check_finite = False
        self.stop_training = False
        self.history: Optional[History] = None
        self.build_input_shape: Optional[Shape] = None
        self._compile_args: Optional[Dict[str, Any]] = None
        for layer in _check_layers(layers):
            self.add(layer)

    # ---- building -----------------------------------------------------------------------------
    @property
    def built(self) -> bool:
        return self.build_input_shape is not None and all(layer.built for layer in self.layers)

    def add(self, layer: Layer) -> None:
        """Appends a layer (built at once when the input shape is known)."""
        if not isinstance(layer, Layer):
            raise TypeError(f"layer: expected an rnnkit Layer, got {type(layer).__name__}")
        if any(layer.name == other.name for other in self.layers):
            raise ValueError(f"layer: a layer named {layer.name!r} is already in {self.name!r}; "
                             "layer names must be unique within a model")
        if getattr(layer, "return_state", False):
            raise ValueError(f"layer: {layer.name!r} has return_state=True; Sequential layers must "
                             "return one output (use RecurrentNetwork to thread states)")
        self.layers.append(layer)
        try:
            if len(self.layers) == 1 and layer.input_shape is not None:
                self.build((None,) + tuple(layer.input_shape))
            elif self.build_input_shape is not None:
                self.build(self.build_input_shape)
        except Exception:
            self.layers.pop()  # leave the model as it was
            if not self.layers:
                self.build_input_shape = None
            raise

    def pop(self) -> Layer:
        """Removes and returns the last layer."""
        if not self.layers:
            raise ValueError("pop: the model has no layers")
        return self.layers.pop()

    def build(self, input_shape: Sequence[Optional[int]]) -> None:
        """Builds every layer for inputs of ``input_shape`` (batch axis first, may be None)."""
        shape: Any = tuple(input_shape)
        if len(shape) < 2:
            raise ValueError(f"input_shape: expected (batch, ...) with at least 2 dimensions, got {shape}")
        for layer in self.layers:
            layer._maybe_build(shape)
            shape = layer.compute_output_shape(shape)
        self.build_input_shape = tuple(input_shape)

    def _output_shape_for(self, input_shape: Shape) -> Shape:
        shape: Any = tuple(input_shape)
        for layer in self.layers:
            shape = layer.compute_output_shape(shape)
        return tuple(shape)

    @property
    def input_shape(self) -> Shape:
        if self.build_input_shape is None:
            raise ValueError(f"{self.name}: the model is not built; give the first layer an "
                             "input_shape or call build()/fit()")
        return self.build_input_shape

    @property
    def output_shape(self) -> Shape:
        return self._output_shape_for(self.input_shape)

    def get_layer(self, name: Optional[str] = None, index: Optional[int] = None) -> Layer:
        """A layer by name or by index."""
        if index is not None:
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"name: no layer named {name!r}; layers are {[l.name for l in self.layers]}")

    @property
    def weights(self) -> List[np.ndarray]:
        return [p for layer in self.layers for p in layer.params.values()]

    @property
    def trainable_weights(self) -> List[np.ndarray]:
        return self.trainable_variables()[0]

    # ---- compile ------------------------------------------------------------------------------
    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, metrics: Optional[Sequence[Any]] = None,
                check_finite: bool = False) -> None:
        """Configures training.

        Parameters
        ----------
        optimizer
            Name (``'adam'``, ``'sgd'``, ``'rmsprop'``, ``'adagrad'``) or optimizer instance.
        loss
            Name (``'categorical_crossentropy'``, ``'sparse_categorical_crossentropy'``,
            ``'binary_crossentropy'``, ``'mse'``, ``'mae'``) or :class:`rnnkit.losses.Loss`.
        metrics
            Names (``'accuracy'``/``'acc'``, ``'mae'``, ``'mse'``, ...) or metric instances.
        check_finite
            Reject NaN/inf in the inputs and targets of ``fit``/``evaluate``/``predict``, and
            stop with FloatingPointError when a training loss is not finite.
        """
        if loss is None:
            raise ValueError("loss: compile needs a loss, got None")
        self.loss = _losses.get(loss)
        self.optimizer = _optimizers.get(optimizer)
        if metrics is None:
            metrics = []
        if isinstance(metrics, (str, _metrics.Metric)):
            metrics = [metrics]
        self.compiled_metrics = [_metrics.get(m, loss=self.loss) for m in metrics]
        names = [m.name for m in self.compiled_metrics]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup or "loss" in names:
            raise ValueError(f"metrics: metric names must be unique and not 'loss', got {names}")
        self.check_finite = bool(check_finite)
        self._compile_args = {"loss": loss, "metrics": list(metrics)}

    def _require_compiled(self, what: str) -> None:
        if self.loss is None or self.optimizer is None:
            raise RuntimeError(f"{what}: the model must be compiled first (model.compile(optimizer, loss))")

    def get_compile_config(self) -> Optional[Dict[str, Any]]:
        """The compile arguments as JSON-compatible data (None when not compiled)."""
        if self.loss is None or self.optimizer is None or self._compile_args is None:
            return None
        loss_id = self._compile_args["loss"]
        loss_cfg: Any = loss_id if isinstance(loss_id, str) else _losses.serialize(self.loss)
        metric_cfgs: List[Any] = []
        for ident, m in zip(self._compile_args["metrics"], self.compiled_metrics):
            metric_cfgs.append(ident if isinstance(ident, str) else _metrics.serialize(m))
        return {"loss": loss_cfg, "optimizer": _optimizers.serialize(self.optimizer),
                "metrics": metric_cfgs, "check_finite": self.check_finite}

    def compile_from_config(self, config: Dict[str, Any]) -> None:
        """Inverse of :meth:`get_compile_config`."""
        self.compile(optimizer=_optimizers.deserialize(config["optimizer"]), loss=config["loss"],
                     metrics=config.get("metrics") or [], check_finite=bool(config.get("check_finite", False)))

    # ---- running (used by rnnkit.training) ----------------------------------------------------
    def _run(self, x: Any, training: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        out = self.forward(x, training=training)
        return out, self.output_mask

    def _fused_activation(self) -> Optional[str]:
        """The output activation whose Jacobian the loss folds in (softmax + cross-entropy,
        sigmoid + binary cross-entropy), or None."""
        if self.loss is None or not self.layers:
            return None
        from rnnkit.layers.core import Dense

        last = self.layers[-1]
        name = _activation_name(last)
        # Only layers whose activation is their last operation qualify: Dense, or any layer that
        # offers backward_from_logits.
        if name is not None and name == self.loss.fusable_activation and (
                hasattr(last, "backward_from_logits") or isinstance(last, Dense)):
            return name
        return None

    def _backward_from_logits(self, d_logits: np.ndarray) -> Optional[np.ndarray]:
        """Backpropagates a gradient w.r.t. the last layer's pre-activation."""
        last = self.layers[-1]
        fn: Optional[Callable[[np.ndarray], Any]] = getattr(last, "backward_from_logits", None)
        if fn is not None:
            d = fn(d_logits)
        else:
            from rnnkit import activations

            act = last.activation  # type: ignore[attr-defined]
            last.activation = activations.linear  # type: ignore[attr-defined]
            try:
                d = last.backward(d_logits)
            finally:
                last.activation = act  # type: ignore[attr-defined]
        for layer in reversed(self.layers[:-1]):
            if d is None:
                break
            d = layer.backward(d)
        return d

    def __call__(self, x: Any, training: bool = False) -> np.ndarray:  # type: ignore[override]
        """The output for ``x`` in one pass (no batching)."""
        from rnnkit import training as _training

        xa = _training.prepare_x(self, x, "x")
        if not self.built:
            self.build((None,) + xa.shape[1:])
        return self.forward(xa, training=training)

    # ---- Keras API ----------------------------------------------------------------------------
    def fit(self, x: Any, y: Any, epochs: int = 1, batch_size: int = 32, validation_split: float = 0.0,
            validation_data: Optional[Tuple[Any, Any]] = None, shuffle: bool = True,
            callbacks: Optional[Sequence[Callback]] = None, verbose: int = 1, seed: Optional[int] = None,
            initial_epoch: int = 0, check_finite: Optional[bool] = None) -> History:
        """Trains for ``epochs`` epochs of mini-batches; returns the :class:`History`.

        Per batch: forward (training mode), loss and its gradient (fused with a softmax/sigmoid
        output), ``zero_grad``, backward, one optimizer step. Shows a tqdm progress bar per epoch
        with the running loss and metrics when ``verbose=1``, one line per epoch with
        ``verbose=2``, nothing with ``verbose=0``.

        Parameters
        ----------
        x, y
            Inputs and targets (see the class's Shapes).
        epochs
            Number of epochs (counted from ``initial_epoch``).
        batch_size
            Samples per update.
        validation_split
            Fraction in [0, 1) of the samples, taken from the end before shuffling, used for
            validation only (ignored when ``validation_data`` is given).
        validation_data
            ``(x_val, y_val)`` evaluated at the end of every epoch (``val_`` logs).
        shuffle
            Shuffle the training samples every epoch.
        callbacks
            :class:`rnnkit.callbacks.Callback` instances.
        verbose
            0, 1 or 2 (see above).
        seed
            Seeds the shuffling and reseeds the layers' dropout generators, so two runs from the
            same weights give the same result.
        initial_epoch
            Epoch to start from (for resuming).
        check_finite
            Overrides the compile option of the same name.

        Shapes
        ------
        ``x``: ``[N, ...]``; ``y``: ``[N, ...]`` (see the class).
        """
        from rnnkit import training as _training

        return _training.fit(self, x, y, epochs=epochs, batch_size=batch_size,
                             validation_split=validation_split, validation_data=validation_data,
                             shuffle=shuffle, callbacks=callbacks, verbose=verbose, seed=seed,
                             initial_epoch=initial_epoch, check_finite=check_finite)

    def evaluate(self, x: Any, y: Any, batch_size: int = 32, verbose: int = 0,
                 return_dict: bool = False) -> Union[float, List[float], Dict[str, float]]:
        """The loss (and metrics) on ``(x, y)`` in inference mode: a float without metrics, else
        ``[loss, *metrics]`` (a dict with ``return_dict``), like Keras.

        Shapes
        ------
        ``x``: ``[N, ...]``; ``y``: ``[N, ...]``.
        """
        from rnnkit import training as _training

        return _training.evaluate(self, x, y, batch_size=batch_size, verbose=verbose,
                                  return_dict=return_dict)

    def predict(self, x: Any, batch_size: int = 32, verbose: int = 0) -> np.ndarray:
        """Outputs for ``x`` in inference mode, computed ``batch_size`` samples at a time.

        Shapes
        ------
        ``x``: ``[N, ...]`` -> ``[N, *output_shape]``.
        """
        from rnnkit import training as _training

        return _training.predict(self, x, batch_size=batch_size, verbose=verbose)

    def train_on_batch(self, x: Any, y: Any) -> Union[float, List[float]]:
        """One update on one batch; returns the loss (and the batch's metrics).

        Shapes
        ------
        ``x``: ``[n, ...]``; ``y``: ``[n, ...]``.
        """
        from rnnkit import training as _training

        return _training.train_on_batch(self, x, y)

    # ---- summary ------------------------------------------------------------------------------
    def summary(self, line_length: int = 80, print_fn: Optional[Callable[[str], None]] = None) -> None:
        """Prints a table of the layers (name and type, output shape, parameter count) and the
        totals, like Keras's ``model.summary()``."""
        if self.build_input_shape is None:
            raise ValueError(f"summary: the model {self.name!r} is not built; give the first layer "
                             "an input_shape, call build(input_shape) or fit the model first")
        pf = print_fn or print
        rows = []
        shape: Any = self.build_input_shape
        for layer in self.layers:
            shape = layer.compute_output_shape(shape)
            rows.append((f"{layer.name} ({type(layer).__name__})", _fmt_shape(shape),
                         f"{layer.count_params():,}"))
        c0 = max([len("Layer (type)")] + [len(r[0]) for r in rows]) + 3
        c1 = max([len("Output Shape")] + [len(r[1]) for r in rows]) + 3
        width = max(line_length, c0 + c1 + 12)

        def row(a: str, b: str, c: str) -> str:
            return f" {a:<{c0}}{b:<{c1}}{c}"

        lines = [f'Model: "{self.name}"', "_" * width, row("Layer (type)", "Output Shape", "Param #"),
                 "=" * width]
        for i, r in enumerate(rows):
            lines.append(row(*r))
            lines.append(("_" if i < len(rows) - 1 else "=") * width)
        if not rows:
            lines.append("=" * width)
        total = self.count_params()
        trainable = sum(layer.count_params() for layer in self.layers if layer.trainable)
        lines += [f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                  f"Non-trainable params: {total - trainable:,}", "_" * width]
        pf("\n".join(lines))

    # ---- saving -------------------------------------------------------------------------------
    def get_config(self) -> Dict[str, Any]:
        """``{"name", "layers": [serialized layers], "build_input_shape"}``."""
        from rnnkit.layers.base import serialize

        return {"name": self.name, "layers": [serialize(layer) for layer in self.layers],
                "build_input_shape": None if self.build_input_shape is None else list(self.build_input_shape)}

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Sequential":
        """Inverse of :meth:`get_config` (fresh weights)."""
        from rnnkit.layers.base import deserialize

        model = cls([deserialize(c) for c in config.get("layers", [])], name=config.get("name"))
        shape = config.get("build_input_shape")
        if shape is not None and not model.built:
            model.build(tuple(shape))
        return model

    def save(self, filepath: str, include_optimizer: bool = True) -> None:
        """Saves architecture, weights, compile config and optimizer state to one safetensors
        file (see :mod:`rnnkit.serialization`); the write is atomic."""
        from rnnkit import serialization

        serialization.save_model(self, filepath, include_optimizer=include_optimizer)

    def save_weights(self, filepath: str) -> None:
        """Saves only the weights (safetensors, atomic write)."""
        from rnnkit import serialization

        serialization.save_weights(self, filepath)

    def load_weights(self, filepath: str) -> None:
        """Loads weights saved by :meth:`save_weights` or :meth:`save` into this (built) model;
        layers are matched by position, class and parameter shapes."""
        from rnnkit import serialization

        serialization.load_weights(self, filepath)


def load_model(filepath: str, compile: bool = True) -> Sequential:
    """Loads a model saved with :meth:`Sequential.save` (no pickle involved).

    Parameters
    ----------
    filepath
        The file.
    compile
        Restore the compile config and the optimizer state when saved.

    Shapes
    ------
    The loaded model has the saved input shape.
    """
    from rnnkit import serialization

    return serialization.load_model(filepath, compile=compile)
