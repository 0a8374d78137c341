"""Steps of features/eventbus_observation.feature: the records observers receive."""

from datetime import UTC
from typing import Any

from eventbus_support import (
    EVENT_PREFIX,
    wait,
    world,
)
from step_decorators import then

SOURCE = "modular.eventbus"


@then('the observer saw exactly one "{kind:EbText}" record with data:')
def then_one_record(context: Any, kind: str) -> None:
    state = world(context)
    # Delivery reports come from the bus's delivery tasks: wait for them, then for quiet.
    wait(context, lambda: bool(state.records(kind)), f"a {kind} record was observed")
    if state.module is not None and state.bus.is_running:
        state.wait_idle()
    records = state.records(kind)
    assert len(records) == 1, f"{len(records)} {kind} records: {records}"
    (record,) = records
    assert record.type == EVENT_PREFIX + kind, record.type
    assert record.source == SOURCE, record.source
    assert record.id and record.specversion == "1.0", record
    assert record.time.tzinfo is not None and record.time.utcoffset() == UTC.utcoffset(None)
    for row in context.table:
        field = row["field"]
        assert field in record.data, f"{kind} has no {field!r}: {record.data}"
        expected = state.resolve(row["value"])
        actual = record.data[field]
        assert actual == expected, f"{kind} {field} = {actual!r}, expected {expected!r}"


@then('the observer saw no "{kind:EbText}" record')
def then_no_record(context: Any, kind: str) -> None:
    state = world(context)
    if state.bus.is_running:
        state.wait_idle()
    assert state.records(kind) == [], state.records(kind)


@then('the observer saw "{first:EbText}" before "{second:EbText}"')
def then_record_order(context: Any, first: str, second: str) -> None:
    types = [r.type for r in world(context).observed]
    a, b = EVENT_PREFIX + first, EVENT_PREFIX + second
    assert a in types and b in types, types
    assert types.index(a) < types.index(b), types
