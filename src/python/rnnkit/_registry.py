"""The ``{"class_name": ..., "config": ...}`` form shared by every serializable kind of object
(layers, losses, optimizers, schedules, initializers, metrics): one implementation of both
directions and their errors (``config`` may be omitted and then means ``{}``, as in Keras)."""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional


def serialize_object(obj: Any, base: type, what: str) -> Dict[str, Any]:
    """``{"class_name": type(obj).__name__, "config": obj.get_config()}``; TypeError unless
    ``obj`` is a ``base``."""
    if not isinstance(obj, base):
        raise TypeError(f"{what}: expected a {base.__name__}, got {type(obj).__name__}")
    return {"class_name": type(obj).__name__, "config": obj.get_config()}


def deserialize_object(config: Any, lookup: Callable[[str], Optional[type]], what: str,
                       known: Iterable[str]) -> Any:
    """Rebuilds an object from :func:`serialize_object`'s form; ``lookup(class_name)`` finds the
    class (None when unknown, which raises a ValueError listing ``known``)."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"config: expected a dict with 'class_name' and 'config', got {config!r:.200}")
    inner = config.get("config") or {}
    if not isinstance(inner, dict):
        raise ValueError(f"config: 'config' must be a dict, got {type(inner).__name__}")
    cls = lookup(str(config["class_name"]))
    if cls is None:
        raise ValueError(f"config: unknown {what} {config['class_name']!r}; expected one of "
                         f"{sorted(known)}")
    return cls.from_config(dict(inner))
