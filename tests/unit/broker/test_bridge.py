"""The thread bridge for blocking clients, and the bounded hand-off from a thread to the loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from modules.eventbus import EngineUnavailableError
from modules.eventbus.engines.broker import HandOff, ThreadBridge
from tests.helpers import wait_for


async def test_calls_run_in_order_on_one_thread_of_their_own() -> None:
    bridge = ThreadBridge("client-a")
    bridge.start()
    try:
        threads: list[int] = []

        def step(n: int) -> int:
            threads.append(threading.get_ident())
            time.sleep(0.001)
            return n * 10

        results = await asyncio.gather(*(bridge.call(step, n) for n in range(20)))
        assert results == [n * 10 for n in range(20)]
        assert len(set(threads)) == 1
        assert threads[0] != threading.get_ident()  # not the event loop's thread
    finally:
        assert await bridge.close(1.0)


async def test_an_exception_of_the_client_reaches_the_caller() -> None:
    bridge = ThreadBridge("client-b")
    bridge.start()
    try:

        def broken() -> None:
            raise KeyError("partition 3")

        with pytest.raises(KeyError, match="partition 3"):
            await bridge.call(broken)
        assert await bridge.call(lambda: "still working") == "still working"
    finally:
        await bridge.close(1.0)


async def test_close_never_hangs_on_a_stuck_call_and_fails_the_calls_waiting() -> None:
    bridge = ThreadBridge("client-c")
    bridge.start()
    release = threading.Event()
    stuck = bridge.submit(release.wait, 30)
    queued = bridge.submit(lambda: "never started")
    loop = asyncio.get_running_loop()
    started = loop.time()
    ended = await bridge.close(0.2)
    assert loop.time() - started < 1.0
    assert not ended
    for future in (stuck, queued):
        with pytest.raises(EngineUnavailableError, match="closed"):
            await future
    with pytest.raises(EngineUnavailableError, match="not running"):
        await bridge.call(lambda: None)
    release.set()  # the abandoned thread ends on its own


async def test_the_thread_can_run_something_on_the_loop_and_wait_for_it() -> None:
    bridge = ThreadBridge("client-d")
    bridge.start()
    try:
        seen: list[str] = []

        async def on_revoked(partition: str) -> str:
            await asyncio.sleep(0)
            seen.append(partition)
            return f"revoked {partition}"

        def rebalance() -> str:
            return bridge.call_in_loop(on_revoked, "p0", timeout=5.0)

        assert await bridge.call(rebalance) == "revoked p0"
        assert seen == ["p0"]
    finally:
        await bridge.close(1.0)


async def test_a_full_hand_off_blocks_the_thread_until_the_loop_takes() -> None:
    handoff: HandOff[int] = HandOff(2)
    put_done: list[int] = []

    def produce() -> None:
        for n in range(5):
            assert handoff.put(n)
            put_done.append(n)

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        await wait_for(lambda: len(put_done) == 2, 2.0, "two items queued")
        # The third put waits for room: the client is held back.
        # A moment in which a put that does not wait would have gone on (not a wait on it).
        await asyncio.sleep(0.05)
        assert put_done == [0, 1] and len(handoff) == 2
        assert await handoff.get() == 0
        await wait_for(lambda: len(put_done) == 3, 2.0, "the third put once there was room")
        got: list[int] = []
        while len(got) < 4:
            got += await handoff.get_batch(10)
        assert got == [1, 2, 3, 4]
    finally:
        handoff.close()
        thread.join(2.0)


async def test_closing_the_hand_off_releases_a_blocked_thread() -> None:
    handoff: HandOff[str] = HandOff(1)
    assert handoff.put("first")
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(handoff.put("second")))
    thread.start()
    await asyncio.sleep(0.01)
    handoff.close()
    await asyncio.to_thread(thread.join, 2.0)
    assert results == [False]
    assert await handoff.get() == "first"  # what was queued is still taken
    with pytest.raises(EngineUnavailableError, match="closed"):
        await handoff.get()


async def test_a_put_times_out_when_the_loop_never_takes() -> None:
    handoff: HandOff[int] = HandOff(1)
    assert await asyncio.to_thread(handoff.put, 1, 0.01)
    assert not await asyncio.to_thread(handoff.put, 2, 0.05)


def test_a_hand_off_needs_room() -> None:
    async def make() -> None:
        HandOff(0)

    with pytest.raises(ValueError, match="capacity must be positive"):
        asyncio.run(make())
