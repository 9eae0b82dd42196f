r"""Export rnnkit models to ONNX: :func:`export`.

>>> from rnnkit import onnx as rk_onnx
>>> proto = rk_onnx.export(model, "model.onnx")          # doctest: +SKIP
>>> import onnxruntime as ort                           # doctest: +SKIP
>>> ort.InferenceSession("model.onnx").run(None, {"input_1": x})  # doctest: +SKIP

Needs the ``onnx`` package (``pip install "rnnkit[onnx]"``), imported only when exporting; the
tests run the exported graphs in ONNX Runtime and compare them with rnnkit's own outputs
(float32, 1e-5).

What exports
------------
``Sequential``, functional ``Model`` (any graph of the layers below, several inputs and
outputs, shared layers), ``FeedForwardNetwork``, ``RecurrentNetwork`` (its graph takes and
returns the recurrent layers' states) and the ``rnnkit.nn`` modules ``RNN``/``LSTM``/``GRU``
(``num_layers``, ``bidirectional``, ``batch_first``), ``Linear``, ``Embedding``, ``Dropout``
and ``Sequential`` chains of them. The graph computes in float32 (float64 weights are rounded)
in inference mode (dropout is the identity).

=================================  ========================================================
rnnkit                             ONNX
=================================  ========================================================
SimpleRNN / LSTM / GRU,            ``RNN`` / ``LSTM`` (gates i, o, f, c) / ``GRU`` (z, r, h;
RNN(SimpleRNNCell/LSTMCell/        ``linear_before_reset=1`` for ``reset_after=True``, 0 for
GRUCell)                           False), time-major with ``Transpose`` at the edges;
                                   ``activations`` Tanh/Relu/Affine(1, 0) for tanh/relu/linear
                                   and Sigmoid/HardSigmoid(1/6, 1/2) for the gates
go_backwards                       ``direction="reverse"``, the sequence flipped (``Slice``
                                   with step -1) as Keras returns it
return_sequences=False             ``Y_h`` (``Where`` on the last step's mask with
                                   ``zero_output_for_mask``)
return_state, initial_state        ``Y_h``/``Y_c``; graph tensors as ``initial_h``/``initial_c``
Bidirectional                      one ``direction="bidirectional"`` node (two nodes when the
                                   halves differ); merge ``Concat``/``Add``/``Mul``/
                                   ``Add``+``Div``, or two outputs for ``merge_mode=None``
Embedding(mask_zero), Masking      ``Gather``; masks ``Not(Equal(x, 0))`` /
                                   ``any(x != value)``; recurrent layers get
                                   ``sequence_lens = ReduceSum(Cast(mask))`` and ``Where`` for
                                   the padded steps' outputs
Dense, TimeDistributed(Dense)      ``Gemm`` (2-D) or ``MatMul`` + ``Add``, then the activation
Activation and Dense/Conv1D        relu, relu6 (Clip), sigmoid, tanh, softmax / log_softmax
activations                        (last axis), gelu (``Gelu`` from opset 20, else the Erf or
                                   tanh formula), elu, selu, softplus, softsign, leaky_relu,
                                   hard_sigmoid (HardSigmoid 1/6, 1/2), hard_silu (HardSwish),
                                   hard_tanh, mish, exponential, swish (x * Sigmoid(x)), linear
TimeDistributed(other layer)       ``Reshape`` to ``[N*T, ...]``, the layer, ``Reshape`` back
Dropout                            nothing (identity)
Flatten / Reshape / Permute /      ``Flatten`` / ``Reshape`` / ``Transpose`` / ``Expand``
RepeatVector
Concatenate, Add, Subtract,        ``Concat``, ``Add``, ``Sub``, ``Mul``, ``Add`` + ``Div``,
Multiply, Average, Maximum,        ``Max``, ``Min`` (``Where`` for Keras's mask rules), ``MatMul``
Minimum, Dot                       (inputs of 2 or 3 dimensions)
Attention, AdditiveAttention       ``MatMul`` / ``Tanh`` + ``ReduceSum`` scores, masks and the
                                   causal mask with ``Where``, ``Softmax``, ``MatMul``
LayerNormalization                 ``LayerNormalization`` (opset >= 17; the formula below)
BatchNormalization                 ``Sub``, ``Mul``, ``Add`` with the moving statistics
GlobalAverage/MaxPooling1D         ``ReduceMean`` / ``ReduceMax`` (masked: ``Where`` and sums)
AveragePooling1D, MaxPooling1D,    ``AveragePool`` (``count_include_pad=0``), ``MaxPool``,
Conv1D                             ``Conv`` (``pads`` for causal, ``SAME_UPPER`` for same)
=================================  ========================================================

What raises
-----------
``ValueError`` naming the layer (name and class) and the option: ``stateful=True`` (an ONNX
graph keeps no state; export a RecurrentNetwork instead), ``zoneout``, a user cell in
``RNN(cell)`` or ``StackedRNNCells``, layer classes without an ONNX form (and subclasses of
rnnkit's layers, which may compute something else), activations outside the list above,
``proj_size`` on ``nn.LSTM``, a recurrent module that is not the last of an ``nn.Sequential``,
options the exporter does not know set to a non-default value (e.g. ``layer_norm=True``), a
layer that is not built; ``dynamic_batch=False`` / ``dynamic_time=False`` when the model does not
fix that size. ``TypeError`` for a model of another kind or arguments of the wrong type.
Integer inputs keep their dtype in the graph (ONNX Runtime checks it exactly).

Masks
-----
A mask reaches an ONNX recurrent operator as a number of valid steps per sample: it must be
right padding (valid steps first). A mask with holes (a masked step before a valid one) cannot
be expressed: the graph then treats the first ``count`` steps as valid and its outputs differ
from rnnkit's. Layers that only pass masks on, and GlobalAveragePooling1D,
GlobalMaxPooling1D, Attention and the merges, follow any mask exactly.

Shapes
------
The graph's inputs are the model's (``[N, T, C]``, ``[N, T]`` indices, ...; an ``nn``
recurrent module without ``batch_first`` takes ``[T, N, C]``) with symbolic ``batch`` and
``time`` axes (``dynamic_batch``, ``dynamic_time``); outputs as the model returns them.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

__all__ = ["export", "DEFAULT_OPSET", "MIN_OPSET"]

#: the opset used when ``opset`` is None (ONNX Runtime 1.16 and later run it)
DEFAULT_OPSET = 17
#: the oldest opset the exporter writes
MIN_OPSET = 13


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("rnnkit.onnx.export needs the onnx package: pip install \"rnnkit[onnx]\" (or pip install "
                          "onnx; onnxruntime to run the exported models)") from e
    return onnx


def export(model: Any, path: Optional[Union[str, "os.PathLike[str]"]] = None, *, opset: Optional[int] = None,
           input_names: Optional[Sequence[str]] = None, output_names: Optional[Sequence[str]] = None,
           dynamic_batch: bool = True, dynamic_time: bool = True) -> Any:
    """Exports ``model`` to an ONNX model (and writes it to ``path``).

    Parameters
    ----------
    model
        A built ``Sequential``/``Model``, a ``FeedForwardNetwork``/``RecurrentNetwork`` of built
        layers, or an ``rnnkit.nn`` module (``RNN``, ``LSTM``, ``GRU``, ``Linear``,
        ``Embedding``, ``Dropout``, ``Sequential``).
    path
        Where to write the model (atomically), or None to only return it.
    opset
        The ONNX opset, in ``[MIN_OPSET, onnx's newest]``; default :data:`DEFAULT_OPSET`.
        ``LayerNormalization`` uses the operator from 17 on (a formula below), gelu the ``Gelu``
        operator from 20 on.
    input_names, output_names
        Names of the graph's inputs and outputs, in the model's order. Defaults: a Keras-style
        model's input layer names and output layer names (``"<layer>/out<k>"`` for a layer with
        several outputs); ``"input"``/``"output"`` for the containers and modules, with
        ``"h_n"``, ``"c_n"`` for a recurrent module and ``"<layer>_h0"``/``"<layer>_h_n"``
        (``_c0``, ``_c_n``; ``forward_``/``backward_`` for a Bidirectional) for the states of a
        RecurrentNetwork.
    dynamic_batch, dynamic_time
        Make the batch axis / the time axis of every input symbolic (``"batch"``, ``"time"``);
        False keeps the model's fixed size (ValueError when it has none).

    Returns
    -------
    onnx.ModelProto
        Checked with ``onnx.checker.check_model``.

    Shapes
    ------
    See the module documentation: the graph's inputs and outputs are the model's.
    """
    onnx = _import_onnx()
    newest = int(onnx.defs.onnx_opset_version())
    if opset is None:
        opset = DEFAULT_OPSET
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError(f"opset: expected an int, got {type(opset).__name__}")
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset: expected an int in [{MIN_OPSET}, {newest}], got {opset}")
    for arg, v in (("dynamic_batch", dynamic_batch), ("dynamic_time", dynamic_time)):
        if not isinstance(v, bool):
            raise TypeError(f"{arg}: expected a bool, got {type(v).__name__}")
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str, a path or None, got {type(path).__name__}")

    import rnnkit
    from rnnkit._onnx.build import build

    proto = build(model, opset=opset, input_names=input_names, output_names=output_names,
                  dynamic_batch=dynamic_batch, dynamic_time=dynamic_time, producer_version=rnnkit.__version__)
    onnx.checker.check_model(proto)
    if path is not None:
        target = os.fspath(path)
        tmp = f"{target}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                f.write(proto.SerializeToString())
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return proto
