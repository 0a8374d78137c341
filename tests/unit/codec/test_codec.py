"""The CloudEvents envelope: round trips, the exact wire shape, other producers, bad input."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from modules.eventbus import Event, EventDecodeError, EventEncodeError
from modules.eventbus.codec import decode, encode, format_time, parse_time

TIMESTAMP = 1_714_564_800.123456  # 2024-05-01T12:00:00.123456Z


def make_event(payload: Any = None, **changes: Any) -> Event:
    event = Event("ev-1", "user.created", payload, {}, TIMESTAMP, "eventbus")
    return event._replace(**changes)


def wire(event: Event) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(encode(event))
    return decoded


class Address(BaseModel):
    city: str


class User(BaseModel):
    id: int
    name: str
    joined: datetime
    address: Address


@dataclasses.dataclass
class Point:
    x: int
    y: float
    tags: list[str]


@dataclasses.dataclass
class Shape:
    name: str
    corner: Point


# --- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"id": 7, "name": "Ada", "nested": {"list": [1, 2.5, None, True, "x"]}},
        [1, "two", {"three": 3}],
        "a plain string",
        "unicode: é ü 日本 🎉",
        42,
        -3.25,
        True,
        False,
        None,
        {},
        [],
    ],
    ids=repr,
)
def test_json_payloads_round_trip(payload: Any) -> None:
    event = make_event(payload)
    decoded = decode(encode(event))
    assert decoded.payload == payload
    assert type(decoded.payload) is type(payload)


def test_every_field_round_trips() -> None:
    event = make_event(
        {"k": "v"},
        metadata={"region": "eu", "trace-id": "abc"},
        tenant="acme",
        partition_key="user-7",
        source="billing",
    )
    decoded = decode(encode(event))
    assert decoded.id == "ev-1"
    assert decoded.topic == "user.created"
    assert decoded.source == "billing"
    assert decoded.tenant == "acme"
    assert decoded.partition_key == "user-7"
    assert dict(decoded.metadata) == {"region": "eu", "trace-id": "abc"}
    assert decoded.timestamp == pytest.approx(TIMESTAMP, abs=1e-6)
    assert decoded.created_at == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_decode_accepts_str_and_bytearray() -> None:
    data = encode(make_event({"a": 1}))
    assert decode(data.decode()).payload == {"a": 1}
    assert decode(bytearray(data)).payload == {"a": 1}
    assert decode(memoryview(data)).payload == {"a": 1}


def test_pydantic_model_travels_as_its_json_dump() -> None:
    user = User(
        id=1,
        name="Ada",
        joined=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        address=Address(city="Paris"),
    )
    decoded = decode(encode(make_event(user)))
    assert decoded.payload == user.model_dump(mode="json")
    assert User.model_validate(decoded.payload) == user


def test_pydantic_models_nested_in_json_values() -> None:
    payload = {"users": [Address(city="Oslo"), Address(city="Rome")]}
    assert decode(encode(make_event(payload))).payload == {
        "users": [{"city": "Oslo"}, {"city": "Rome"}]
    }


def test_dataclass_travels_as_its_fields() -> None:
    shape = Shape("square", Point(1, 2.5, ["a", "b"]))
    decoded = decode(encode(make_event(shape)))
    assert decoded.payload == {"name": "square", "corner": {"x": 1, "y": 2.5, "tags": ["a", "b"]}}
    assert decoded.payload == dataclasses.asdict(shape)


@pytest.mark.parametrize("payload", [b"\x00\x01\xffbinary", bytearray(b"abc"), b""])
def test_bytes_travel_as_data_base64(payload: bytes | bytearray) -> None:
    event = make_event(payload)
    shape = wire(event)
    assert "data" not in shape
    assert shape["data_base64"] == base64.b64encode(payload).decode()
    assert shape["datacontenttype"] == "application/octet-stream"
    decoded = decode(encode(event))
    assert decoded.payload == bytes(payload)
    assert type(decoded.payload) is bytes


def test_metadata_with_any_keys_round_trips() -> None:
    metadata = {
        "region": "eu",  # a valid attribute name: an attribute of its own
        "x1": "y",
        "trace-id": "abc",  # '-' is not allowed in attribute names
        "Mixed.Case": "M",  # upper case and '.' neither
        "averyveryverylongname": "21 chars",  # longer than 20
        "id": "not the event id",  # a reserved attribute
        "type": "not the topic",
        "data": "not the payload",
        "tenant": "not the tenant",
        "metadata": "the overflow attribute's own name",
        "": "empty key",
        "ünï": "non-ascii key",
        'quote"and\\backslash': 'value with "quotes" and \n newline',
    }
    event = make_event({"p": 1}, metadata=metadata, tenant="acme")
    decoded = decode(encode(event))
    assert dict(decoded.metadata) == metadata
    assert decoded.id == "ev-1"
    assert decoded.topic == "user.created"
    assert decoded.payload == {"p": 1}
    assert decoded.tenant == "acme"


def test_no_metadata_decodes_to_an_empty_mapping() -> None:
    decoded = decode(encode(make_event({"a": 1})))
    assert dict(decoded.metadata) == {}
    assert decoded.tenant is None
    assert decoded.partition_key is None


# --- the wire shape -------------------------------------------------------------------


def test_exact_wire_shape() -> None:
    event = make_event(
        {"id": 7},
        metadata={"region": "eu", "trace-id": "abc", "Mixed.Key": "x"},
        tenant="acme",
        partition_key="7",
    )
    assert wire(event) == {
        "specversion": "1.0",
        "id": "ev-1",
        "source": "eventbus",
        "type": "user.created",
        "time": "2024-05-01T12:00:00.123456Z",
        "datacontenttype": "application/json",
        "data": {"id": 7},
        "tenant": "acme",
        "partitionkey": "7",
        "region": "eu",
        "metadata": json.dumps({"trace-id": "abc", "Mixed.Key": "x"}),
    }


def test_minimal_wire_shape_has_no_optional_attributes() -> None:
    assert wire(make_event(None)) == {
        "specversion": "1.0",
        "id": "ev-1",
        "source": "eventbus",
        "type": "user.created",
        "time": "2024-05-01T12:00:00.123456Z",
    }


def test_encoding_is_compact_utf8_json() -> None:
    data = encode(make_event({"name": "日本"}))
    assert b": " not in data and b", " not in data
    assert "日本".encode() in data


def test_strings_are_escaped() -> None:
    event = make_event("x", id='id "quoted" \\ \n', source="a\tb", metadata={"k": '"\x01'})
    decoded = decode(encode(event))
    assert decoded.id == 'id "quoted" \\ \n'
    assert decoded.source == "a\tb"
    assert decoded.metadata["k"] == '"\x01'


@pytest.mark.parametrize(
    ("timestamp", "text"),
    [
        (0.0, "1970-01-01T00:00:00.000000Z"),
        (1_714_564_800.0, "2024-05-01T12:00:00.000000Z"),
        (1_714_564_800.9999996, "2024-05-01T12:00:01.000000Z"),  # rounds into the next second
        (1_714_564_799.5, "2024-05-01T11:59:59.500000Z"),
    ],
)
def test_time_format(timestamp: float, text: str) -> None:
    assert format_time(timestamp) == text
    assert parse_time(text) == pytest.approx(timestamp, abs=1e-6)


# --- other producers ------------------------------------------------------------------


def test_decodes_an_event_of_another_producer() -> None:
    """What Go Modular (or any CloudEvents SDK) sends: nanosecond time, an offset-free 'Z',
    extensions of other types, attributes we do not use."""
    sent = (
        b'{"specversion":"1.0","id":"9f1c2d3e-0000-4000-8000-000000000001",'
        b'"source":"modular-go/orders","type":"order.placed","subject":"order-42",'
        b'"time":"2024-05-01T12:00:00.123456789Z","datacontenttype":"application/json",'
        b'"dataschema":"https://example.com/order.json",'
        b'"data":{"orderId":42,"total":12.5},'
        b'"tenant":"acme","partitionkey":"42","priority":5,"retried":false,"score":0.5,'
        b'"traceparent":"00-abc-def-01","nothing":null}'
    )
    event = decode(sent)
    assert event.id == "9f1c2d3e-0000-4000-8000-000000000001"
    assert event.source == "modular-go/orders"
    assert event.topic == "order.placed"
    assert event.payload == {"orderId": 42, "total": 12.5}
    assert event.tenant == "acme"
    assert event.partition_key == "42"
    assert event.created_at == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert dict(event.metadata) == {
        "subject": "order-42",
        "dataschema": "https://example.com/order.json",
        "priority": "5",
        "retried": "false",
        "score": "0.5",
        "traceparent": "00-abc-def-01",
    }


def test_decodes_times_with_offsets_and_without_fraction() -> None:
    base = {"specversion": "1.0", "id": "1", "source": "s", "type": "t"}
    for text, expected in [
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00.5Z", datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=UTC)),
    ]:
        event = decode(json.dumps({**base, "time": text}))
        assert event.created_at == expected, text


def test_missing_time_is_the_time_of_receipt() -> None:
    before = datetime.now(UTC)
    event = decode(b'{"specversion":"1.0","id":"1","source":"s","type":"t"}')
    assert before <= event.created_at <= datetime.now(UTC)
    assert event.payload is None


def test_text_data_of_another_content_type_is_kept() -> None:
    event = decode(
        b'{"specversion":"1.0","id":"1","source":"s","type":"t",'
        b'"datacontenttype":"text/plain","data":"hello"}'
    )
    assert event.payload == "hello"


# --- encode errors --------------------------------------------------------------------


class NotJson:
    pass


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (NotJson(), "NotJson"),
        ({"when": datetime(2024, 1, 1)}, "datetime"),
        ({"set": {1, 2}}, "set"),
        ({"nested": [b"bytes inside"]}, "bytes"),
        ({"nan": math.nan}, "dict"),
        ("lone surrogate \ud800", "str"),
    ],
)
def test_unencodable_payload_names_topic_and_type(payload: Any, named: str) -> None:
    with pytest.raises(EventEncodeError) as caught:
        encode(make_event(payload))
    message = str(caught.value)
    assert "'user.created'" in message
    assert named in message


def test_circular_payload_is_an_encode_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(EventEncodeError, match=r"user\.created"):
        encode(make_event(loop))


def test_non_string_metadata_value_is_an_encode_error() -> None:
    with pytest.raises(EventEncodeError, match="metadata"):
        encode(make_event(None, metadata={"count": 3}))


def test_encode_error_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        encode(make_event(NotJson()))


# --- decode errors --------------------------------------------------------------------

VALID = {
    "specversion": "1.0",
    "id": "1",
    "source": "s",
    "type": "user.created",
    "time": "2024-05-01T12:00:00.000000Z",
}


def envelope(**changes: Any) -> bytes:
    body = {**VALID, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not a JSON document"),
        (b"", "not a JSON document"),
        (b"\xff\xfe{}", "not a JSON document"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'"a string"', "expected a JSON object, got str"),
        (b"42", "expected a JSON object, got int"),
        (b"null", "expected a JSON object, got NoneType"),
        (envelope(specversion=...), "'specversion' is missing"),
        (envelope(specversion="0.3"), "unsupported specversion '0.3'"),
        (envelope(specversion=1.0), "unsupported specversion 1.0"),
        (envelope(id=...), "'id' is missing"),
        (envelope(id=""), "'id' must be a non-empty string"),
        (envelope(id=5), "'id' must be a non-empty string"),
        (envelope(source=...), "'source' is missing"),
        (envelope(source=["x"]), "'source' must be a non-empty string"),
        (envelope(type=...), "'type' is missing"),
        (envelope(type=3), "'type' must be a non-empty string"),
        (envelope(type="user created"), "'type' is not a valid topic"),
        (envelope(type="__internal"), "'type' is not a valid topic"),
        (envelope(type="user.*"), "'type' is not a valid topic"),
        (envelope(type="a:b"), "'type' is not a valid topic"),
        (envelope(time="yesterday"), "'time' is not an RFC 3339 time"),
        (envelope(time=1714564800), "'time' must be a string"),
        (envelope(data_base64="***not base64***"), "'data_base64' is not valid base64"),
        (envelope(data_base64=5), "'data_base64' must be a string"),
        (envelope(data_base64="AAAA", data=1), "both 'data' and 'data_base64'"),
        (envelope(tenant="bad tenant!"), "attribute 'tenant'"),
        (envelope(tenant=7), "attribute 'tenant'"),
        (envelope(partitionkey=7), "'partitionkey' must be a string"),
        (envelope(metadata=5), "'metadata' must be a JSON string"),
        (envelope(metadata="{not json"), "'metadata' is not a JSON document"),
        (envelope(metadata='["a"]'), "'metadata' must hold a JSON object of strings"),
        (envelope(metadata='{"a": 1}'), "'metadata' must hold a JSON object of strings"),
        (envelope(region={"nested": True}), "extension attribute 'region'"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_decode_errors(data: bytes, message: str) -> None:
    with pytest.raises(EventDecodeError) as caught:
        decode(data)
    assert message in str(caught.value)


def test_decode_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        decode(b"{}")


def test_the_valid_envelope_of_the_error_cases_decodes() -> None:
    """So that each error case above fails for its own change only."""
    event = decode(envelope())
    assert event.topic == "user.created"
