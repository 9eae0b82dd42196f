"""Every activation of rnnkit.activations: Keras 3's values, float64 finite-difference gradients,
the derivative, aliases and errors; Dense with an activation that needs its input (gelu)."""
from __future__ import annotations

import numpy as np
import pytest

import helpers
from rnnkit import activations as A
from rnnkit.layers import Dense

ELEMENTWISE = ["linear", "relu", "relu6", "tanh", "sigmoid", "hard_sigmoid", "hard_silu", "swish",
               "softplus", "softsign", "exponential", "selu", "mish", "hard_tanh", "leaky_relu", "elu",
               "gelu", "gelu(approximate=True)"]
ROWWISE = ["softmax", "log_softmax"]


def _x(rng, shape=(3, 5)):
    x = rng.standard_normal(shape) * 2.5
    # keep away from the kinks (0, +-1, +-3, 6) where one-sided derivatives differ
    for k in (0.0, 1.0, -1.0, 3.0, -3.0, 6.0):
        x[np.abs(x - k) < 1e-3] += 1e-2
    return x


@pytest.mark.parametrize("name", ELEMENTWISE + ROWWISE)
def test_gradient_matches_finite_differences(rng, name):
    act = A.get(name)
    x = _x(rng)
    dy = rng.standard_normal(x.shape)
    y = act(x)
    num = helpers.numerical_grad(lambda: float(np.sum(act(x) * dy)), x)
    helpers.assert_close_rel(act.backward(dy, y, x), num, 1e-7, name)
    d = act.derivative(x)
    got = np.einsum("nj,nji->ni", dy, d) if name in ROWWISE else d * dy
    helpers.assert_close_rel(got, num, 1e-7, name + " derivative")


@pytest.mark.keras
@pytest.mark.parametrize("name", ELEMENTWISE + ROWWISE)
def test_values_match_keras(keras, rng, name):
    import torch

    x = _x(rng).astype(np.float32)
    if name == "gelu(approximate=True)":
        want = keras.activations.gelu(torch.tensor(x), approximate=True)
    else:
        want = keras.activations.get(name)(torch.tensor(x))
    np.testing.assert_allclose(A.get(name)(x), want.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert A.get(name)(x).dtype == np.float32


def test_aliases_names_and_errors():
    assert A.get("silu") is A.swish and A.get("hard_swish") is A.hard_silu
    assert A.get("leaky_relu(0.1)").name == "leaky_relu(0.1)"
    assert A.get(A.serialize(A.make_elu(0.5)))(np.array([-1.0]))[0] == pytest.approx(0.5 * np.expm1(-1.0))
    with pytest.raises(ValueError, match="activation: unknown name 'swoosh'"):
        A.get("swoosh")
    with pytest.raises(TypeError, match="a plain callable has no derivative"):
        A.get(np.tanh)


@pytest.mark.parametrize("name", ["gelu", "swish", "mish", "selu", "elu", "softplus", "hard_sigmoid"])
def test_dense_with_any_activation(rng, name):
    layer = Dense(3, activation=name, dtype="float64")
    x = rng.standard_normal((4, 5))
    W = rng.standard_normal((4, 3))
    layer(x)
    layer.zero_grad()
    dx = layer.backward(W)
    num = helpers.numerical_grad(lambda: float(np.sum(layer(x) * W)), x)
    helpers.assert_close_rel(dx, num, 1e-6, name)
