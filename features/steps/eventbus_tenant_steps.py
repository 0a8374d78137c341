"""Steps of features/eventbus_tenants.feature: tenant isolation and per-tenant routing."""

from typing import Any

from eventbus_support import (
    names,
    toml,
    world,
)
from step_decorators import step, then


@step('the event bus tenants "{tenant_ids:EbText}" are registered')
def step_register_tenants(context: Any, tenant_ids: str) -> None:
    tenants = world(context).application.tenants
    for tenant in names(tenant_ids):
        tenants.register_tenant(tenant)


@step('tenant "{tenant:EbText}" is registered with the event bus overlay:')
def step_register_tenant_overlay(context: Any, tenant: str) -> None:
    world(context).application.tenants.register_tenant(tenant, {"eventbus": toml(context.text)})


@then('every event subscriber "{name:EbText}" received carries the tenant "{tenant:EbText}"')
def then_events_carry_tenant(context: Any, name: str, tenant: str) -> None:
    received = world(context).subscriber(name).received
    assert received, f"{name} received nothing"
    assert all(e.tenant == tenant for e in received), [e.tenant for e in received]


@then('"{topic:EbText}" is routed per tenant to these engines:')
def then_routed_per_tenant(context: Any, topic: str) -> None:
    bus = world(context).bus
    for row in context.table:
        tenant = row["tenant"] or None
        router = bus.for_tenant(tenant).get_router() if tenant else bus.get_router()
        engine = router.engine_for_topic(topic)
        assert engine == row["engine"], f"{topic} of tenant {tenant} is routed to {engine}"
