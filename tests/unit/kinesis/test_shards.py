"""Which shards a Kinesis engine reads, and from where (no server: the plan is a function of
the listing and the checkpoints)."""

from __future__ import annotations

from modules.eventbus.engines.kinesis.checkpoints import ITERATOR, SHARD_END
from modules.eventbus.engines.kinesis.client import Shard
from modules.eventbus.engines.kinesis.shards import ShardState, plan

OPEN_A = Shard("shardId-000000000001", (), closed=False)
PARENT = Shard("shardId-000000000000", (), closed=True)
CHILD_1 = Shard("shardId-000000000002", ("shardId-000000000000",), closed=False)
CHILD_2 = Shard("shardId-000000000003", ("shardId-000000000000",), closed=False)
SPLIT = [CHILD_2, PARENT, CHILD_1, OPEN_A]  # in no particular order
EVERY = {s.id for s in SPLIT}


def ids(states: list[ShardState]) -> list[str]:
    return [s.id for s in states]


def test_latest_reads_the_open_shards_and_counts_closed_ones_as_read() -> None:
    to_read, done = plan(SPLIT, {}, {}, "LATEST", EVERY)
    assert ids(to_read) == [OPEN_A.id, CHILD_1.id, CHILD_2.id]
    assert {s.kind for s in to_read} == {"LATEST"}
    assert ids(done) == [PARENT.id] and done[0].finished


def test_trim_horizon_reads_a_parent_before_its_children() -> None:
    to_read, done = plan(SPLIT, {}, {}, "TRIM_HORIZON", EVERY)
    assert ids(to_read) == [PARENT.id, OPEN_A.id]  # children wait for the parent
    assert done == []
    parent = to_read[0]
    parent.finished = True
    known = {s.id: s for s in to_read}
    later, _ = plan(SPLIT, known, {}, "TRIM_HORIZON", EVERY)
    assert ids(later) == [CHILD_1.id, CHILD_2.id]


def test_a_shard_that_appears_later_is_read_from_its_start() -> None:
    known = {OPEN_A.id: ShardState(OPEN_A, "LATEST")}
    fresh = Shard("shardId-000000000009", (), closed=False)
    to_read, _ = plan([OPEN_A, fresh], known, {}, "LATEST", {OPEN_A.id})
    assert ids(to_read) == [fresh.id]
    assert to_read[0].kind == "TRIM_HORIZON"


def test_checkpoints_decide_where_a_reader_starts() -> None:
    big = "49680733266944371487506346372995935071449369938782846978"
    checkpoints = {
        PARENT.id: SHARD_END,
        CHILD_1.id: big,
        CHILD_2.id: f"{ITERATOR}AAAAiterator",
    }
    to_read, done = plan(SPLIT, {}, checkpoints, "LATEST", EVERY)
    assert ids(done) == [PARENT.id]
    states = {s.id: s for s in to_read}
    assert states[CHILD_1.id].last_seq == int(big)  # an int: compared as a number
    assert states[CHILD_2.id].iterator == "AAAAiterator"
    assert states[CHILD_2.id].kind == "TRIM_HORIZON"  # should that iterator have expired
    assert states[OPEN_A.id].kind == "LATEST"


def test_a_position_checkpoint_only_while_nothing_was_read() -> None:
    state = ShardState(OPEN_A, "LATEST")
    assert state.position is None  # no iterator yet
    state.iterator = "AAAA"
    assert state.position == f"{ITERATOR}AAAA"
    state.last_seq = state.handed = 10**50
    assert state.position is None  # the sequence number is the checkpoint now


def test_sequence_numbers_compare_as_numbers_not_text() -> None:
    state = ShardState(OPEN_A, "LATEST")
    state.resume("99")
    assert state.last_seq is not None
    assert state.last_seq < int("100")  # as text, "99" > "100"
