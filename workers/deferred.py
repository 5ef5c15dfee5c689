"""Dramatiq without asyncio until something uses asyncio.

dramatiq imports asyncio at its own import, for async actors and their
event loop thread (``dramatiq.asyncio``); asyncio brings ssl, socket and
more with it. None of our actors is async, and on the embedded default
(``run``, ``run --once``) nothing else needs asyncio: deferring it saves
17-18 ms of ``run --once``'s imports (medians of 25 paired runs). So the
``workers`` package (and ``resolwe_storage``, before anything else) has
``dramatiq.asyncio``'s ``import asyncio``, and it alone, bind a stand-in
(``defer_asyncio``). The first use of any name of the stand-in, by anyone,
loads the real asyncio; from then on the stand-in forwards to it, and
``sys.modules`` and ``dramatiq.asyncio`` hold the real module. Where
asyncio was loaded first, dramatiq takes it as usual and nothing here is
needed. On Redis nothing is saved: redis-py's import takes names from
asyncio, which loads it through the stand-in. Kept here alone, and checked
against the installed dramatiq by ``tests/unit/workers/test_deferred.py``.
"""

from __future__ import annotations

import importlib
import sys
import threading
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

#: The module deferred, and the one module whose import of it is.
_DEFERRED = "asyncio"
_IMPORTER = "dramatiq.asyncio"

_loading = threading.RLock()


class _StandIn(ModuleType):
    """Stands for asyncio until a name of it is used: then loads it and forwards.

    Not while the import system makes it (it looks for the module's
    attributes then): only once in place (``_Loader.exec_module``).
    """

    def __getattr__(self, name: str) -> Any:
        if not self.__dict__.get("_in_place"):
            raise AttributeError(name)
        return getattr(load_asyncio(), name)


def load_asyncio() -> ModuleType:
    """The real asyncio, loaded now if a stand-in held its place; idempotent and thread-safe."""
    with _loading:
        current = sys.modules.get(_DEFERRED)
        if current is not None and not isinstance(current, _StandIn):
            return current
        if current is not None:
            del sys.modules[_DEFERRED]
        try:
            real = importlib.import_module(_DEFERRED)
        except BaseException:
            if current is not None:
                sys.modules.setdefault(_DEFERRED, current)
            raise
        importer = sys.modules.get(_IMPORTER)
        if importer is not None and isinstance(importer.__dict__.get(_DEFERRED), _StandIn):
            setattr(importer, _DEFERRED, real)
        return real


class _Loader:
    """Makes the stand-in (an import system loader)."""

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        return _StandIn(spec.name)

    def exec_module(self, module: ModuleType) -> None:
        module.__dict__["_in_place"] = True


class _Defer:
    """Answers ``dramatiq.asyncio``'s ``import asyncio``, and it alone, with the stand-in.

    ``dramatiq.asyncio`` is importing and has not yet bound the name
    (its ``import asyncio`` comes first): nothing else asks then.
    """

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if name != _DEFERRED:
            return None
        importer = sys.modules.get(_IMPORTER)
        if importer is None or _DEFERRED in importer.__dict__:
            return None
        return ModuleSpec(_DEFERRED, _Loader())  # type: ignore[arg-type]


def defer_asyncio() -> None:
    """From now on, dramatiq's import goes without asyncio (unless loaded before); idempotent."""
    if not any(isinstance(finder, _Defer) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Defer())
