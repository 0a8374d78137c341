"""What a ConfigError says: known keys in the user's spelling, each value once, no secrets."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

import pytest
from pydantic import BaseModel, Field, field_validator

from modular import ConfigError, validate_section


class Pool(BaseModel):
    worker_count: int = 1
    max_queue_size: int = 10
    event_ttl: float = 1.0
    broker_url: str = ""
    mode: str = "drop"


class Limits(BaseModel):
    timeout: float = 1.0

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.endswith("s"):
            raise ValueError(f"expected a duration such as '30s', got {value!r}")
        return float(value.removesuffix("s")) if isinstance(value, str) else value


class Broker(BaseModel):
    url: str = "redis://127.0.0.1:6379"
    retries: int = Field(default=1, ge=0)

    @field_validator("url")
    @classmethod
    def _port_parses(cls, value: str) -> str:
        urlsplit(value).port  # noqa: B018 - raises "Port could not be cast ..." on a bad port
        return value


class Described(BaseModel):
    url: str = ""

    @field_validator("url")
    @classmethod
    def _reachable(cls, value: str) -> str:
        raise ValueError(f"cannot use {value}: host is not allowed")


def error_of(model: type[BaseModel], data: dict[str, Any], path: str = "svc") -> str:
    with pytest.raises(ConfigError) as caught:
        validate_section(model, data, path)
    return str(caught.value)


def known_keys(message: str) -> list[str]:
    return message.split("(known keys: ", 1)[1].rstrip(")").split(", ")


# --- the list of known keys -----------------------------------------------------------------


def test_known_keys_are_listed_in_camel_case_when_the_key_is_camel_case() -> None:
    message = error_of(Pool, {"workerCont": 2})
    assert "did you mean 'workerCount'?" in message
    assert known_keys(message) == ["workerCount", "maxQueueSize", "eventTTL", "brokerURL", "mode"]


def test_known_keys_are_listed_in_snake_case_when_the_key_is_snake_case() -> None:
    message = error_of(Pool, {"worker_cont": 2})
    assert "did you mean 'worker_count'?" in message
    assert known_keys(message) == [
        "worker_count",
        "max_queue_size",
        "event_ttl",
        "broker_url",
        "mode",
    ]


def test_a_one_word_key_is_answered_in_the_style_of_its_neighbours() -> None:
    camel = error_of(Pool, {"workerCount": 2, "mood": "drop"})
    assert "did you mean 'mode'?" in camel
    assert "maxQueueSize" in known_keys(camel)

    snake = error_of(Pool, {"worker_count": 2, "mood": "drop"})
    assert "max_queue_size" in known_keys(snake)

    alone = error_of(Pool, {"mood": "drop"})
    assert "max_queue_size" in known_keys(alone)


def test_an_upper_case_key_from_the_environment_gets_camel_case_keys() -> None:
    message = error_of(Pool, {"WORKERCONT": 2})
    assert "svc.WORKERCONT: unknown key 'WORKERCONT'; did you mean 'workerCount'?" in message
    assert "workerCount" in known_keys(message)


# --- each value once ------------------------------------------------------------------------


def test_a_value_the_validator_already_shows_is_not_repeated() -> None:
    message = error_of(Limits, {"timeout": "soon"})
    assert message == "svc.timeout: expected a duration such as '30s', got 'soon'"
    assert message.count("soon") == 1


def test_a_value_pydantic_does_not_show_is_shown_once() -> None:
    message = error_of(Pool, {"workerCount": "many"})
    assert message.startswith("svc.worker_count: Input should be a valid integer")
    assert message.endswith("(got 'many')")
    assert message.count("many") == 1


def test_a_number_named_in_the_constraint_is_still_shown() -> None:
    message = error_of(Broker, {"retries": -1})
    assert message == "svc.retries: Input should be greater than or equal to 0 (got -1)"


def test_a_number_the_message_names_is_not_taken_for_the_value() -> None:
    message = error_of(Pool, {"workerCount": 0.5})
    assert message.count("0.5") == 1


# --- secrets inside values ------------------------------------------------------------------


def test_a_url_whose_port_does_not_parse_is_shown_masked() -> None:
    message = error_of(Broker, {"url": "redis://alice:s3cret@127.0.0.1:abc"})
    assert "s3cret" not in message
    assert message == (
        "svc.url: Port could not be cast to integer value as 'abc' "
        "(got 'redis://alice:***@127.0.0.1:abc')"
    )


def test_a_url_inside_the_validator_message_is_masked() -> None:
    message = error_of(Described, {"url": "SASL_SSL://user:pw-123@broker:9093"})
    assert "pw-123" not in message
    assert "cannot use SASL_SSL://user:***@broker:9093: host is not allowed" in message
    assert message.count("broker:9093") == 1


def test_a_secret_query_parameter_is_masked() -> None:
    message = error_of(Broker, {"url": "redis://h:x?password=hunter2"})
    assert "hunter2" not in message
    assert "password=***" in message


def test_a_section_that_is_not_a_table_is_shown_masked() -> None:
    from modular.config import section

    with pytest.raises(ConfigError) as caught:
        section({"svc": "redis://alice:s3cret@h"}, "svc")
    assert "s3cret" not in str(caught.value)
    assert "redis://alice:***@h" in str(caught.value)


def test_a_value_that_is_only_part_of_a_word_in_the_message_is_shown() -> None:
    class Mode(BaseModel):
        mode: Literal["drop", "block", "timeout"] = "drop"

    message = error_of(Mode, {"mode": "time"})
    assert message == "svc.mode: Input should be 'drop', 'block' or 'timeout' (got 'time')"


def test_a_value_every_member_of_a_union_rejects_is_one_problem() -> None:
    class Sizing(BaseModel):
        workers: int | Literal["auto"] = "auto"
        limits: dict[str, int | Literal["none"]] = Field(default_factory=dict)

    message = error_of(Sizing, {"workers": "many", "limits": {"queue": "big"}})
    assert message == (
        "svc.workers: Input should be a valid integer, unable to parse string as an integer, "
        "or Input should be 'auto' (got 'many'); "
        "svc.limits.queue: Input should be a valid integer, unable to parse string as an "
        "integer, or Input should be 'none' (got 'big')"
    )


def test_two_fields_with_the_same_bad_value_are_two_problems() -> None:
    message = error_of(Pool, {"workerCount": "x", "maxQueueSize": "x"})
    assert message.count("(got 'x')") == 2
    assert "svc.worker_count: " in message and "svc.max_queue_size: " in message
