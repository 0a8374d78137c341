"""Sizes, counts and durations of a redis engine (and of every broker engine): a value the
broker or the process cannot honour is a ConfigError at init() naming the path and the value,
not a reconnect loop or a failing publish later. No Redis needed."""

from __future__ import annotations

from typing import Any

import pytest

from modular import ConfigError
from modules.eventbus.engines.broker import Masker, url_secrets
from modules.eventbus.engines.broker import config as broker_config
from modules.eventbus.engines.redis import config as redis_config

from .test_config import configured

BIG = 10**21


def flat(text: str) -> str:
    return text.replace("_", "").lower()


async def init_error(engine: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        await configured(engine)
    return str(caught.value)


@pytest.mark.parametrize(
    ("key", "value", "bound"),
    [
        ("readCount", BIG, redis_config.MAX_READ_COUNT),
        ("readCount", redis_config.MAX_READ_COUNT + 1, redis_config.MAX_READ_COUNT),
        ("maxLen", BIG, redis_config.MAX_STREAM_LENGTH),
        ("db", BIG, redis_config.MAX_DB),
        ("db", redis_config.MAX_DB + 1, redis_config.MAX_DB),
        ("poolSize", BIG, redis_config.MAX_POOL_SIZE),
        ("batchSize", BIG, broker_config.MAX_BATCH_SIZE),
        ("maxMessageSize", BIG, broker_config.MAX_MESSAGE_SIZE),
        ("maxMessageSize", broker_config.MAX_MESSAGE_SIZE + 1, broker_config.MAX_MESSAGE_SIZE),
    ],
)
async def test_sizes_above_their_bound_fail_at_init(key: str, value: int, bound: int) -> None:
    error = await init_error({key: value})
    assert flat(f"eventbus.engines[0].config.{key}") in flat(error)
    assert str(value) in error
    assert str(bound) in error


DURATIONS = [
    "connectTimeout",
    "publishTimeout",
    "reconnectMinDelay",
    "reconnectMaxDelay",
    "claimIdle",
    "scanInterval",
    "healthCheckInterval",
]


@pytest.mark.parametrize("key", DURATIONS)
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (-1, "negative"),
        (BIG, str(broker_config.MAX_DURATION)),
        ("8d", str(broker_config.MAX_DURATION)),
    ],
)
async def test_durations_must_be_finite_and_bounded(key: str, value: Any, expected: str) -> None:
    config: dict[str, Any] = {key: value}
    if key == "reconnectMinDelay":
        config["reconnectMaxDelay"] = "7d"  # so that only the key under test is wrong
    error = await init_error(config)
    assert flat(f"eventbus.engines[0].config.{key}") in flat(error)
    assert expected in error


@pytest.mark.parametrize(
    "key", ["readCount", "maxLen", "db", "poolSize", "batchSize", "maxMessageSize"]
)
async def test_a_bool_is_not_a_size(key: str) -> None:
    error = await init_error({key: True})
    assert flat(f"eventbus.engines[0].config.{key}") in flat(error)
    assert "True" in error
    assert "whole number" in error


async def test_the_largest_values_are_accepted() -> None:
    engine = await configured(
        {
            "readCount": redis_config.MAX_READ_COUNT,
            "maxLen": redis_config.MAX_STREAM_LENGTH,
            "db": redis_config.MAX_DB,
            "poolSize": redis_config.MAX_POOL_SIZE,
            "batchSize": broker_config.MAX_BATCH_SIZE,
            "maxMessageSize": broker_config.MAX_MESSAGE_SIZE,
            "connectTimeout": "7d",
            "claimIdle": "7d",
            "reconnectMaxDelay": "7d",
        }
    )
    s = engine.settings
    assert (s.read_count, s.max_len, s.db, s.pool_size) == (
        redis_config.MAX_READ_COUNT,
        redis_config.MAX_STREAM_LENGTH,
        redis_config.MAX_DB,
        redis_config.MAX_POOL_SIZE,
    )
    assert (s.batch_size, s.max_message_size) == (
        broker_config.MAX_BATCH_SIZE,
        broker_config.MAX_MESSAGE_SIZE,
    )
    assert s.claim_idle == s.connect_timeout == 7 * 86400.0


async def test_numeric_strings_are_still_sizes() -> None:
    # what an environment variable (MODULAR_EVENTBUS__...) gives
    engine = await configured({"readCount": "200", "poolSize": "3", "maxLen": "0"})
    assert (engine.settings.read_count, engine.settings.pool_size) == (200, 3)
    assert engine.settings.max_len == 0


@pytest.mark.parametrize(
    "url",
    [f"redis://h:6379/{BIG}", f"redis://h:6379/0?db={BIG}", f"redis://h:6379?db={BIG}"],
)
async def test_a_database_number_in_the_url_is_bounded_too(url: str) -> None:
    error = await init_error({"url": url})
    assert "eventbus.engines[0].config.url" in error
    assert str(redis_config.MAX_DB) in error


# --- passwords that a URL parser splits -----------------------------------------------------

PASSWORDS = ["ab/cdZZ", "it's", 'say"hi', "two words", "a#b", "a?b", "p@ss/w'o rd#?"]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize(
    "tail", ["127.0.0.1:abc", "127.0.0.1:6379/x", "127.0.0.1:6379?db=z", "h:1?db=-1"]
)
async def test_a_bad_url_never_shows_its_password(password: str, tail: str) -> None:
    with pytest.raises(ConfigError) as caught:
        await configured({"url": f"redis://alice:{password}@{tail}"})
    error = str(caught.value)
    assert "eventbus.engines[0].config.url" in error
    for fragment in {password, *password.replace("?", "/").replace("#", "/").split("/")}:
        if len(fragment) > 2:
            assert fragment not in error.replace("redis://alice:***@", "")
    assert f"redis://alice:***@{tail}" in error


@pytest.mark.parametrize("password", PASSWORDS)
async def test_a_password_with_reserved_characters_must_be_percent_encoded(password: str) -> None:
    url = f"redis://alice:{password}@127.0.0.1:6379/0"
    if "/" not in password and "?" not in password and "#" not in password:
        # urllib reads these (quotes, spaces) as they are: redis-py gets the password
        engine = await configured({"url": url})
        assert engine.connection_settings()[1]["password"] == password
        assert password not in repr(engine.settings)
        return
    error = await init_error({"url": url})
    assert "percent-encoded" in error
    assert password not in error


async def test_an_unrecognised_password_is_not_echoed_either() -> None:
    # digits and "/" read as a port by the masker: the url is not quoted at all
    error = await init_error({"url": "redis://alice:80/zz-secret@127.0.0.1:6379/0"})
    assert "zz-secret" not in error
    assert "percent-encode" in error


def test_the_masker_knows_a_password_that_urllib_splits() -> None:
    secrets = url_secrets("redis://alice:ab/cd%2Fef@h:1/0?token=tok")
    assert set(secrets) == {"ab/cd%2Fef", "ab/cd/ef", "tok"}
    mask = Masker(secrets)
    assert mask("AUTH ab/cd/ef failed") == "AUTH *** failed"
    assert mask("AUTH ab/cd%2Fef failed") == "AUTH *** failed"
