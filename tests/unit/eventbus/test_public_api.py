"""What ``modules.eventbus`` exports for the users of ``bus.health()``."""

from __future__ import annotations

import typing

import modules.eventbus as eventbus
from tests.unit.eventbus.conftest import MakeBus


def test_health_types_are_exported() -> None:
    assert {"EngineHealth", "HealthState"} <= set(eventbus.__all__)
    assert set(typing.get_args(eventbus.HealthState)) == {"up", "down", "stopped"}


async def test_health_returns_the_exported_type(make_bus: MakeBus) -> None:
    h = await make_bus()
    health = h.bus.health()["default"]
    assert isinstance(health, eventbus.EngineHealth)
    assert (health.state, health.error) == ("up", None)
