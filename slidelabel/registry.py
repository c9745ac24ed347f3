"""One way to register things by name: extractors, models, strategies, normalisations, slide
readers, job kinds, segment and feature formats.

A :class:`Registry` is built on first use (never at import): its ``load`` function adds the
built-in entries, then the entry points of ``entry_point_group`` are added; a plugin that fails
to load is logged and skipped, as large_image does with its tile sources. Items declared with
:meth:`Registry.add` before that (a decorator on a built-in function) come first. A registry
reads as a mapping from name to item.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from slidelabel.errors import ParameterError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class _Missing:
    """No default given to :meth:`Registry.get`."""


_MISSING = _Missing()


@dataclass(frozen=True)
class Entry:
    """What a registry lists about one item: its ``name``, a one-line ``description`` and whether
    it is the ``default``."""

    name: str
    description: str
    default: bool


class Registry(Mapping[str, T], Generic[T]):
    """Items of one ``kind`` ("segment format", "feature extractor") by name.

    Parameters
    ----------
    kind : str
        What the items are, in the user's words; error messages use it.
    entry_point_group : str or None
        Entry-point group third-party packages declare their items under (each entry point
        loads to a zero-argument callable returning the item); None: built-ins only.
    load : callable, optional
        Called once with the registry, on first use, to :meth:`add` the built-in items.

    Examples
    --------
    >>> colours = Registry("colour", None, load=lambda r: r.add("red", (255, 0, 0), description="warm"))
    >>> colours.get("red")
    (255, 0, 0)
    >>> [e.name for e in colours.entries()]
    ['red']
    """

    def __init__(self, kind: str, entry_point_group: str | None,
                 *, load: Callable[[Registry[T]], None] | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._load = load
        self._items: dict[str, tuple[T, Entry]] = {}
        self._loaded = False
        self._loading = False
        # The API answers in a thread pool: another thread's first use waits for the load instead
        # of reading a half-built registry (a slide "no reader can open" while large_image loads).
        self._lock = threading.RLock()

    def add(self, name: str, item: T, *, description: str = "", default: bool = False) -> None:
        """Register ``item`` as ``name``; a name already taken keeps its first item. Does not
        build the registry, so built-in modules may declare their items as they are imported."""
        if name in self._items:
            logger.warning("%s %r is registered twice; the first one is kept", self.kind, name)
            return
        self._items[name] = (item, Entry(name, description, default))

    def __setitem__(self, name: str, item: T) -> None:
        """Replace (or add) ``name``'s item, keeping its entry: for tests and for a deployment
        that overrides a built-in."""
        entry = self._built()[name][1] if name in self._built() else Entry(name, "", False)
        self._items[name] = (item, entry)

    def __delitem__(self, name: str) -> None:
        del self._built()[name]

    def __getitem__(self, name: str) -> T:
        return self._built()[name][0]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._built()))

    def __len__(self) -> int:
        return len(self._built())

    def default(self) -> str | None:
        """The name of the default item, None if none is marked."""
        return next((entry.name for entry in self.entries() if entry.default), None)

    def get(self, name: str, default: T | _Missing = _MISSING) -> T:  # type: ignore[override]
        """The item registered as ``name``; ``default`` if given and none is, else a
        :class:`ParameterError` listing the names."""
        items = self._built()
        if name in items:
            return items[name][0]
        if not isinstance(default, _Missing):
            return default
        raise ParameterError(f"unknown {self.kind} {name!r}; registered: {', '.join(items) or 'none'}")

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._built())

    def items(self) -> list[tuple[str, T]]:
        """``(name, item)`` pairs, in registration order."""
        return [(name, item) for name, (item, _) in self._built().items()]

    def entries(self) -> list[Entry]:
        """What to list about each item, in registration order."""
        return [entry for _, entry in self._built().values()]

    def _built(self) -> dict[str, tuple[T, Entry]]:
        if not self._loaded:
            with self._lock:
                if not (self._loaded or self._loading):  # a load that uses its own registry reads it as it is
                    self._loading = True
                    try:
                        if self._load is not None:
                            self._load(self)
                        if self.entry_point_group is not None:
                            self._add_plugins(self.entry_point_group)
                    finally:
                        self._loaded = True
        return self._items

    def _add_plugins(self, group: str) -> None:
        for entry in entry_points(group=group):
            try:
                item = entry.load()()
            except Exception:  # a third-party plugin must not break the built-in ones
                logger.exception("%s %r from %s failed to load", self.kind, entry.name, entry.value)
                continue
            self.add(entry.name, item, description=getattr(item, "description", ""))
