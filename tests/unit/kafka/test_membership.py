"""How the Kafka reader of a group changes its subscription and carries joins to their end
(Reader._keep_membership), against a stand-in for the consumer: a join kafka-python lost
cannot be made to happen on demand on a real broker. The real thing is tested in
tests/integration/kafka/test_groups.py."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka.structs import MemberState

from modules.eventbus.engines.kafka import KafkaEngine
from modules.eventbus.engines.kafka.config import KafkaEngineConfig
from modules.eventbus.engines.kafka.reader import STALLED_JOINS, Reader


@dataclass
class Coordinator:
    rejoins: int = 0

    def request_rejoin(self) -> None:
        self.rejoins += 1


@dataclass
class Metadata:
    state: MemberState


@dataclass
class Consumer:
    """What the reader calls on a KafkaConsumer of a group, between polls."""

    state: MemberState = MemberState.UNJOINED
    subscriptions: list[tuple[str, ...]] = field(default_factory=list)
    unsubscribed: int = 0
    _coordinator: Coordinator = field(default_factory=Coordinator)

    def group_metadata(self) -> Metadata:
        return Metadata(self.state)

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.subscriptions.append(tuple(topics))

    def unsubscribe(self) -> None:
        self.unsubscribed += 1


@pytest.fixture
def reader() -> Reader:
    config = KafkaEngineConfig.model_validate(
        {"group_id": "g", "session_timeout": 6.0, "heartbeat_interval": 1.0}
    )
    return KafkaEngine("k", config).reader


def test_a_change_subscribes_and_asks_for_a_rejoin(reader: Reader) -> None:
    consumer = Consumer(state=MemberState.STABLE)
    reader._wanted = ("a", "b")
    reader._keep_membership(consumer)
    assert consumer.subscriptions == [("a", "b")]
    assert consumer._coordinator.rejoins == 1
    reader._keep_membership(consumer)
    assert consumer.subscriptions == [("a", "b")]  # nothing changed: nothing done
    assert consumer._coordinator.rejoins == 1


def test_a_change_waits_while_a_join_is_in_flight(reader: Reader) -> None:
    consumer = Consumer(state=MemberState.REBALANCING)
    reader._wanted = ("a",)
    reader._keep_membership(consumer)
    assert consumer.subscriptions == []
    consumer.state = MemberState.STABLE
    reader._keep_membership(consumer)
    assert consumer.subscriptions == [("a",)]


def test_the_last_topic_gone_unsubscribes(reader: Reader) -> None:
    consumer = Consumer(state=MemberState.STABLE)
    reader._wanted = ("a",)
    reader._keep_membership(consumer)
    reader._wanted = ()
    reader._keep_membership(consumer)
    assert consumer.unsubscribed == 1


def test_a_member_rebalancing_for_too_long_is_asked_to_join_again(
    reader: Reader, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = Consumer(state=MemberState.REBALANCING)
    reader._wanted = reader._subscribed = ("a",)
    reader._keep_membership(consumer)
    assert consumer._coordinator.rejoins == 0  # a join takes a while: no hurry
    stalled = STALLED_JOINS * reader.settings.session_timeout + 1
    assert reader._rebalancing_since is not None
    reader._rebalancing_since -= stalled
    reader._keep_membership(consumer)
    assert consumer._coordinator.rejoins == 1
    assert "has been rebalancing for" in caplog.text
    # The clock starts again: the next request only after as long again.
    reader._keep_membership(consumer)
    assert consumer._coordinator.rejoins == 1
    assert reader._rebalancing_since == pytest.approx(time.monotonic(), abs=1.0)


def test_a_client_without_request_rejoin_is_a_clear_error(reader: Reader) -> None:
    consumer = Consumer(state=MemberState.STABLE)
    consumer._coordinator = object()  # type: ignore[assignment]
    reader._wanted = ("a",)
    with pytest.raises(RuntimeError, match=r"has no coordinator\.request_rejoin"):
        reader._keep_membership(consumer)
