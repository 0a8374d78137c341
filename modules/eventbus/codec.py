"""The wire envelope of every broker engine: CloudEvents 1.0, structured mode, JSON.

One event is one JSON object::

    {"specversion": "1.0", "id": "...", "source": "eventbus", "type": "<topic>",
     "time": "2024-05-01T12:00:00.123456Z", "datacontenttype": "application/json",
     "data": <payload>, "tenant": "acme", "partitionkey": "7", "region": "eu",
     "metadata": "{\\"trace-id\\": \\"abc\\"}"}

- ``type`` is the topic, ``source`` the bus's configured source, as Go Modular sends them.
- ``data`` holds a JSON payload; a pydantic model travels as ``model_dump(mode="json")`` and a
  dataclass as its fields (they arrive as plain JSON values: ``subscribe(payload_type=...)``
  turns them back into models). A ``bytes`` payload travels as ``data_base64`` with
  ``datacontenttype: application/octet-stream`` and arrives as ``bytes``. No payload, no
  ``data``.
- ``tenant`` and ``partitionkey`` (the CloudEvents partitioning extension) are extensions.
- A metadata key that is a valid attribute name (``[a-z0-9]``, at most 20 characters, not one
  of the attributes above) is an attribute of its own; every other key travels in the one
  JSON-string attribute ``metadata``, so that every key round-trips. Decoding turns every
  attribute that is not one of the above into metadata, so extensions of other producers
  are kept.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import dataclasses
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from json.encoder import encode_basestring
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel

from .errors import EventDecodeError, EventEncodeError
from .event import EMPTY_METADATA, Event
from .topics import validate_tenant, validate_topic

SPECVERSION = "1.0"
JSON_CONTENT_TYPE = "application/json"
BYTES_CONTENT_TYPE = "application/octet-stream"
METADATA_ATTRIBUTE = "metadata"
MAX_ATTRIBUTE_NAME = 20

# Attributes with a meaning of their own; a metadata key spelled like one of them travels in
# the ``metadata`` attribute instead.
RESERVED_ATTRIBUTES = frozenset(
    {
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "datacontenttype",
        "data",
        "data_base64",
        "tenant",
        "partitionkey",
        METADATA_ATTRIBUTE,
    }
)
_ATTRIBUTE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_CACHE_LIMIT = 4096


def _default(value: Any) -> Any:
    """JSON for what ``json`` cannot encode itself: pydantic models and dataclasses."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Shallow: nested models and dataclasses come back through here.
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_default
)
_encode_json = _encoder.encode
_string = encode_basestring  # a str as a JSON string literal
_decode_json = json.loads

# --- attribute names ----------------------------------------------------------------------

_attribute_names: dict[str, bool] = {}


def is_attribute_name(key: str) -> bool:
    """Whether ``key`` can travel as a CloudEvents attribute of its own."""
    known = _attribute_names.get(key)
    if known is None:
        known = (
            0 < len(key) <= MAX_ATTRIBUTE_NAME
            and _ATTRIBUTE_CHARS.issuperset(key)
            and key not in RESERVED_ATTRIBUTES
        )
        if len(_attribute_names) >= _CACHE_LIMIT:
            _attribute_names.clear()
        _attribute_names[key] = known
    return known


# --- time ---------------------------------------------------------------------------------

# (whole second, its "YYYY-MM-DDTHH:MM:SS" text): events come in bursts within one second.
_formatted_second: tuple[int, str] = (-1, "")
_parsed_seconds: dict[str, int] = {}


def format_time(timestamp: float) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2024-05-01T12:00:00.123456Z``."""
    global _formatted_second
    second, micro = divmod(round(timestamp * 1_000_000), 1_000_000)
    cached_second, text = _formatted_second
    if second != cached_second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _formatted_second = (second, text)
    return f"{text}.{micro:06d}Z"


def parse_time(text: str) -> float:
    """Seconds since the epoch from an RFC 3339 time; ValueError if it is not one."""
    if len(text) == 27 and text[19] == "." and text[26] == "Z":  # the form we write
        head = text[:19]
        second = _parsed_seconds.get(head)
        if second is None:
            second = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
            if len(_parsed_seconds) >= _CACHE_LIMIT:
                _parsed_seconds.clear()
            _parsed_seconds[head] = second
        return second + int(text[20:26]) / 1_000_000
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:  # RFC 3339 requires an offset; a naive time is taken as UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


# --- encode -------------------------------------------------------------------------------


def encode(event: Event) -> bytes:
    """The envelope of ``event`` as UTF-8 JSON; EventEncodeError if it cannot be encoded."""
    # Built as text around one json encoding of the payload: about 40% cheaper than encoding
    # an envelope dict, and encoding is on the publish path of every broker engine.
    payload = event.payload
    try:
        parts = [
            '{"specversion":"1.0","id":',
            _string(event.id),
            ',"source":',
            _string(event.source),
            ',"type":',
            _string(event.topic),
            ',"time":"',
            format_time(event.timestamp),
            '"',
        ]
        if payload is not None:
            if isinstance(payload, bytes | bytearray | memoryview):
                parts.append(',"datacontenttype":"' + BYTES_CONTENT_TYPE + '","data_base64":"')
                parts.append(base64.b64encode(payload).decode("ascii"))
                parts.append('"')
            else:
                parts.append(',"datacontenttype":"' + JSON_CONTENT_TYPE + '","data":')
                parts.append(_encode_json(payload))
        if event.tenant is not None:
            parts.append(',"tenant":')
            parts.append(_string(event.tenant))
        if event.partition_key is not None:
            parts.append(',"partitionkey":')
            parts.append(_string(event.partition_key))
        if event.metadata:
            _put_metadata(parts, event)
        parts.append("}")
        return "".join(parts).encode("utf-8")
    except EventEncodeError:
        raise
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise EventEncodeError(
            f"cannot encode the payload of type {type(payload).__name__} for topic "
            f"{event.topic!r}: {exc}"
        ) from exc


def _put_metadata(parts: list[str], event: Event) -> None:
    others: dict[str, str] | None = None
    for key, value in event.metadata.items():
        if type(key) is not str or type(value) is not str:
            raise EventEncodeError(
                f"metadata of an event for topic {event.topic!r} must map strings to "
                f"strings, got {type(key).__name__} {key!r}: {type(value).__name__}"
            )
        if is_attribute_name(key):
            parts.append(f',"{key}":')
            parts.append(_string(value))
        else:
            if others is None:
                others = {}
            others[key] = value
    if others is not None:
        parts.append(',"' + METADATA_ATTRIBUTE + '":')
        parts.append(_string(json.dumps(others, ensure_ascii=False)))


# --- decode -------------------------------------------------------------------------------

_valid_topics: set[str] = set()
_valid_tenants: set[str] = set()


def decode(data: bytes | bytearray | memoryview | str) -> Event:
    """The Event in an envelope; EventDecodeError saying what is wrong otherwise."""
    try:
        envelope = _decode_json(bytes(data) if isinstance(data, memoryview) else data)
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
        raise EventDecodeError(f"not a JSON document: {exc}") from None
    if type(envelope) is not dict:
        raise EventDecodeError(f"expected a JSON object, got {type(envelope).__name__}")
    get = envelope.get
    specversion = get("specversion")
    if specversion != SPECVERSION:
        if specversion is None:
            raise EventDecodeError("not a CloudEvent: attribute 'specversion' is missing")
        raise EventDecodeError(f"unsupported specversion {specversion!r}, expected '1.0'")
    event_id: Any = get("id")
    source: Any = get("source")
    topic: Any = get("type")
    if type(event_id) is not str or type(source) is not str or type(topic) is not str:
        _required(envelope, "id")
        _required(envelope, "source")
        _required(envelope, "type")
    if topic not in _valid_topics:
        _required(envelope, "id")
        _required(envelope, "source")
        try:
            validate_topic(topic)
        except ValueError as exc:
            raise EventDecodeError(f"attribute 'type' is not a valid topic: {exc}") from None
        _remember(_valid_topics, topic)
    elif not event_id or not source:
        _required(envelope, "id")
        _required(envelope, "source")
    known = 4  # specversion, id, source, type

    stamp = get("time")
    if stamp is None:
        timestamp = time.time()
    elif type(stamp) is str:
        known += 1
        try:
            timestamp = parse_time(stamp)
        except (ValueError, OverflowError):
            raise EventDecodeError(f"attribute 'time' is not an RFC 3339 time: {stamp!r}") from None
    else:
        raise EventDecodeError(f"attribute 'time' must be a string, got {type(stamp).__name__}")

    if "datacontenttype" in envelope:
        known += 1
    payload = get("data")
    if payload is not None or "data" in envelope:
        known += 1
    encoded = get("data_base64")
    if encoded is not None:
        known += 1
        payload = _base64_payload(envelope, encoded)

    tenant = get("tenant")
    if tenant is not None:
        known += 1
        if tenant not in _valid_tenants:
            try:
                validate_tenant(tenant)
            except ValueError as exc:
                raise EventDecodeError(f"attribute 'tenant': {exc}") from None
            _remember(_valid_tenants, tenant)
    partition_key = get("partitionkey")
    if partition_key is not None:
        known += 1
        if type(partition_key) is not str:
            raise EventDecodeError("attribute 'partitionkey' must be a string")

    # Only an envelope with attributes beyond those is searched for metadata.
    metadata = _metadata(envelope) if len(envelope) > known else EMPTY_METADATA
    return Event(event_id, topic, payload, metadata, timestamp, source, tenant, partition_key)


def _base64_payload(envelope: dict[str, Any], encoded: Any) -> bytes:
    if "data" in envelope:
        raise EventDecodeError("an event cannot carry both 'data' and 'data_base64'")
    if type(encoded) is not str:
        raise EventDecodeError("attribute 'data_base64' must be a string")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EventDecodeError(f"attribute 'data_base64' is not valid base64: {exc}") from None


def _required(envelope: dict[str, Any], name: str) -> str:
    value = envelope.get(name)
    if type(value) is not str or not value:
        if value is None:
            raise EventDecodeError(f"not a valid CloudEvent: attribute {name!r} is missing")
        raise EventDecodeError(
            f"not a valid CloudEvent: attribute {name!r} must be a non-empty string, got {value!r}"
        )
    return value


def _metadata(envelope: dict[str, Any]) -> Mapping[str, str]:
    found: dict[str, str] = {}
    for key, value in envelope.items():
        if key in RESERVED_ATTRIBUTES or value is None:
            continue
        found[key] = _attribute_text(key, value)
    others = envelope.get(METADATA_ATTRIBUTE)
    if others is not None:
        found.update(_metadata_attribute(others))
    return MappingProxyType(found) if found else EMPTY_METADATA


def _attribute_text(key: str, value: Any) -> str:
    """An extension value as metadata text: other producers may send numbers or booleans."""
    if type(value) is str:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int or type(value) is float:
        return json.dumps(value)
    raise EventDecodeError(
        f"extension attribute {key!r} must be a string, number or boolean, "
        f"got {type(value).__name__}"
    )


def _metadata_attribute(text: Any) -> dict[str, str]:
    if type(text) is not str:
        raise EventDecodeError(
            f"attribute {METADATA_ATTRIBUTE!r} must be a JSON string, got {type(text).__name__}"
        )
    try:
        others = json.loads(text)
    except ValueError:
        raise EventDecodeError(
            f"attribute {METADATA_ATTRIBUTE!r} is not a JSON document: {text[:80]!r}"
        ) from None
    if type(others) is not dict or not all(type(v) is str for v in others.values()):
        raise EventDecodeError(
            f"attribute {METADATA_ATTRIBUTE!r} must hold a JSON object of strings, "
            f"got {text[:80]!r}"
        )
    return others


def _remember(cache: set[str], value: str) -> None:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache.add(value)
