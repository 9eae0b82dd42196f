"""The ONNX exporter's internals (the public entry point is :func:`rnnkit.onnx.export`).

- ``graph.py``: :class:`~rnnkit._onnx.graph.Builder` (nodes, initializers, unique names, opset-aware
  helpers), :class:`~rnnkit._onnx.graph.Value` (a tensor in one or both memory layouts) and the
  activation functions;
- ``recurrent.py``: the ONNX ``RNN``/``LSTM``/``GRU`` node and Keras's output semantics around it
  (masks, ``go_backwards``, ``return_sequences``, states);
- ``layers.py``: the Keras-style layers and the models made of them;
- ``modules.py``: the PyTorch-style ``rnnkit.nn`` modules.

Every module here imports ``onnx`` at the top: import them only once ``onnx`` is known to be
there (``rnnkit.onnx`` does).
"""
