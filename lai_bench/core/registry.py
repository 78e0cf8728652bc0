"""One registry class for every kind of plug-in (methods, backbones, tasks), as mmengine's and timm's: a name maps
to an entry, filled by a decorator in the entry's own file.

A registry imports none of its members. What fills it is the import of its package (the package `__init__` imports
every member file), so a registry sits below its members and the import graph has no circle.
"""
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind: `register` (a decorator), `get` (one line with "did you mean" for an unknown
    name), `list` and `info`.

    `make` turns what the decorator receives into the stored entry (default: the object itself), e.g. an instance
    of a registered class or a dataclass of metadata.
    """

    def __init__(self, kind: str, make: Callable[..., T] | None = None):
        self.kind = kind
        self._make = make
        self._entries: dict[str, T] = {}

    def register(self, name: str, **meta: Any) -> Callable[[Any], Any]:
        """A decorator: store the decorated object (through `make`, given `name` and `meta`) under `name`."""

        def wrap(obj: Any) -> Any:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = self._make(name, obj, **meta) if self._make else obj
            return obj

        return wrap

    def unregister(self, name: str) -> None:
        """Remove an entry (a test's own plug-in, once the test is done); unknown names are ignored."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry; ValueError in one line naming the nearest names and every allowed one."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}{did_you_mean(str(name), self._entries)}; "
                             f"allowed: {', '.join(sorted(self._entries))}")
        return self._entries[name]

    def list(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def info(self) -> dict[str, T]:
        """Every entry by name (a copy)."""
        return dict(sorted(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(sorted(self._entries))})"
