"""Parts by type: a route gets the one part it asks for, once per request, or a clear error."""

from __future__ import annotations

from typing import Annotated, Protocol

import httpx
import pytest
from fastapi import Depends, FastAPI

from app.core.parts import MissingPartError, Parts, part


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now


class Greeter(Protocol):
    def greet(self) -> str: ...


class English:
    def greet(self) -> str:
        return "hello"


class CountingParts(Parts):
    """Parts that count how often each kind is looked up."""

    def __init__(self) -> None:
        super().__init__()
        self.gets: dict[type, int] = {}

    def get(self, kind):  # type: ignore[no-untyped-def]
        self.gets[kind] = self.gets.get(kind, 0) + 1
        return super().get(kind)


class TestParts:
    def test_a_part_is_found_by_the_type_it_was_added_under(self) -> None:
        parts = Parts()
        clock, greeter = Clock(1.0), English()
        parts.add(Clock, clock)
        parts.add(Greeter, greeter)  # type: ignore[type-abstract]  # (by its interface)
        assert parts.get(Clock) is clock
        assert parts.get(Greeter) is greeter  # type: ignore[type-abstract]

    def test_a_missing_part_is_an_error_that_names_it(self) -> None:
        parts = Parts()
        parts.add(Clock, Clock(1.0))
        with pytest.raises(MissingPartError, match="English"):
            parts.get(English)

    def test_a_missing_part_is_a_lookup_error(self) -> None:
        assert issubclass(MissingPartError, LookupError)


async def now_of(clock: Annotated[Clock, Depends(part(Clock))]) -> float:
    """A dependency of the route's that asks for the same part as the route."""
    return clock.now


def app_with(parts: Parts) -> FastAPI:
    app = FastAPI()
    app.state.parts = parts

    @app.get("/now")
    async def now(
        clock: Annotated[Clock, Depends(part(Clock))],
        seen: Annotated[float, Depends(now_of)],
    ) -> dict[str, float]:
        return {"now": clock.now, "seen": seen}

    @app.get("/greeting")
    async def greeting(greeter: Annotated[English, Depends(part(English))]) -> dict[str, str]:
        return {"greeting": greeter.greet()}

    return app


async def get(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        return await http.get(path)


class TestPartDependency:
    def test_one_dependency_per_kind(self) -> None:
        assert part(Clock) is part(Clock)
        assert part(Clock) is not part(English)
        assert part(Clock).__name__ == "part_Clock"

    async def test_a_route_gets_its_part_looked_up_once_however_many_ask(self) -> None:
        parts = CountingParts()
        parts.add(Clock, Clock(42.0))
        response = await get(app_with(parts), "/now")
        assert response.json() == {"now": 42.0, "seen": 42.0}
        assert parts.gets == {Clock: 1}

    async def test_a_route_asking_for_a_missing_part_fails_naming_it(self) -> None:
        parts = Parts()
        parts.add(Clock, Clock(42.0))
        with pytest.raises(MissingPartError, match="English"):
            await get(app_with(parts), "/greeting")
