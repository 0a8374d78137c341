"""A tenant's view of the bus: the same API, every call scoped to one tenant."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .event import Event, Handler, Subscription
from .router import Router
from .topics import matches

if TYPE_CHECKING:
    from .module import EventBusModule


class TenantEventBus:
    """Returned by ``bus.for_tenant(tenant_id)``. Events it publishes carry the tenant; its
    subscriptions see only that tenant's events; routing follows the tenant's overlay."""

    def __init__(self, bus: EventBusModule, tenant: str) -> None:
        self.bus = bus
        self.tenant = tenant

    async def publish(
        self,
        topic: str,
        payload: Any = None,
        *,
        metadata: Mapping[str, str] | None = None,
        partition_key: str | None = None,
    ) -> Event:
        return await self.bus.publish(
            topic, payload, metadata=metadata, partition_key=partition_key, tenant=self.tenant
        )

    async def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        payload_type: type[BaseModel] | None = None,
        replay: bool = False,
    ) -> Subscription:
        return await self.bus._subscribe(
            topic, handler, False, payload_type, replay, False, self.tenant
        )

    async def subscribe_async(
        self,
        topic: str,
        handler: Handler,
        *,
        payload_type: type[BaseModel] | None = None,
        replay: bool = False,
    ) -> Subscription:
        return await self.bus._subscribe(
            topic, handler, True, payload_type, replay, False, self.tenant
        )

    async def unsubscribe(self, sub: Subscription) -> None:
        await self.bus.unsubscribe(sub)

    def topics(self) -> list[str]:
        return sorted({s.topic for s in self._own()})

    def subscriber_count(self, topic: str) -> int:
        return sum(1 for s in self._own() if matches(s.topic, topic))

    def get_router(self) -> Router:
        return self.bus._router_for(self.tenant)

    async def history(
        self, pattern: str = "*", *, limit: int | None = None, since: float | None = None
    ) -> list[Event]:
        return self.bus._history(pattern, self.tenant, limit, since)

    def _own(self) -> list[Subscription]:
        return [s for s in self.bus.subscriptions() if s.tenant == self.tenant]

    def __repr__(self) -> str:
        return f"<TenantEventBus {self.tenant!r}>"
