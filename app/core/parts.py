"""The long-lived parts of a process, found by type: what a route depends on, and nothing more.

``app.runtime`` builds the parts once per process and registers each under the type its users
ask for (a class, or a Protocol that names only what they need). A route asks for one part
with ``Annotated[TokenVerifier, Depends(part(TokenVerifier))]``, so a domain module never sees
the whole runtime, and nothing below ``app.runtime`` imports it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from starlette.requests import HTTPConnection

T = TypeVar("T")


class MissingPartError(LookupError):
    """A part was asked for that the runtime did not register (a wiring mistake)."""


class Parts:
    def __init__(self) -> None:
        self._parts: dict[type[Any], object] = {}

    def add(self, kind: type[T], part: T) -> None:
        self._parts[kind] = part

    def get(self, kind: type[T]) -> T:
        try:
            return cast(T, self._parts[kind])
        except KeyError:
            raise MissingPartError(kind.__name__) from None


def parts_of(connection: HTTPConnection) -> Parts:
    parts: Parts = connection.app.state.parts
    return parts


# One dependency per kind, so FastAPI resolves a part once per request however many ask.
_DEPENDENCIES: dict[type[Any], Callable[[HTTPConnection], Awaitable[Any]]] = {}


def part(kind: type[T]) -> Callable[[HTTPConnection], Awaitable[T]]:
    """A FastAPI dependency that returns this process's part of type ``kind``."""
    known = _DEPENDENCIES.get(kind)
    if known is not None:
        return known

    # A coroutine although it does not await: FastAPI runs a plain function in the thread
    # pool, a hop that costs more than the lookup.
    async def dependency(connection: HTTPConnection) -> T:
        return parts_of(connection).get(kind)

    dependency.__name__ = f"part_{kind.__name__}"
    _DEPENDENCIES[kind] = dependency
    return dependency
