"""Topic names, THE pattern matcher, the topic index and routing."""

from __future__ import annotations

import pytest

from modules.eventbus import Router, RoutingRule
from modules.eventbus.topics import (
    TopicIndex,
    matches,
    overlaps,
    validate_pattern,
    validate_tenant,
    validate_topic,
)
from tests.helpers import wait_for
from tests.unit.eventbus.conftest import MakeBus

LONG = "t" * 201

# --- the matcher ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("user.created", "user.created", True),
        ("user.created", "user.created.x", False),
        ("user.created", "user.create", False),
        ("user.*", "user.a", True),
        ("user.*", "user.a.b", True),
        ("user.*", "user", False),
        ("user.*", "user.", False),
        ("user.*", "users.a", False),
        ("user*", "users", True),
        ("*", "anything", True),
        ("*", "a.b.c", True),
    ],
)
def test_matches(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected


def test_overlaps() -> None:
    assert overlaps("user.*", "user.admin.*")
    assert overlaps("user.admin.*", "user.*")
    assert overlaps("*", "x")
    assert overlaps("user.*", "user.a")
    assert not overlaps("user.*", "order.*")
    assert not overlaps("user.a", "user.b")


@pytest.mark.parametrize(
    ("topic", "named"),
    [
        ("", "''"),
        ("a b", "a b"),
        ("a*b", "a*b"),
        ("__x", "__x"),
        (LONG, LONG[:40]),
        ("tenant:topic", "tenant:topic"),
        ("ümlaut", "ümlaut"),
        ("a/b", "a/b"),
    ],
)
def test_invalid_topics_and_patterns_are_value_errors_naming_them(topic: str, named: str) -> None:
    with pytest.raises(ValueError) as caught:
        validate_topic(topic)
    assert named in str(caught.value)
    with pytest.raises(ValueError) as caught:
        validate_pattern(topic)
    assert named in str(caught.value)


@pytest.mark.parametrize("pattern", ["a*b", "*a", "a**", "**", "__*", "a b*", "x:*"])
def test_invalid_patterns(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"pattern|topic"):
        validate_pattern(pattern)


def test_valid_names() -> None:
    assert validate_topic("Orders.v2_created-x") == "Orders.v2_created-x"
    assert validate_topic("t" * 200) == "t" * 200
    assert validate_pattern("user.*") == "user.*"
    assert validate_pattern("*") == "*"
    assert validate_tenant("acme_1-b") == "acme_1-b"
    for bad in ("", "a.b", "a b", "x" * 41, "a:b"):
        with pytest.raises(ValueError, match="tenant"):
            validate_tenant(bad)


@pytest.mark.parametrize("topic", ["", "a b", "a*b", "__x", LONG, "a:b", "*"])
async def test_publish_refuses_invalid_topics(make_bus: MakeBus, topic: str) -> None:
    bus = (await make_bus()).bus
    with pytest.raises(ValueError):
        await bus.publish(topic)
    assert bus.stats() == (0, 0)


@pytest.mark.parametrize("pattern", ["", "a b", "a*b", "__x", LONG, "a:b", "*x"])
async def test_subscribe_refuses_invalid_patterns(make_bus: MakeBus, pattern: str) -> None:
    bus = (await make_bus()).bus
    with pytest.raises(ValueError):
        await bus.subscribe(pattern, lambda e: None)
    with pytest.raises(ValueError):
        await bus.subscribe_async(pattern, lambda e: None)
    assert bus.subscriptions() == []


async def test_subscribe_refuses_a_handler_that_is_not_callable(make_bus: MakeBus) -> None:
    bus = (await make_bus()).bus
    with pytest.raises(TypeError, match=r"a\.b"):
        await bus.subscribe("a.b", "not a handler")  # type: ignore[arg-type]


# --- delivery by pattern --------------------------------------------------------------------


async def test_wildcards_through_the_bus(make_bus: MakeBus) -> None:
    bus = (await make_bus()).bus
    exact: list[str] = []
    prefix: list[str] = []
    everything: list[str] = []
    await bus.subscribe("user.created", lambda e: exact.append(e.topic))
    await bus.subscribe("user.*", lambda e: prefix.append(e.topic))
    await bus.subscribe("*", lambda e: everything.append(e.topic))

    topics = ["user.created", "user.updated", "user.admin.deleted", "user", "order.placed"]
    for topic in topics:
        await bus.publish(topic)
    await wait_for(lambda: len(everything) == len(topics))

    assert everything == topics
    assert prefix == ["user.created", "user.updated", "user.admin.deleted"]
    assert exact == ["user.created"]


async def test_topic_cache_follows_subscribe_and_unsubscribe(make_bus: MakeBus) -> None:
    bus = (await make_bus()).bus
    witness: list[int] = []
    await bus.subscribe("*", lambda e: witness.append(e.payload))
    await bus.publish("cache.topic", 0)  # resolved (to the witness alone) and cached

    late: list[int] = []
    sub = await bus.subscribe("cache.*", lambda e: late.append(e.payload))
    await bus.publish("cache.topic", 1)
    await wait_for(lambda: late == [1])

    exact: list[int] = []
    await bus.subscribe("cache.topic", lambda e: exact.append(e.payload))
    await bus.unsubscribe(sub)
    await bus.publish("cache.topic", 2)
    await wait_for(lambda: exact == [2] and witness == [0, 1, 2])
    assert late == [1]


# --- the topic index ------------------------------------------------------------------------


def test_topic_index_resolves_in_insertion_order_and_invalidates_its_cache() -> None:
    index: TopicIndex[str] = TopicIndex()
    index.add("user.*", "first")
    index.add("*", "second")
    index.add("user.created", "third")
    assert index.resolve("user.created") == ("first", "second", "third")
    assert index.resolve("order.x") == ("second",)

    index.add("order.*", "fourth")
    assert index.resolve("order.x") == ("second", "fourth")
    assert index.remove("*", "second")
    assert not index.remove("*", "second")
    assert not index.remove("nope", "second")
    assert index.resolve("order.x") == ("fourth",)
    assert index.resolve("user.created") == ("first", "third")
    assert sorted(index.patterns()) == ["order.*", "user.*", "user.created"]
    assert len(index) == 3
    index.clear()
    assert index.resolve("user.created") == ()
    assert len(index) == 0


def test_topic_index_cache_is_bounded() -> None:
    index: TopicIndex[str] = TopicIndex()
    index.add("*", "all")
    for i in range(TopicIndex.CACHE_LIMIT + 50):
        assert index.resolve(f"t{i}") == ("all",)
    assert len(index._cache) <= TopicIndex.CACHE_LIMIT


# --- routing --------------------------------------------------------------------------------


def rule(engine: str, *topics: str) -> RoutingRule:
    return RoutingRule(topics=list(topics), engine=engine)


def test_router_first_matching_rule_wins_else_the_first_engine() -> None:
    router = Router(
        ["fallback", "admin", "users", "all"],
        [rule("admin", "user.admin.*"), rule("users", "user.*", "auth.login")],
    )
    assert router.engine_for_topic("user.admin.deleted") == "admin"
    assert router.engine_for_topic("user.created") == "users"
    assert router.engine_for_topic("auth.login") == "users"
    assert router.engine_for_topic("auth.logout") == "fallback"
    assert router.engine_for_topic("user") == "fallback"

    broader_first = Router(
        ["fallback", "admin", "users"], [rule("users", "user.*"), rule("admin", "user.admin.*")]
    )
    assert broader_first.engine_for_topic("user.admin.deleted") == "users"

    catch_all = Router(["a", "b"], [rule("b", "*")])
    assert catch_all.engine_for_topic("anything") == "b"


def test_router_engines_for_a_pattern() -> None:
    router = Router(
        ["fallback", "admin", "users"], [rule("admin", "user.admin.*"), rule("users", "user.*")]
    )
    assert router.engines_for_pattern("user.*") == ["admin", "users"]
    assert router.engines_for_pattern("user.admin.*") == ["admin"]
    assert router.engines_for_pattern("user.admin.x") == ["admin"]
    assert router.engines_for_pattern("order.*") == ["fallback"]
    assert router.engines_for_pattern("user.created") == ["users"]
    assert router.engines_for_pattern("*") == ["admin", "users", "fallback"]
    behind_catch_all = Router(["fallback", "b"], [rule("b", "*")])
    assert behind_catch_all.engines_for_pattern("*") == ["b"]


def test_router_needs_an_engine() -> None:
    with pytest.raises(ValueError):
        Router([], [])


async def test_routing_through_the_bus_and_patterns_across_engines(make_bus: MakeBus) -> None:
    bus = (
        await make_bus(
            {
                "engines": [
                    {"name": "general", "type": "memory"},
                    {"name": "users", "type": "memory"},
                    {"name": "admin", "type": "memory"},
                ],
                "routing": [
                    {"topics": ["user.admin.*"], "engine": "admin"},
                    {"topics": ["user.*"], "engine": "users"},
                ],
            }
        )
    ).bus
    router = bus.get_router()
    assert router.engine_for_topic("user.admin.x") == "admin"
    assert router.engine_for_topic("user.created") == "users"
    assert router.engine_for_topic("order.placed") == "general"

    users: list[str] = []
    everything: list[str] = []
    user_sub = await bus.subscribe("user.*", lambda e: users.append(e.topic))
    await bus.subscribe("*", lambda e: everything.append(e.topic))
    assert {"admin", "users"} <= set(user_sub.engines)

    for topic in ("user.created", "user.admin.x", "order.placed"):
        await bus.publish(topic)
    await wait_for(lambda: len(everything) == 3 and len(users) == 2)

    assert sorted(users) == ["user.admin.x", "user.created"]
    assert sorted(everything) == ["order.placed", "user.admin.x", "user.created"]
    stats = bus.per_engine_stats()
    # Where an event was handled shows where it was routed.
    assert (stats["users"].delivered, stats["admin"].delivered) == (2, 2)
    assert stats["general"].delivered == 1
    assert bus.topics() == ["*", "user.*"]


def test_covers_is_containment_of_matched_topics() -> None:
    from modules.eventbus.topics import covers

    assert covers("*", "user.*") and covers("*", "user.a")
    assert covers("user.*", "user.admin.*") and covers("user.*", "user.a")
    assert not covers("user.admin.*", "user.*")
    assert not covers("user.*", "user")  # `user.*` does not match `user`
    assert covers("user.a", "user.a") and not covers("user.a", "user.*")
