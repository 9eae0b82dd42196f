"""Keras's functional API: ``Model(inputs, outputs)`` over layers called on ``Input(...)``.

>>> from rnnkit.layers import Input, LSTM, Dense
>>> from rnnkit.models import Model
>>> enc_in = Input(shape=(None, 8))
>>> _, h, c = LSTM(32, return_state=True)(enc_in)
>>> dec_in = Input(shape=(None, 8))
>>> y = LSTM(32, return_sequences=True)(dec_in, initial_state=[h, c])
>>> model = Model([enc_in, dec_in], Dense(8, activation="softmax")(y))

A model runs its layers in topological order (:class:`~rnnkit.models.graph.Graph`); backward runs
them in reverse, through states as well as outputs, and a layer used twice accumulates its
gradients from both uses. ``compile``/``fit``/``evaluate``/``predict``/``summary``/``save`` work
as for :class:`~rnnkit.models.Sequential`, which is a :class:`Model` whose graph is a chain.

Shapes
------
``x``: one array per input (a list, or a dict by input name; a single array for one input), batch
axis first; ``y``: likewise per output. ``predict`` returns one array per output (a single array
for a one-output model).
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from rnnkit import losses as _losses
from rnnkit import metrics as _metrics
from rnnkit import optimizers as _optimizers
from rnnkit._checks import shape_str
from rnnkit._threads import PerThread
from rnnkit.callbacks import Callback, History
from rnnkit.layers.base import Layer, deserialize, serialize
from rnnkit.layers.input_layer import Input, InputLayer
from rnnkit.layers.symbolic import KerasTensor, Node, flatten, is_symbolic, map_structure
from rnnkit.models.collection import LayerCollection
from rnnkit.models.graph import Graph, Trace

__all__ = ["Model"]

Shape = Tuple[Optional[int], ...]

_model_ids = itertools.count()


def _as_list(v: Any) -> List[Any]:
    return list(v) if isinstance(v, (list, tuple)) else [v]


class Model(LayerCollection):
    """A model: layers connected from ``inputs`` to ``outputs``, with Keras's training API.

    Parameters
    ----------
    inputs
        One KerasTensor from :func:`~rnnkit.layers.Input`, or a list of them.
    outputs
        One KerasTensor (the result of calling layers on the inputs), or a list of them.
    name
        Model name (default ``'model'``, ``'model_1'``, ...).

    Shapes
    ------
    See the module documentation.
    """

    _last_trace = PerThread("the Trace of the calling thread's last eager call")

    def __init__(self, inputs: Any = None, outputs: Any = None, name: Optional[str] = None) -> None:
        k = next(_model_ids)
        base = "sequential" if type(self).__name__ == "Sequential" else "model"
        self.name = name or (base if k == 0 else f"{base}_{k}")
        self.graph: Optional[Graph] = None
        self.loss: Any = None
        self.output_losses: List[Optional[_losses.Loss]] = []
        self.loss_weights: List[float] = []
        self.optimizer: Optional[_optimizers.Optimizer] = None
        self.compiled_metrics: List[_metrics.Metric] = []
        self.metric_outputs: List[int] = []
        self.check_finite = False
        self.stop_training = False
        self.history: Optional[History] = None
        self._compile_args: Optional[Dict[str, Any]] = None
        if inputs is not None or outputs is not None:
            if inputs is None or outputs is None:
                raise TypeError("Model: expected both inputs and outputs")
            self._set_graph(inputs, outputs)

    def _set_graph(self, inputs: Any, outputs: Any) -> None:
        if not is_symbolic(inputs) or not is_symbolic(outputs):
            raise TypeError("inputs, outputs: expected KerasTensors from rnnkit.layers.Input and layer "
                            "calls (build the model by calling layers on Input(...))")
        self._single_input = not isinstance(inputs, (list, tuple))
        self._single_output = not isinstance(outputs, (list, tuple))
        self.graph = Graph(_as_list(inputs), _as_list(outputs))

    # ---- structure ------------------------------------------------------------------------------
    @property
    def built(self) -> bool:
        return self.graph is not None

    def _require_graph(self, what: str) -> Graph:
        if self.graph is None:
            raise ValueError(f"{what}: the model {self.name!r} is not built; give the first layer an "
                             "input_shape, call build(input_shape) or fit/predict it first")
        return self.graph

    @property
    def stack_layers(self) -> Optional[List[Layer]]:
        """The layers in order when the model is a plain stack, each layer feeding the next
        (a :class:`~rnnkit.models.Sequential`), else None (what :mod:`rnnkit.fused` fuses)."""
        return None

    @property
    def layers(self) -> List[Layer]:
        """The model's layers (each once, in topological order; input layers excluded)."""
        return [] if self.graph is None else list(self.graph.layers)

    @property
    def inputs(self) -> List[KerasTensor]:
        return list(self._require_graph("inputs").inputs)

    @property
    def outputs(self) -> List[KerasTensor]:
        return list(self._require_graph("outputs").outputs)

    @property
    def input_names(self) -> List[str]:
        return [t.node.layer.name for t in self.inputs]

    @property
    def output_names(self) -> List[str]:
        return [t.node.layer.name for t in self.outputs]

    @property
    def input_shape(self) -> Any:
        shapes = [t.shape for t in self.inputs]
        return shapes[0] if self._single_input else shapes

    @property
    def output_shape(self) -> Any:
        shapes = [t.shape for t in self.outputs]
        return shapes[0] if self._single_output else shapes

    def get_layer(self, name: Optional[str] = None, index: Optional[int] = None) -> Layer:
        """A layer by name or by index."""
        if index is not None:
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"name: no layer named {name!r}; layers are {[l.name for l in self.layers]}")

    def all_layers(self) -> List[Layer]:
        """Every layer, the wrapped ones (Bidirectional's, TimeDistributed's) included."""
        out: List[Layer] = []
        stack = list(reversed(self.layers))
        while stack:
            layer = stack.pop()
            out.append(layer)
            stack.extend(reversed(layer.sublayers()))
        return out

    # ---- parameters -----------------------------------------------------------------------------
    @property
    def weights(self) -> List[np.ndarray]:
        return [p for layer in self.layers for p in layer.params.values()]

    @property
    def trainable_weights(self) -> List[np.ndarray]:
        return self.trainable_variables()[0]

    @property
    def non_trainable_weights(self) -> List[np.ndarray]:
        return [p for layer in self.layers for p in layer.non_trainable_weights]

    # ---- the protocol the training loop uses ------------------------------------------------------
    def prepare_inputs(self, x: Any, name: str = "x") -> List[np.ndarray]:
        """``x`` as one array per model input (a list, a dict by input name, or one array for a
        one-input model), checked against the inputs' shapes and dtypes."""
        g = self._require_graph(name)
        names = self.input_names
        if isinstance(x, dict):
            missing = [n for n in names if n not in x]
            extra = [k for k in x if k not in names]
            if missing or extra:
                raise ValueError(f"{name}: expected keys {names} (the model's inputs), got {sorted(x)}")
            vals = [x[n] for n in names]
        elif isinstance(x, (list, tuple)) and len(g.inputs) > 1:
            vals = list(x)
        else:
            vals = [x]
        if len(vals) != len(g.inputs):
            raise ValueError(f"{name}: expected {len(g.inputs)} arrays (one per model input {names}), "
                             f"got {len(vals)}")
        out = []
        for i, (t, v) in enumerate(zip(g.inputs, vals)):
            nm = name if len(vals) == 1 else f"{name}[{i}]"
            out.append(t.node.layer.check_inputs(_as_array(nm, v), nm))
        n = {a.shape[0] for a in out}
        if len(n) > 1:
            raise ValueError(f"{name}: the inputs have different numbers of samples {sorted(n)}")
        if 0 in n:
            raise ValueError(f"{name}: expected at least one sample, got 0")
        return out

    def run(self, inputs: Sequence[np.ndarray], training: bool = False, input_grads: bool = False) -> Trace:
        """One forward pass over checked inputs (see :meth:`prepare_inputs`); the returned
        :class:`~rnnkit.models.graph.Trace` holds the outputs and is what :meth:`backprop`
        takes. ``input_grads``: the backward of this pass also returns the gradients w.r.t. the
        inputs (else the layers that read only data skip them)."""
        return self._require_graph("run").forward(inputs, training=training, input_grads=input_grads)

    def backprop(self, trace: Trace, d_outputs: Sequence[Any],
                 logits: Optional[Sequence[bool]] = None) -> List[Any]:
        """Backpropagates through the pass of ``trace``; parameter gradients accumulate. See
        :meth:`rnnkit.models.graph.Graph.backward`."""
        return self._require_graph("backprop").backward(trace, d_outputs, logits)

    def fusable_activation(self, index: int) -> Optional[str]:
        """The activation output ``index`` ends with, when a loss may fold it in (the loss
        fusion of the layer protocol), else None."""
        return self._require_graph("fusable_activation").fusable(index)

    # ---- eager use --------------------------------------------------------------------------------
    def __call__(self, x: Any, training: bool = False) -> Any:
        """The outputs for ``x`` in one pass (no batching); the pass is kept for :meth:`backward`
        in the calling thread."""
        if is_symbolic(x):
            raise TypeError(f"{self.name}: calling a model on KerasTensors (nesting models) is not "
                            "supported; call its layers instead")
        tr = self.run(self.prepare_inputs(x), training=training, input_grads=True)
        self._last_trace = tr
        return tr.outputs[0] if self._single_output else list(tr.outputs)

    def forward(self, x: Any, training: bool = False) -> Any:
        """Alias of calling the model."""
        return self(x, training=training)

    @property
    def output_mask(self) -> Any:
        """The output mask(s) of the calling thread's last call (None where unmasked)."""
        tr = self._last_trace
        if tr is None:
            return None
        return tr.output_masks[0] if self._single_output else list(tr.output_masks)

    def backward(self, d_outputs: Any) -> Any:
        """Gradients w.r.t. the inputs of the calling thread's last call, from gradients w.r.t.
        its outputs (None entries are zeros); parameter gradients accumulate."""
        tr = self._last_trace
        if tr is None:
            raise RuntimeError(f"{self.name}: backward called before a forward call in this thread")
        ds = [d_outputs] if self._single_output else _as_list(d_outputs)
        dx = self.backprop(tr, ds)
        return dx[0] if self._single_input else dx

    # ---- Keras's training API -----------------------------------------------------------------
    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, metrics: Any = None,
                loss_weights: Any = None, check_finite: bool = False, jit_compile: Any = "auto") -> None:
        """Configures training.

        Parameters
        ----------
        optimizer
            Name (``'adam'``, ``'sgd'``, ``'rmsprop'``, ``'adagrad'``) or optimizer instance.
        loss
            A name (``'categorical_crossentropy'``, ``'sparse_categorical_crossentropy'``,
            ``'binary_crossentropy'``, ``'mse'``, ``'mae'``) or :class:`rnnkit.losses.Loss`, used
            for every output; or a list (per output, in order) or dict (by output layer name; a
            missing output has no loss).
        metrics
            Names (``'accuracy'``/``'acc'``, ``'mae'``, ``'mse'``, ...) or metric instances,
            computed on every output; or a dict by output layer name. With several outputs the
            logged names are prefixed by the output layer's name.
        loss_weights
            Per-output weights of the summed loss (list or dict; default 1 each).
        check_finite
            Reject NaN/inf in the inputs and targets of ``fit``/``evaluate``/``predict``, and
            stop with FloatingPointError when a training loss is not finite.
        jit_compile
            Keras's name for compiled training steps. ``"auto"`` (default): ``fit`` runs each
            batch as one compiled C++ call when the model qualifies (:mod:`rnnkit.fused`: a
            ``Sequential`` stack of ``LSTM``/``GRU``/``SimpleRNN`` layers under a softmax
            ``Dense``, categorical cross-entropy, accuracy), else layer by layer. ``True``: the
            same, but ``fit`` raises ValueError saying why when the model does not qualify.
            ``False``: always layer by layer.
        """
        if jit_compile not in ("auto", True, False):
            raise ValueError(f"jit_compile: expected 'auto', True or False, got {jit_compile!r}")
        if loss is None:
            raise ValueError("loss: compile needs a loss, got None")
        g = self._graph_for_compile()
        names = [t.node.layer.name for t in g.outputs] if g is not None else None
        n_out = len(names) if names is not None else 1
        self.output_losses = _per_output("loss", loss, names, n_out, _losses.get)
        if all(l is None for l in self.output_losses):
            raise ValueError("loss: no output has a loss")
        weights = _per_output("loss_weights", 1.0 if loss_weights is None else loss_weights, names, n_out,
                              lambda w: float(w))
        self.loss_weights = [1.0 if w is None else w for w in weights]
        self.loss = self.output_losses[0] if n_out == 1 else list(self.output_losses)
        self.optimizer = _optimizers.get(optimizer)
        self.compiled_metrics, self.metric_outputs = [], []
        if metrics is None:
            metrics = []
        per = _per_output("metrics", metrics, names, n_out, lambda m: m) if isinstance(metrics, dict) \
            else [metrics] * n_out
        for k, ms in enumerate(per):
            if ms is None:
                continue
            for m in ([ms] if isinstance(ms, (str, _metrics.Metric)) else list(ms)):
                metric = _metrics.get(m, loss=self.output_losses[k])
                if n_out > 1:
                    metric.name = f"{names[k]}_{metric.name}"
                self.compiled_metrics.append(metric)
                self.metric_outputs.append(k)
        mnames = [m.name for m in self.compiled_metrics]
        dup = sorted({n for n in mnames if mnames.count(n) > 1})
        if dup or "loss" in mnames:
            raise ValueError(f"metrics: metric names must be unique and not 'loss', got {mnames}")
        self.check_finite = bool(check_finite)
        self.jit_compile = jit_compile
        self._compile_args = {"loss": loss, "metrics": metrics, "loss_weights": loss_weights}

    def _graph_for_compile(self) -> Optional[Graph]:
        return self._require_graph("compile")

    def require_compiled(self, what: str) -> None:
        if not self.output_losses or self.optimizer is None:
            raise RuntimeError(f"{what}: the model must be compiled first (model.compile(optimizer, loss))")

    def get_compile_config(self) -> Optional[Dict[str, Any]]:
        """The compile arguments as JSON-compatible data (None when not compiled)."""
        if self.optimizer is None or self._compile_args is None:
            return None

        def ser_loss(ident: Any, obj: Any) -> Any:
            if ident is None:
                return None
            return ident if isinstance(ident, str) else _losses.serialize(obj)

        loss_id = self._compile_args["loss"]
        if isinstance(loss_id, dict):
            loss_cfg: Any = {k: ser_loss(v, _losses.get(v)) for k, v in loss_id.items()}
        elif isinstance(loss_id, (list, tuple)):
            loss_cfg = [ser_loss(v, o) for v, o in zip(loss_id, self.output_losses)]
        else:
            loss_cfg = ser_loss(loss_id, self.output_losses[0])
        mids = self._compile_args["metrics"]

        def ser_metrics(ms: Any) -> Any:
            if ms is None:
                return None
            items = [ms] if isinstance(ms, (str, _metrics.Metric)) else list(ms)
            return [m if isinstance(m, str) else _metrics.serialize(m) for m in items]

        metric_cfg: Any = {k: ser_metrics(v) for k, v in mids.items()} if isinstance(mids, dict) \
            else ser_metrics(mids)
        return {"loss": loss_cfg, "optimizer": _optimizers.serialize(self.optimizer),
                "metrics": metric_cfg, "loss_weights": self._compile_args.get("loss_weights"),
                "check_finite": self.check_finite, "jit_compile": self.jit_compile}

    def compile_from_config(self, config: Dict[str, Any]) -> None:
        """Inverse of :meth:`get_compile_config`."""
        self.compile(optimizer=_optimizers.deserialize(config["optimizer"]), loss=config["loss"],
                     metrics=config.get("metrics") or [], loss_weights=config.get("loss_weights"),
                     check_finite=bool(config.get("check_finite", False)),
                     jit_compile=config.get("jit_compile", "auto"))

    def fit(self, x: Any = None, y: Any = None, batch_size: Optional[int] = None, epochs: int = 1,
            verbose: Any = "auto", callbacks: Optional[Sequence[Callback]] = None,
            validation_split: float = 0.0, validation_data: Any = None, shuffle: bool = True,
            class_weight: Optional[Dict[int, float]] = None, sample_weight: Any = None,
            initial_epoch: int = 0, steps_per_epoch: Optional[int] = None,
            validation_steps: Optional[int] = None, validation_batch_size: Optional[int] = None,
            validation_freq: int = 1, *, seed: Optional[int] = None,
            check_finite: Optional[bool] = None, distributed: bool = False,
            tbptt: Any = None) -> History:
        """Trains for ``epochs`` epochs of mini-batches; returns the :class:`History` (Keras 3's
        arguments, in Keras's order).

        Per batch: forward (training mode), the losses and their gradients (w.r.t. the logits
        when an output's activation and its loss fuse), backward, one optimizer step. Progress:
        ``verbose=1`` (or ``'auto'``) shows a tqdm bar per epoch on a terminal and one line per
        epoch otherwise (a log file); ``verbose=2`` one line per epoch; 0 nothing.

        Parameters
        ----------
        x, y
            Arrays (one per input / output: an array, a list or a dict by name), or ``x`` a
            source of batches with ``y=None``: a generator or iterable of ``(x, y[,
            sample_weight])`` batches, or a PyDataset-like object (``__len__``,
            ``__getitem__``; see :mod:`rnnkit.utils`). A ragged list (sequences of different
            lengths) raises a ValueError pointing to ``rnnkit.utils.pad_sequences``.
        batch_size
            Samples per update for arrays (default 32).
        epochs
            Number of epochs (counted from ``initial_epoch``).
        verbose
            ``'auto'``, 0, 1 or 2 (see above).
        callbacks
            :class:`rnnkit.callbacks.Callback` instances.
        validation_split
            Fraction in [0, 1) of the samples, taken from the end before shuffling, used for
            validation only (arrays only; ignored when ``validation_data`` is given).
        validation_data
            ``(x_val, y_val)`` or ``(x_val, y_val, sample_weight)``, or a source of batches,
            evaluated at the end of every ``validation_freq``-th epoch (``val_`` logs).
        shuffle
            Shuffle the training samples every epoch (arrays; a generator or dataset keeps its
            order, as in Keras).
        class_weight
            ``{class: weight}``: each loss entry (sample, or time step of a sequence output) is
            weighted by its label's class (one-output models).
        sample_weight
            Per-sample ``[N]`` or per-time-step ``[N, T]`` weights of the loss (times
            ``class_weight``); one array for all outputs, or a list / dict per output.
        initial_epoch
            Epoch to start from (for resuming).
        steps_per_epoch
            Batches per epoch: required for a generator that never ends; with arrays, epochs of
            that many batches continue through the (reshuffled) data.
        validation_steps, validation_batch_size, validation_freq
            Batches of validation data per evaluation (sources of batches), its batch size
            (default ``batch_size``), and how often (every that many epochs).
        seed
            Seeds the shuffling and reseeds the layers' dropout generators, so two runs from the
            same weights give the same result.
        check_finite
            Overrides the compile option of the same name.
        distributed
            Data-parallel training over the MPI ranks the script was launched on
            (``mpiexec -n p python -m mpi4py train.py``; needs ``pip install "rnnkit[mpi]"``):
            ``batch_size`` is per rank, so a global batch has ``p * batch_size`` samples; every
            rank takes its slice of each global batch of the same shuffled order, the gradients
            are averaged weighted by each rank's samples (the result equals one process with
            batch ``p * batch_size``, up to summation order), the loss, metrics and validation
            are summed over the ranks, and only rank 0 prints and writes files. Every rank
            calls ``fit`` with the same arguments. The rules: :mod:`rnnkit.distributed`.

        tbptt
            ``k`` or ``(k1, k2)``: truncated backpropagation through time over long sequences
            (an rnnkit extension, :mod:`rnnkit.tbptt`): every batch ``[N, T_long, C]`` is trained
            in windows, updating every k1 steps from a backward over the last k2 steps, the
            recurrent states carried between windows without gradient. Needs a Sequential whose
            recurrent layers return sequences and per-step targets; ``epochs``, ``batch_size``,
            ``shuffle``, ``sample_weight``, ``seed`` and ``verbose`` apply, the other arguments
            must stay at their defaults.
        Shapes
        ------
        ``x``: ``[N, ...]`` per input; ``y``: ``[N, ...]`` per output; ``sample_weight``:
        ``[N]`` or ``[N, T]``.
        """
        if tbptt is not None:
            from rnnkit import tbptt as _tbptt

            if callbacks or validation_split or validation_data is not None or class_weight or initial_epoch \
                    or steps_per_epoch is not None or distributed:
                raise ValueError("tbptt: callbacks, validation, class_weight, initial_epoch, steps_per_epoch "
                                 "and distributed are not supported with truncated BPTT")
            return _tbptt.fit_model(self, x, y, tbptt, epochs=epochs, batch_size=batch_size,
                                    sample_weight=sample_weight, shuffle=shuffle, seed=seed, verbose=verbose)
        from rnnkit import training

        return training.fit(self, x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
                            callbacks=callbacks, validation_split=validation_split,
                            validation_data=validation_data, shuffle=shuffle, class_weight=class_weight,
                            sample_weight=sample_weight, initial_epoch=initial_epoch,
                            steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                            validation_batch_size=validation_batch_size, validation_freq=validation_freq,
                            seed=seed, check_finite=check_finite, distributed=distributed)

    def evaluate(self, x: Any = None, y: Any = None, batch_size: Optional[int] = None, verbose: Any = "auto",
                 sample_weight: Any = None, steps: Optional[int] = None,
                 return_dict: bool = False) -> Union[float, List[float], Dict[str, float]]:
        """The loss (and metrics) on ``(x, y)`` in inference mode: a float without metrics, else
        ``[loss, *metrics]`` (a dict with ``return_dict``), like Keras. ``x`` may be a source of
        batches (see :meth:`fit`), of which ``steps`` are used.

        Shapes
        ------
        ``x``: ``[N, ...]`` per input; ``y``: ``[N, ...]`` per output; ``sample_weight``:
        ``[N]`` or ``[N, T]``.
        """
        from rnnkit import training

        return training.evaluate(self, x, y, batch_size=batch_size, verbose=verbose,
                                 sample_weight=sample_weight, steps=steps, return_dict=return_dict)

    def predict(self, x: Any, batch_size: Optional[int] = None, verbose: Any = "auto",
                steps: Optional[int] = None) -> Any:
        """Outputs for ``x`` in inference mode, computed ``batch_size`` samples at a time; ``x``
        may be a source of batches (their ``y`` ignored), of which ``steps`` are used.

        Shapes
        ------
        ``x``: ``[N, ...]`` per input -> ``[N, *output_shape]`` per output.
        """
        from rnnkit import training

        return training.predict(self, x, batch_size=batch_size, verbose=verbose, steps=steps)

    def train_on_batch(self, x: Any, y: Any = None, sample_weight: Any = None, class_weight: Any = None,
                       return_dict: bool = False) -> Any:
        """One update on one batch; returns the loss (and the batch's metrics).

        Shapes
        ------
        ``x``: ``[n, ...]``; ``y``: ``[n, ...]``.
        """
        from rnnkit import training

        return training.train_on_batch(self, x, y, sample_weight=sample_weight, class_weight=class_weight,
                                       return_dict=return_dict)

    def test_on_batch(self, x: Any, y: Any = None, sample_weight: Any = None, return_dict: bool = False) -> Any:
        """The loss (and metrics) of one batch in inference mode, no update.

        Shapes
        ------
        ``x``: ``[n, ...]``; ``y``: ``[n, ...]``.
        """
        from rnnkit import training

        return training.test_on_batch(self, x, y, sample_weight=sample_weight, return_dict=return_dict)

    def predict_on_batch(self, x: Any) -> Any:
        """The outputs for one batch (no batching, no progress).

        Shapes
        ------
        ``x``: ``[n, ...]`` per input -> ``[n, *output_shape]`` per output.
        """
        from rnnkit import training

        return training.predict_on_batch(self, x)

    # ---- summary ------------------------------------------------------------------------------
    def summary(self, line_length: int = 80, print_fn: Optional[Callable[[str], None]] = None) -> None:
        """Prints a table of the layers (name and type, output shape, parameter count, and for a
        graph that is not a chain the layers each one is connected to) and the totals, like
        Keras's ``model.summary()``."""
        g = self._require_graph("summary")
        pf = print_fn or print
        chain = self._is_chain()
        rows = []
        for node in g.nodes:
            shapes = [t.shape for t in node.outputs]
            shp = ", ".join(shape_str(s).replace("?", "None") for s in shapes)
            src = ", ".join(t.node.layer.name for t in node.inbound)
            rows.append((f"{node.layer.name} ({type(node.layer).__name__})", shp,
                         f"{node.layer.count_params():,}", src))
        heads = ["Layer (type)", "Output Shape", "Param #"] + ([] if chain else ["Connected to"])
        cols = [max([len(h)] + [len(r[i]) for r in rows]) + 3 for i, h in enumerate(heads)]
        width = max(line_length, sum(cols))

        def row(vals: Sequence[str]) -> str:
            return " " + "".join(f"{v:<{w}}" for v, w in zip(vals, cols))

        lines = [f'Model: "{self.name}"', "_" * width, row(heads), "=" * width]
        for i, r in enumerate(rows):
            lines.append(row(r[:len(heads)]))
            lines.append(("_" if i < len(rows) - 1 else "=") * width)
        if not rows:
            lines.append("=" * width)
        total = self.count_params()
        trainable = sum(int(p.size) for layer in self.layers for p in layer.trainable_weights)
        lines += [f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                  f"Non-trainable params: {total - trainable:,}", "_" * width]
        pf("\n".join(lines))

    def _is_chain(self) -> bool:
        g = self.graph
        assert g is not None
        prev = g.inputs[0] if len(g.inputs) == 1 else None
        for node in g.nodes:
            if len(node.inbound) != 1 or node.inbound[0] is not prev or len(node.outputs) != 1:
                return False
            prev = node.outputs[0]
        return True

    # ---- config and saving --------------------------------------------------------------------
    def get_config(self) -> Dict[str, Any]:
        """The graph as JSON-compatible data: each layer's config, each node's inputs as
        ``[layer_name, node_index, tensor_index]`` references, and the model's inputs and
        outputs as references."""
        g = self._require_graph("get_config")
        node_index: Dict[int, Tuple[str, int]] = {}
        counts: Dict[str, int] = {}
        inputs_cfg = []
        for t in g.inputs:
            node_index[id(t.node)] = (t.node.layer.name, 0)
            inputs_cfg.append([t.node.layer.name, 0, 0])
        for node in g.nodes:
            k = counts.get(node.layer.name, 0)
            counts[node.layer.name] = k + 1
            node_index[id(node)] = (node.layer.name, k)

        def ref(t: KerasTensor) -> List[Any]:
            name, k = node_index[id(t.node)]
            return [name, k, t.index]

        def enc(v: Any) -> Any:
            return {"__tensor__": ref(v)} if isinstance(v, KerasTensor) else v

        nodes_cfg = [{"layer": node.layer.name,
                      "inputs": map_structure(enc, node.inputs_structure),
                      "kwargs": {k: map_structure(enc, v) for k, v in node.kwargs.items()}}
                     for node in g.nodes]
        layers_cfg = [{"class_name": "InputLayer", "config": t.node.layer.get_config()} for t in g.inputs]
        layers_cfg += [serialize(layer) for layer in g.layers]
        return {"name": self.name, "layers": layers_cfg, "nodes": nodes_cfg, "inputs": inputs_cfg,
                "outputs": [ref(t) for t in g.outputs], "single_input": self._single_input,
                "single_output": self._single_output}

    @classmethod
    def from_config(cls, config: Dict[str, Any], custom_objects: Optional[Dict[str, Any]] = None) -> "Model":
        """Inverse of :meth:`get_config` (fresh weights)."""
        made: Dict[str, Any] = {}
        produced: Dict[Tuple[str, int], List[KerasTensor]] = {}
        for lc in config["layers"]:
            if lc.get("class_name") == "InputLayer":
                c = lc["config"]
                t = Input(shape=c["shape"], dtype=c.get("dtype", "float32"), name=c["name"])
                produced[(c["name"], 0)] = [t]
                made[c["name"]] = t.node.layer
            else:
                layer = deserialize(lc, custom_objects)
                made[layer.name] = layer
        counts: Dict[str, int] = {}

        def dec(v: Any) -> Any:
            if isinstance(v, dict) and "__tensor__" in v:
                name, k, i = v["__tensor__"]
                return produced[(name, int(k))][int(i)]
            return v

        for nc in config["nodes"]:
            layer = made[nc["layer"]]
            inputs = _restructure(nc["inputs"], dec)
            kwargs = {k: _restructure(v, dec) for k, v in nc.get("kwargs", {}).items()}
            out = layer(inputs, **kwargs)
            k = counts.get(layer.name, 0)
            counts[layer.name] = k + 1
            produced[(layer.name, k)] = _as_list(out)

        def get(r: Sequence[Any]) -> KerasTensor:
            return produced[(r[0], int(r[1]))][int(r[2])]

        ins = [get(r) for r in config["inputs"]]
        outs = [get(r) for r in config["outputs"]]
        return cls(ins[0] if config.get("single_input", len(ins) == 1) else ins,
                   outs[0] if config.get("single_output", len(outs) == 1) else outs,
                   name=config.get("name"))

    def save(self, filepath: str, include_optimizer: bool = True) -> None:
        """Saves architecture, weights, compile config and optimizer state to one safetensors
        file (see :mod:`rnnkit.serialization`); the write is atomic. Use a name ending in
        ``.rnnkit`` or ``.safetensors`` (or no extension). A name ending in ``.keras`` writes a
        Keras 3 archive instead (:mod:`rnnkit.keras_format`: ``keras.models.load_model`` opens
        it; needs h5py); legacy ``.h5`` names are refused."""
        from rnnkit import keras_format, serialization

        serialization.check_filename(filepath, keras_archive=True)
        if keras_format.is_keras_archive_name(filepath):
            keras_format.save_model(self, filepath, include_optimizer=include_optimizer)
        else:
            serialization.save_model(self, filepath, include_optimizer=include_optimizer)

    def save_weights(self, filepath: str) -> None:
        """Saves only the weights (safetensors, atomic write)."""
        from rnnkit import serialization

        serialization.check_filename(filepath)
        serialization.save_weights(self, filepath)

    def load_weights(self, filepath: str) -> None:
        """Loads weights saved by :meth:`save_weights` or :meth:`save` into this (built) model;
        layers are matched by position, class and parameter shapes."""
        from rnnkit import serialization

        serialization.load_weights(self, filepath)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} layers={[l.name for l in self.layers]}>"


def _restructure(v: Any, fn: Callable[[Any], Any]) -> Any:
    """JSON lists back into the call structure, with tensor references resolved."""
    if isinstance(v, dict) and "__tensor__" in v:
        return fn(v)
    if isinstance(v, list):
        return [_restructure(x, fn) for x in v]
    if isinstance(v, dict):
        return {k: _restructure(x, fn) for k, x in v.items()}
    return v


def _as_array(name: str, v: Any) -> np.ndarray:
    if isinstance(v, np.ndarray):
        return v
    try:
        return np.asarray(v)
    except ValueError as e:
        if "inhomogeneous" in str(e) or "sequence" in str(e):
            raise ValueError(f"{name}: the samples have different lengths (a ragged list); pad them to "
                             "one length first, e.g. rnnkit.utils.pad_sequences(...), and mask the padding "
                             "(Masking or Embedding(mask_zero=True))") from None
        raise


def _per_output(what: str, value: Any, names: Optional[List[str]], n: int,
                convert: Callable[[Any], Any]) -> List[Any]:
    """A compile argument spread over the outputs: one value for all, a list in output order or a
    dict by output layer name (missing names get None). A serialized object (a dict with
    ``class_name``, as in a saved compile config) is one value, not a mapping."""
    if isinstance(value, dict) and "class_name" not in value:
        if names is None:
            raise ValueError(f"{what}: a dict needs a built model (output names)")
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ValueError(f"{what}: unknown output name(s) {unknown}; the outputs are {names}")
        return [None if names[i] not in value or value[names[i]] is None else convert(value[names[i]])
                for i in range(n)]
    if isinstance(value, (list, tuple)) and what != "metrics":
        if len(value) != n:
            raise ValueError(f"{what}: expected {n} entries (one per output), got {len(value)}")
        return [None if v is None else convert(v) for v in value]
    return [convert(value) for _ in range(n)]
