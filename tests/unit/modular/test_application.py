"""Application lifecycle: ordering, idempotence, dependency errors and failure handling."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from modular import (
    Application,
    DependencyError,
    LifecycleError,
    ModularError,
    ServiceDependency,
    ServiceProvider,
)

from .helpers import make_module, phase

REPO_ROOT = Path(__file__).resolve().parents[3]


def chain_app(log: list[str]) -> Application:
    """api -> cache -> db, registered in the worst order (dependents first)."""
    app = Application(envvar_prefix=None)
    app.register_module(make_module("api", log, dependencies=["cache", "db"]))
    app.register_module(make_module("cache", log, dependencies=["db"]))
    app.register_module(make_module("db", log))
    return app


# --- ordering -------------------------------------------------------------------------------


async def test_init_and_start_follow_declared_dependencies_and_stop_reverses(
    log: list[str],
) -> None:
    app = chain_app(log)

    await app.init()
    assert phase(log, "init") == ["db", "cache", "api"]
    assert [m.module_name for m in app.modules] == ["db", "cache", "api"]
    assert phase(log, "start") == []

    await app.start()
    assert phase(log, "start") == ["db", "cache", "api"]

    await app.stop()
    assert phase(log, "stop") == ["api", "cache", "db"]


async def test_modules_lists_registration_order_before_init(log: list[str]) -> None:
    app = chain_app(log)
    assert [m.module_name for m in app.modules] == ["api", "cache", "db"]


async def test_required_service_orders_the_provider_first(log: list[str]) -> None:
    app = Application(envvar_prefix=None)
    app.register_module(
        make_module("consumer", log, requires=[ServiceDependency("store.db")]),
    )
    app.register_module(
        make_module("store", log, provides=[ServiceProvider("store.db", object())]),
    )

    await app.start()

    assert phase(log, "init") == ["store", "consumer"]
    assert phase(log, "start") == ["store", "consumer"]
    await app.stop()
    assert phase(log, "stop") == ["consumer", "store"]


async def test_start_initialises_first_when_init_was_not_called(log: list[str]) -> None:
    app = chain_app(log)
    await app.start()
    assert log[:3] == ["init:db", "init:cache", "init:api"]
    assert phase(log, "start") == ["db", "cache", "api"]
    await app.stop()


async def test_async_with_starts_and_stops(log: list[str]) -> None:
    app = chain_app(log)
    async with app as entered:
        assert entered is app
        assert phase(log, "start") == ["db", "cache", "api"]
        assert phase(log, "stop") == []
    assert phase(log, "stop") == ["api", "cache", "db"]


async def test_async_with_stops_when_the_body_raises(log: list[str]) -> None:
    app = chain_app(log)
    with pytest.raises(KeyError):
        async with app:
            raise KeyError("boom")
    assert phase(log, "stop") == ["api", "cache", "db"]


async def test_start_after_stop_starts_every_module_again(log: list[str]) -> None:
    app = chain_app(log)
    await app.start()
    await app.stop()
    log.clear()

    await app.start()
    await app.stop()

    assert phase(log, "init") == []  # initialised once
    assert phase(log, "start") == ["db", "cache", "api"]
    assert phase(log, "stop") == ["api", "cache", "db"]


async def test_init_start_and_stop_are_idempotent(log: list[str]) -> None:
    app = chain_app(log)
    await app.stop()  # nothing started: nothing to do
    await app.init()
    await app.init()
    await app.start()
    await app.start()
    await app.stop()
    await app.stop()

    assert phase(log, "init") == ["db", "cache", "api"]
    assert phase(log, "start") == ["db", "cache", "api"]
    assert phase(log, "stop") == ["api", "cache", "db"]


async def test_stop_after_init_only_stops_nothing(log: list[str]) -> None:
    app = chain_app(log)
    await app.init()
    await app.stop()
    assert phase(log, "stop") == []


# --- dependency errors ----------------------------------------------------------------------


async def test_dependency_cycle_names_every_module_in_it(log: list[str]) -> None:
    app = Application(envvar_prefix=None)
    app.register_module(make_module("outsider", log, dependencies=["alpha"]))
    app.register_module(make_module("alpha", log, dependencies=["beta"]))
    app.register_module(make_module("beta", log, dependencies=["gamma"]))
    app.register_module(make_module("gamma", log, dependencies=["alpha"]))
    app.register_module(make_module("free", log))

    with pytest.raises(DependencyError, match="cycle") as caught:
        await app.init()

    message = str(caught.value)
    for name in ("alpha", "beta", "gamma"):
        assert name in message
    assert "free" not in message
    assert log == []  # nothing was initialised


async def test_cycle_through_a_required_service_is_detected(log: list[str]) -> None:
    app = Application(envvar_prefix=None)
    app.register_module(
        make_module(
            "left",
            log,
            provides=[ServiceProvider("left.svc", object())],
            requires=[ServiceDependency("right.svc")],
        )
    )
    app.register_module(
        make_module(
            "right",
            log,
            provides=[ServiceProvider("right.svc", object())],
            requires=[ServiceDependency("left.svc")],
        )
    )
    with pytest.raises(DependencyError) as caught:
        await app.init()
    assert "left" in str(caught.value)
    assert "right" in str(caught.value)
    assert log == []


async def test_module_depending_on_itself_is_a_cycle(log: list[str]) -> None:
    app = Application(envvar_prefix=None)
    app.register_module(make_module("narcissus", log, dependencies=["narcissus"]))
    with pytest.raises(DependencyError, match="narcissus"):
        await app.init()


async def test_missing_required_service_names_module_and_service(log: list[str]) -> None:
    app = Application(envvar_prefix=None)
    app.register_module(make_module("ok", log))
    app.register_module(make_module("needy", log, requires=[ServiceDependency("mail.sender")]))

    with pytest.raises(DependencyError) as caught:
        await app.init()

    assert "needy" in str(caught.value)
    assert "mail.sender" in str(caught.value)
    assert log == []


async def test_missing_optional_service_is_fine(log: list[str]) -> None:
    app = Application(envvar_prefix=None)
    app.register_module(
        make_module("relaxed", log, requires=[ServiceDependency("metrics", required=False)])
    )
    await app.start()
    assert phase(log, "start") == ["relaxed"]
    await app.stop()


async def test_required_service_registered_on_the_app_satisfies_it(log: list[str]) -> None:
    app = Application(envvar_prefix=None)
    app.register_service("mail.sender", object())
    app.register_module(make_module("needy", log, requires=[ServiceDependency("mail.sender")]))
    await app.init()
    assert phase(log, "init") == ["needy"]


async def test_missing_dependency_module_is_an_error(log: list[str]) -> None:
    app = Application(envvar_prefix=None)
    app.register_module(make_module("api", log, dependencies=["database"]))
    with pytest.raises(DependencyError) as caught:
        await app.init()
    assert "api" in str(caught.value)
    assert "database" in str(caught.value)
    assert log == []


def test_registering_two_modules_with_one_name_is_an_error(log: list[str]) -> None:
    app = Application(envvar_prefix=None)
    app.register_module(make_module("twin", log))
    with pytest.raises(ValueError, match="twin"):
        app.register_module(make_module("twin", log))
    assert [m.module_name for m in app.modules] == ["twin"]


async def test_registering_after_init_is_refused(log: list[str]) -> None:
    app = Application(envvar_prefix=None)
    app.register_module(make_module("early", log))
    await app.init()
    with pytest.raises(RuntimeError, match="late"):
        app.register_module(make_module("late", log))


def test_module_without_name_is_named_after_its_class() -> None:
    from modular import Module

    class Anonymous(Module):
        pass

    app = Application(envvar_prefix=None)
    app.register_module(Anonymous())
    assert [m.module_name for m in app.modules] == ["Anonymous"]


# --- failures -------------------------------------------------------------------------------


def stop_failures_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The modules whose stop failure was logged (with its traceback), in order."""
    failures = []
    for record in caplog.records:
        assert (record.name, record.levelname) == ("modular.application", "ERROR"), record
        assert record.exc_info is not None
        failures.append(record.getMessage().removeprefix("module ").removesuffix(" failed to stop"))
    return failures


async def test_failing_stop_does_not_prevent_the_others_from_stopping(
    log: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    app = Application(envvar_prefix=None)
    app.register_module(make_module("first", log))
    app.register_module(make_module("second", log, dependencies=["first"], fail_in="stop"))
    app.register_module(make_module("third", log, dependencies=["second"]))
    await app.start()

    with pytest.raises(LifecycleError) as caught:
        await app.stop()

    assert phase(log, "stop") == ["third", "second", "first"]
    error = caught.value
    assert isinstance(error, ModularError)
    assert error.phase == "stop"
    assert [name for name, _ in error.errors] == ["second"]
    assert isinstance(error.errors[0][1], RuntimeError)
    assert "second failed to stop" in str(error)
    assert stop_failures_logged(caplog) == ["second"]
    # Everything is stopped: a second stop has nothing left to do.
    await app.stop()
    assert phase(log, "stop") == ["third", "second", "first"]


async def test_every_stop_failure_is_reported(
    log: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    app = Application(envvar_prefix=None)
    app.register_module(make_module("a", log, fail_in="stop"))
    app.register_module(make_module("b", log, dependencies=["a"]))
    app.register_module(make_module("c", log, dependencies=["b"], fail_in="stop"))
    await app.start()

    with pytest.raises(LifecycleError) as caught:
        await app.stop()

    assert phase(log, "stop") == ["c", "b", "a"]
    assert [name for name, _ in caught.value.errors] == ["c", "a"]
    assert "c failed to stop" in str(caught.value)
    assert "a failed to stop" in str(caught.value)
    assert stop_failures_logged(caplog) == ["c", "a"]


async def test_start_failure_stops_the_modules_already_started(log: list[str]) -> None:
    app = Application(envvar_prefix=None)
    app.register_module(make_module("a", log))
    app.register_module(make_module("b", log, dependencies=["a"]))
    app.register_module(make_module("c", log, dependencies=["b"], fail_in="start"))
    app.register_module(make_module("d", log, dependencies=["c"]))

    with pytest.raises(LifecycleError) as caught:
        await app.start()

    assert phase(log, "start") == ["a", "b", "c"]
    assert phase(log, "stop") == ["b", "a"]  # c never started, d never reached
    assert caught.value.phase == "start"
    assert caught.value.errors[0][0] == "c"
    assert "c failed to start" in str(caught.value)
    await app.stop()  # nothing is left running
    assert phase(log, "stop") == ["b", "a"]


async def test_start_failure_also_reports_stop_failures(
    log: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    app = Application(envvar_prefix=None)
    app.register_module(make_module("a", log, fail_in="stop"))
    app.register_module(make_module("b", log, dependencies=["a"], fail_in="start"))

    with pytest.raises(LifecycleError) as caught:
        await app.start()

    assert [name for name, _ in caught.value.errors] == ["b", "a"]
    assert phase(log, "stop") == ["a"]
    assert stop_failures_logged(caplog) == ["a"]


async def test_init_failure_names_the_module_and_stops_initialising(log: list[str]) -> None:
    app = Application(envvar_prefix=None)
    app.register_module(make_module("a", log))
    app.register_module(make_module("b", log, dependencies=["a"], fail_in="init"))
    app.register_module(make_module("c", log, dependencies=["b"]))

    with pytest.raises(LifecycleError) as caught:
        await app.start()

    assert caught.value.phase == "init"
    assert caught.value.errors[0][0] == "b"
    assert "b failed to init" in str(caught.value)
    assert phase(log, "init") == ["a", "b"]
    assert phase(log, "start") == []


# --- run() ----------------------------------------------------------------------------------

RUN_SCRIPT = textwrap.dedent(
    """
    from modular import Application, Module

    class Printer(Module):
        name = "printer"

        async def start(self) -> None:
            print("started", flush=True)

        async def stop(self) -> None:
            print("stopped", flush=True)

    app = Application(envvar_prefix=None)
    app.register_module(Printer())
    app.run()
    print("returned", flush=True)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_run_stops_the_modules_on_a_signal_and_exits_cleanly(sig: signal.Signals) -> None:
    deadline = 30.0
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RUN_SCRIPT,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), deadline)
        assert first.decode().strip() == "started"

        proc.send_signal(sig)
        rest, err = await asyncio.wait_for(proc.communicate(), deadline)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    assert proc.returncode == 0, err.decode()
    assert rest.decode().split() == ["stopped", "returned"]
