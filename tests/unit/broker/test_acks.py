"""The acknowledgement trackers: per message, and contiguous watermarks per source."""

from __future__ import annotations

import asyncio

import pytest

from modules.eventbus.delivery import Outcome
from modules.eventbus.engines.broker import MessageAcks, WatermarkAcks
from modules.eventbus.engines.broker.acks import acknowledge_loop
from tests.helpers import wait_for

HANDLED, FAILED, DROPPED = Outcome.HANDLED, Outcome.FAILED, Outcome.DROPPED


# --- per message ----------------------------------------------------------------------


async def test_a_message_is_ready_once_settled_whatever_the_others_do() -> None:
    acks: MessageAcks[str, str] = MessageAcks()
    first, second, third = (acks.hand_out("s", p) for p in ("1-0", "2-0", "3-0"))
    assert acks.ready() == [] and acks.unsettled == 3
    third(FAILED)
    first(DROPPED)
    assert acks.ready() == [("s", "3-0"), ("s", "1-0")]  # in the order they settled
    assert acks.wakeup.is_set()
    assert acks.in_flight("s", "2-0") and acks.unsettled == 1
    second(HANDLED)
    assert len(acks.ready()) == 3


async def test_a_message_stays_in_flight_until_acknowledged() -> None:
    acks: MessageAcks[str, str] = MessageAcks()
    acks.hand_out("s", "1-0")(HANDLED)
    batch = acks.ready()
    assert acks.in_flight("s", "1-0")  # a re-read now must not hand it out again
    acks.acknowledged(batch)
    assert not acks.in_flight("s", "1-0") and acks.ready() == []


async def test_revoke_voids_the_unsettled_and_ignores_their_late_settlements() -> None:
    acks: MessageAcks[str, str] = MessageAcks()
    late = acks.hand_out("gone", "1-0")
    acks.hand_out("gone", "2-0")(HANDLED)
    kept = acks.hand_out("kept", "1-0")
    assert acks.revoke("gone") == 1
    late(HANDLED)
    kept(HANDLED)
    assert acks.ready() == [("kept", "1-0")]


async def test_a_settlement_of_an_earlier_hand_out_does_not_acknowledge_a_later_one() -> None:
    acks: MessageAcks[str, str] = MessageAcks()
    stale = acks.hand_out("s", "1-0")
    acks.revoke("s")
    acks.hand_out("s", "1-0")  # read again, e.g. after a rebalance
    stale(HANDLED)
    assert acks.ready() == []


async def test_skip_makes_a_message_ready_at_once() -> None:
    acks: MessageAcks[str, str] = MessageAcks()
    acks.skip("s", "9-0")
    assert acks.ready() == [("s", "9-0")]


# --- watermarks -------------------------------------------------------------------------


async def test_the_watermark_advances_only_over_contiguous_settled_runs() -> None:
    acks: WatermarkAcks[tuple[str, int], int] = WatermarkAcks()
    p = ("orders", 0)
    five, six, seven = (acks.hand_out(p, offset) for offset in (5, 6, 7))
    assert acks.ready() == {}
    seven(HANDLED)
    assert acks.ready() == {} and acks.position(p) is None
    five(FAILED)  # failed or dropped still settles: the position moves past it
    assert acks.ready() == {p: 5}
    six(DROPPED)
    assert acks.ready() == {p: 7}
    assert acks.unsettled == 0


async def test_sources_advance_independently() -> None:
    acks: WatermarkAcks[str, str] = WatermarkAcks()
    a1 = acks.hand_out("shard-a", "100")
    b1 = acks.hand_out("shard-b", "200")
    b2 = acks.hand_out("shard-b", "201")
    b2(HANDLED)
    a1(HANDLED)
    assert acks.ready() == {"shard-a": "100"}
    b1(HANDLED)
    assert acks.ready() == {"shard-a": "100", "shard-b": "201"}


async def test_acknowledged_positions_are_not_ready_again_until_they_move() -> None:
    acks: WatermarkAcks[str, int] = WatermarkAcks()
    acks.hand_out("p", 1)(HANDLED)
    batch = acks.ready()
    acks.acknowledged(batch)
    assert acks.ready() == {}
    acks.hand_out("p", 2)(HANDLED)
    assert acks.ready() == {"p": 2}


async def test_a_revoked_source_is_void_and_its_late_settlements_are_ignored() -> None:
    acks: WatermarkAcks[str, int] = WatermarkAcks()
    acks.hand_out("lost", 1)(HANDLED)
    late = acks.hand_out("lost", 2)
    acks.hand_out("lost", 3)
    assert acks.ready() == {"lost": 1}  # what may still be committed before revoking
    assert acks.revoke("lost") == 2
    late(HANDLED)
    assert acks.ready() == {} and acks.sources() == []
    # Assigned again later: it starts over from what the broker hands out.
    acks.hand_out("lost", 7)(HANDLED)
    assert acks.ready() == {"lost": 7}


async def test_a_settlement_counts_once() -> None:
    acks: WatermarkAcks[str, int] = WatermarkAcks()
    first = acks.hand_out("p", 1)
    acks.hand_out("p", 2)
    first(HANDLED)
    first(HANDLED)
    assert acks.ready() == {"p": 1}
    assert acks.in_flight("p", 2) and not acks.in_flight("p", 1)


# --- the acknowledgement loop ---------------------------------------------------------


async def test_the_loop_sends_what_settles_and_retries_what_failed() -> None:
    acks: WatermarkAcks[str, int] = WatermarkAcks()
    sent: list[dict[str, int]] = []
    failures: list[int] = []
    fail_next = [True]

    async def send(batch: dict[str, int]) -> None:
        if fail_next[0]:
            fail_next[0] = False
            raise ConnectionError("broker away")
        sent.append(dict(batch))

    async def on_failure(error: BaseException, count: int) -> None:
        assert isinstance(error, ConnectionError)
        failures.append(count)

    loop_task = asyncio.ensure_future(acknowledge_loop(acks, send, on_failure))
    try:
        acks.hand_out("p", 1)(HANDLED)
        await wait_for(lambda: sent == [{"p": 1}], 2.0, "the batch sent after one failure")
        assert failures == [1]
        acks.hand_out("p", 2)(HANDLED)
        await wait_for(lambda: sent[-1] == {"p": 2}, 2.0, "the next position sent")
        assert acks.ready() == {}
    finally:
        loop_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop_task
