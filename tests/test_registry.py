"""The class_name/config round trip and its errors, for every kind that uses it."""
import pytest

from rnnkit import losses, optimizers, schedules

KINDS = [
    (losses, losses.CategoricalCrossentropy(from_logits=True), "loss class"),
    (optimizers, optimizers.Adam(learning_rate=0.01), "optimizer class"),
    (schedules, schedules.ExponentialDecay(0.1, 10, 0.5, staircase=True), "learning-rate schedule"),
]


@pytest.mark.parametrize("module,obj,what", KINDS)
def test_round_trip_keeps_the_config(module, obj, what):
    cfg = module.serialize(obj)
    assert cfg["class_name"] == type(obj).__name__
    again = module.deserialize(cfg)
    assert type(again) is type(obj) and again.get_config() == obj.get_config()


@pytest.mark.parametrize("module,obj,what", KINDS)
def test_bad_configs_raise_clear_errors(module, obj, what):
    with pytest.raises(ValueError, match="config: expected a dict with 'class_name' and 'config'"):
        module.deserialize({"config": {}})
    with pytest.raises(ValueError, match=f"config: unknown {what} 'Nope'; expected one of"):
        module.deserialize({"class_name": "Nope", "config": {}})
    with pytest.raises(TypeError, match="expected a"):
        module.serialize(object())
