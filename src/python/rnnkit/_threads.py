"""Per-thread attributes and the gradient lock: what keeps layers, modules and models correct when
several Python threads share one object.

- :class:`PerThread` is a descriptor for state that belongs to *one call* (what ``forward`` keeps
  for ``backward``, the last output mask, the last initial-state gradients). Each thread sees its
  own value, so ``out = m(x); m.backward(d)`` from 8 threads on one shared object gives each thread
  the gradient of its own forward.
- :data:`GRAD_LOCK` serialises accumulation into shared gradient buffers (``p.grad += g``,
  ``layer.grads[k] += g``), so concurrent backward passes add up exactly and lose nothing.
"""
from __future__ import annotations

import threading
from typing import Any, Optional

__all__ = ["PerThread", "GRAD_LOCK"]

#: Held while adding to a shared gradient buffer.
GRAD_LOCK = threading.RLock()


class PerThread:
    """A data descriptor: ``obj.attr`` is kept per instance *and per thread* (``None`` until the
    thread sets it). Storage is a ``threading.local`` in the instance's ``__dict__``."""

    def __init__(self, doc: str = "") -> None:
        self.__doc__ = doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @staticmethod
    def _store(obj: Any) -> threading.local:
        d = obj.__dict__
        store = d.get("_per_thread")
        if store is None:
            # setdefault is atomic under the GIL: two threads never get two stores
            store = d.setdefault("_per_thread", threading.local())
        return store

    def __get__(self, obj: Any, owner: Optional[type] = None) -> Any:
        if obj is None:
            return self
        return getattr(self._store(obj), self.name, None)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(self._store(obj), self.name, value)
