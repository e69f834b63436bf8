"""What a session keeps of a set the services' cache owns: weak references, never the set itself.

The cache bounds the memory of all sets together (AppConfig.set_cache_mb). A session's search index
or drawn map that kept its set strongly would keep it alive after the cache let it go, and a thousand
sessions would keep a thousand sets. A `WeakHold` keeps weak references; once the cache drops the set,
`get` raises a UserInputError that tells the visitor which button makes it again.
"""

from __future__ import annotations

import weakref

from core.errors import UserInputError


class WeakHold:
    """Weak references to a tuple of objects (None entries stay None); `strong=True` keeps them (tests)."""

    def __init__(self, objects: tuple, dropped: str, strong: bool = False):
        self._refs = tuple(None if o is None else weakref.ref(o) for o in objects)
        self._strong = objects if strong else None
        self._dropped = dropped

    def get(self) -> tuple:
        """The objects, or a UserInputError once the cache let any of them go."""
        objects = tuple(None if r is None else r() for r in self._refs)
        if any(r is not None and o is None for r, o in zip(self._refs, objects)):
            raise UserInputError(self._dropped)
        return objects
