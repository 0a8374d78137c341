"""Logging for programs: visible by default in run() and the examples, quiet in the library."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from modular import Application, CloudEvent, LifecycleError, Module

ROOT = Path(__file__).resolve().parents[3]
FAILURE = "failed on topic system.health (engine memory-reliable): RuntimeError: audit log"


def run_python(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MODULAR_")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_code(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_python("-c", textwrap.dedent(code), env=env)


# --- the example programs -------------------------------------------------------------------


def test_a_failing_handler_in_an_example_is_shown_on_stderr() -> None:
    result = run_python("-m", "examples.multi_engine_eventbus", "--failing-handler")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 1, result.stderr
    assert "modules.eventbus.delivery: handler of subscription" in warnings[0]
    assert FAILURE in warnings[0]
    assert "handler failures=1" in result.stdout  # and the others carried on
    assert "[memory-reliable] database: connection ok" in result.stdout


def test_modular_log_level_error_hides_the_warning() -> None:
    quiet = {"MODULAR_LOG_LEVEL": "ERROR"}
    result = run_python("-m", "examples.multi_engine_eventbus", "--failing-handler", env=quiet)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "handler failures=1" in result.stdout


def test_every_example_program_configures_logging() -> None:
    programs = sorted((ROOT / "examples").glob("*/__main__.py"))
    assert len(programs) >= 2
    for program in programs:
        assert "configure_logging()" in program.read_text(encoding="utf-8"), program


# --- configure_logging ----------------------------------------------------------------------


def test_configure_logging_writes_readable_masked_lines_to_stderr() -> None:
    result = run_code(
        """
        import logging, modular
        assert modular.configure_logging() is True
        logging.getLogger("app").info("connected to redis://alice:s3cret@127.0.0.1:6379")
        logging.getLogger("app").debug("not shown at INFO")
        try:
            raise ValueError("cannot reach amqp://bob:hunter2@broker")
        except ValueError:
            logging.getLogger("app").exception("gave up")
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].endswith(" INFO     app: connected to redis://alice:***@127.0.0.1:6379")
    assert lines[1].endswith(" ERROR    app: gave up")
    assert "ValueError: cannot reach amqp://bob:***@broker" in result.stderr
    assert "s3cret" not in result.stderr and "hunter2" not in result.stderr
    assert "not shown" not in result.stderr


@pytest.mark.parametrize(
    ("argument", "variable", "shown"),
    [
        ("None", "", ["INFO", "WARNING"]),
        ("None", "warning", ["WARNING"]),
        ("None", "10", ["DEBUG", "INFO", "WARNING"]),
        ("'ERROR'", "debug", []),  # the argument wins over the environment
        ("logging.DEBUG", "", ["DEBUG", "INFO", "WARNING"]),
    ],
)
def test_level_from_argument_then_environment_then_info(
    argument: str, variable: str, shown: list[str]
) -> None:
    result = run_code(
        f"""
        import logging, modular
        modular.configure_logging({argument})
        log = logging.getLogger("app")
        log.debug("DEBUG"); log.info("INFO"); log.warning("WARNING")
        """,
        env={"MODULAR_LOG_LEVEL": variable},
    )
    assert result.returncode == 0, result.stderr
    assert [line.rsplit(": ", 1)[1] for line in result.stderr.splitlines()] == shown


def test_an_unknown_level_in_the_environment_is_a_config_error() -> None:
    result = run_code(
        """
        import modular
        try:
            modular.configure_logging()
        except modular.ConfigError as exc:
            print(exc)
        """,
        env={"MODULAR_LOG_LEVEL": "LOUD"},
    )
    assert result.stdout.strip() == (
        "MODULAR_LOG_LEVEL: unknown log level 'LOUD'; use DEBUG, INFO, WARNING, ERROR or CRITICAL"
    )


def test_logging_the_program_configured_is_left_alone() -> None:
    result = run_code(
        """
        import logging, modular
        logging.basicConfig(level=logging.ERROR, format="mine: %(message)s")
        assert modular.configure_logging("DEBUG") is False
        assert len(logging.getLogger().handlers) == 1
        logging.getLogger("app").warning("hidden by the program's own level")
        logging.getLogger("app").error("shown")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "mine: shown\n"


def test_a_second_call_changes_the_level_without_a_second_handler() -> None:
    result = run_code(
        """
        import logging, modular
        modular.configure_logging("ERROR")
        modular.configure_logging("INFO")
        assert len(logging.getLogger().handlers) == 1
        logging.getLogger("app").info("once")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("once") == 1


def test_the_library_alone_adds_only_null_handlers() -> None:
    result = run_code(
        """
        import logging
        import modular, modules.eventbus
        from modules.eventbus.engines import memory
        assert logging.getLogger().handlers == [], logging.getLogger().handlers
        for name in ("modular", "modules", "modules.eventbus"):
            handlers = logging.getLogger(name).handlers
            assert all(isinstance(h, logging.NullHandler) for h in handlers), (name, handlers)
        logging.getLogger("modules.eventbus.delivery").warning("lost")
        """
    )
    assert result.returncode == 0, result.stderr
    # The NullHandlers keep even Python's last-resort handler quiet: the program decides.
    assert result.stderr == ""


# --- Application.run ------------------------------------------------------------------------

RUN_PROGRAM = """
import logging, os, signal
from modular import Application, Module

class Noisy(Module):
    name = "noisy"

    async def start(self) -> None:
        logging.getLogger("noisy").warning("engine down: redis://u:pw@127.0.0.1:1")
        os.kill(os.getpid(), signal.SIGTERM)  # run() stops on SIGTERM

app = Application(envvar_prefix=None)
app.register_module(Noisy())
app.run({arguments})
print("stopped")
"""


@pytest.mark.parametrize(
    ("arguments", "variable", "shown"),
    [
        ("", "", True),
        ("log_level='ERROR'", "", False),
        ("", "ERROR", False),
        ("log_level='WARNING'", "ERROR", True),
    ],
)
def test_run_sets_up_logging_unless_told_otherwise(
    arguments: str, variable: str, shown: bool
) -> None:
    result = run_code(RUN_PROGRAM.format(arguments=arguments), env={"MODULAR_LOG_LEVEL": variable})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "stopped\n"
    if shown:
        assert " WARNING  noisy: engine down: redis://u:***@127.0.0.1:1" in result.stderr
        assert "pw@" not in result.stderr
    else:
        assert result.stderr == ""


# --- typed packages -------------------------------------------------------------------------


def test_both_packages_are_marked_typed_and_shipped() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    for marker in (ROOT / "modular" / "py.typed", ROOT / "modules" / "eventbus" / "py.typed"):
        assert marker.is_file(), marker
        assert marker.relative_to(ROOT).parts[0] in shipped
        # hatch leaves out what git ignores
        ignored = subprocess.run(["git", "check-ignore", "-q", str(marker)], cwd=ROOT, check=False)
        assert ignored.returncode == 1, f"{marker} is ignored by git, so not shipped"


# --- what modular logs itself ---------------------------------------------------------------


async def test_a_stop_failure_is_logged_with_its_traceback_masked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broker(Module):
        name = "broker"

        async def stop(self) -> None:
            raise ConnectionError("lost redis://alice:s3cret@127.0.0.1:6379")

    app = Application(envvar_prefix=None)
    app.register_module(Broker())
    await app.start()
    with pytest.raises(LifecycleError) as caught:
        await app.stop()

    assert "redis://alice:***@127.0.0.1:6379" in str(caught.value)
    (record,) = caplog.records
    assert record.getMessage() == "module broker failed to stop"
    assert isinstance(record.exc_info and record.exc_info[1], ConnectionError)  # kept for tools
    assert "ConnectionError: lost redis://alice:***@127.0.0.1:6379" in caplog.text
    assert "s3cret" not in caplog.text
    assert "s3cret" not in str(caught.value)


async def test_an_observer_failure_is_logged_masked(caplog: pytest.LogCaptureFixture) -> None:
    app = Application(envvar_prefix=None)

    def broken(event: CloudEvent) -> None:
        raise ValueError(f"cannot forward {event.type} to amqp://bob:hunter2@mq?token=t0k")

    app.register_observer(broken)
    app.emit("com.example.ping", "test")

    (record,) = caplog.records
    assert record.name == "modular.observer"
    assert "ValueError: cannot forward com.example.ping to amqp://bob:***@mq?token=***" in (
        caplog.text
    )
    assert "hunter2" not in caplog.text and "t0k" not in caplog.text
