"""mask_url / mask_secrets: credentials never survive into text that is shown."""

from __future__ import annotations

import pytest

from modular import is_secret_key, mask_secrets, mask_url


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://alice:s3cret@host", "redis://alice:***@host"),
        ("redis://alice:s3cret@127.0.0.1:6379/0", "redis://alice:***@127.0.0.1:6379/0"),
        # the port does not parse: urllib refuses this URL, masking must not
        ("redis://alice:s3cret@127.0.0.1:abc", "redis://alice:***@127.0.0.1:abc"),
        ("rediss://:s3cret@cache.example:6380", "rediss://:***@cache.example:6380"),
        ("redis://alice:s3cret@[::1]:6379/2", "redis://alice:***@[::1]:6379/2"),
        ("redis://alice:s3cret@[fe80::1%eth0]:6379", "redis://alice:***@[fe80::1%eth0]:6379"),
        ("unix://alice:s3cret@/run/redis.sock?db=1", "unix://alice:***@/run/redis.sock?db=1"),
        ("unix:///run/redis.sock?password=s3cret", "unix:///run/redis.sock?password=***"),
        ("SASL_SSL://user:pw@broker:9093", "SASL_SSL://user:***@broker:9093"),
        ("amqp://guest:guest@localhost:5672/vhost", "amqp://guest:***@localhost:5672/vhost"),
        # unencoded "@", "#" and ":" inside the password
        ("redis://alice:p@ss@host/0", "redis://alice:***@host/0"),
        ("redis://alice:p#s:s@host", "redis://alice:***@host"),
        ("redis://host?password=x&token=y", "redis://host?password=***&token=***"),
        (
            "redis://host/0?db=1&access_token=y&apiKey=z&timeout=3",
            "redis://host/0?db=1&access_token=***&apiKey=***&timeout=3",
        ),
        ("redis://host?SECRET_KEY=x", "redis://host?SECRET_KEY=***"),
        ("redis://alice:s3cret@host?password=x", "redis://alice:***@host?password=***"),
    ],
)
def test_mask_url_hides_passwords_and_secret_parameters(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://alice@host:6379",  # a user name alone opens nothing
        "rediss://[::1]:6380",
        "unix:///run/redis.sock?db=1",
        "http://host:8080/files/a@b",  # an "@" in the path is not user-info
        "https://registry.example:443/@scope/pkg",
        "kafka://broker:9092?client_id=x&group=g",
        "",
        "not a url at all",
    ],
)
def test_mask_url_leaves_urls_without_credentials_alone(url: str) -> None:
    assert mask_url(url) == url


def test_mask_secrets_masks_a_url_inside_a_pydantic_message() -> None:
    text = (
        "Port could not be cast to integer value as 'abc' "
        "[input_value='redis://alice:s3cret@127.0.0.1:abc', input_type=str]"
    )
    masked = mask_secrets(text)
    assert "s3cret" not in masked
    assert "input_value='redis://alice:***@127.0.0.1:abc'" in masked
    assert masked.startswith("Port could not be cast to integer value as 'abc' ")


def test_mask_secrets_masks_every_url_in_a_text() -> None:
    text = (
        "tried redis://a:pw1@h1:6379, then SASL_SSL://b:pw2@h2:9093 "
        "and amqp://c:pw3@h3/vhost; gave up.\nnext: nats://d:pw4@h4"
    )
    masked = mask_secrets(text)
    for secret in ("pw1", "pw2", "pw3", "pw4"):
        assert secret not in masked
    assert masked == (
        "tried redis://a:***@h1:6379, then SASL_SSL://b:***@h2:9093 "
        "and amqp://c:***@h3/vhost; gave up.\nnext: nats://d:***@h4"
    )


def test_mask_secrets_masks_secret_pairs_and_mapping_reprs() -> None:
    assert mask_secrets("login failed: password=hunter2 user=bob") == (
        "login failed: password=*** user=bob"
    )
    assert mask_secrets(str({"password": "hunter2", "user": "bob"})) == (
        "{'password': '***', 'user': 'bob'}"
    )
    assert mask_secrets('{"apiToken": "abc", "port": 1}') == '{"apiToken": "***", "port": 1}'
    assert mask_secrets(repr({"url": "redis://a:pw@h"})) == "{'url': 'redis://a:***@h'}"


@pytest.mark.parametrize(
    "text",
    [
        "the password is required",
        "password: expected a string",
        "token count: 3, secret handshake, apikey missing",
        "see http://example.com/path?q=1&page=2#top",
        "ratio 3:4 at 10:30@home",
        "user@example.com wrote: a:b@c",
        "workerCount=8 queue=100 mode=drop",
        "eventbus.engines[0].config.url: must start with redis://",
    ],
)
def test_mask_secrets_leaves_ordinary_text_alone(text: str) -> None:
    assert mask_secrets(text) == text


def test_masking_twice_changes_nothing_more() -> None:
    once = mask_secrets("redis://a:pw@h?token=t and password=p")
    assert mask_secrets(once) == once


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("externalBrokerPassword", True),
        ("sasl_plain_password", True),
        ("accessToken", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("api-key", True),
        ("user", False),
        ("workerCount", False),
        ("url", False),
    ],
)
def test_is_secret_key(name: str, secret: bool) -> None:
    assert is_secret_key(name) is secret


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ('password="two words" user=bob', 'password="***" user=bob'),
        ("(token='abc', mode=drop)", "(token='***', mode=drop)"),
        ("{'pin_secret': 918273, 'port': 1}", "{'pin_secret': ***, 'port': 1}"),
        ('{"apiKey":"k-1","items":[1]}', '{"apiKey":"***","items":[1]}'),
    ],
)
def test_mask_secrets_masks_quoted_and_bare_values(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked


def test_long_texts_are_masked_whole() -> None:
    """Large inputs of the shapes that make a backtracking pattern quadratic (with one, this
    test took minutes): each is masked completely."""
    assert mask_secrets("a." * 50_000) == "a." * 50_000
    assert mask_secrets("redis://u:" + "p" * 100_000 + "@h") == "redis://u:***@h"
    assert mask_secrets("redis://u:" + "@x" * 50_000 + "@h") == "redis://u:***@h"
    assert mask_secrets("'a': 'b', " * 10_000) == "'a': 'b', " * 10_000
    assert mask_secrets("password=x " * 10_000) == "password=*** " * 10_000
