"""Name -> builder registries, one per family: channels, teachers, codecs, strategies, datasets,
partitioners and studies (`fedtosc/registries.py` lists them).

open_clip's factory is the model: the config names an entry, one factory builds it, and an
unknown name lists the known ones. Entries name their builder by import path ("module:attr"),
so the config checks names without importing torch, Sionna or Flower; `register` adds an entry
at run time (a plug-in, or a test's toy entry) by path or by object.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Registry", "UnknownEntryError"]


class UnknownEntryError(ValueError):
    """A config names an entry no registry holds; the message lists the known ones."""


class Registry:
    """The entries of one family, known by name. `key` is the config key that selects one."""

    def __init__(self, key: str, entries: dict[str, str], parameters: dict[str, dict[str, type]] | None = None) -> None:
        self.key = key
        self._entries: dict[str, str | Any] = dict(entries)
        # Per entry, the typed parameters a config may give it (name -> type), known without importing it.
        self._parameters: dict[str, dict[str, type]] = dict(parameters or {})

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def register(self, name: str, builder: str | Any, parameters: dict[str, type] | None = None) -> None:
        """Add `name`: an import path "package.module:attribute", or the builder itself, with the
        typed parameters a config may give it (e.g. `{"spread": float}`)."""
        if name in self._entries:
            raise ValueError(f"{self.key}: {name!r} is already registered")
        self._entries[name] = builder
        self._parameters[name] = dict(parameters or {})

    def unregister(self, name: str) -> None:
        del self._entries[name]
        self._parameters.pop(name, None)

    def parameters(self, name: str) -> dict[str, type]:
        """The typed parameters entry `name` takes beyond what its whole family shares."""
        return dict(self._parameters.get(self.check(name), {}))

    def check(self, name: str) -> str:
        """`name`, or UnknownEntryError naming the key, the value and the known names."""
        if name not in self._entries:
            raise UnknownEntryError(f"{self.key}={name!r} is not one of {list(self._entries)}")
        return name

    def get(self, name: str) -> Any:
        """The builder registered as `name`, imported on first use."""
        builder = self._entries[self.check(name)]
        if isinstance(builder, str):
            module, _, attribute = builder.partition(":")
            builder = getattr(importlib.import_module(module), attribute)
            self._entries[name] = builder
        return builder
