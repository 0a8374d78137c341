"""The EventBus module: publish/subscribe over several engines at once.

app.register_module(EventBusModule())
bus = app.get_service("eventbus.provider")
"""

import logging

from .config import EngineConfig, EngineSpec, EventBusConfig, RoutingRule
from .delivery import DeliveryMode, DeliveryPolicy, DeliveryStats, Outcome
from .engines.base import Capabilities, Engine, FanoutEngine
from .errors import (
    ConfigError,
    EngineUnavailableError,
    EventBusError,
    EventBusNotStartedError,
    EventDecodeError,
    EventEncodeError,
)
from .event import Event, Handler, Subscription
from .module import EventBusModule
from .registry import known_engine_types, register_engine, unregister_engine
from .router import Router
from .tenant import TenantEventBus

logging.getLogger("modules.eventbus").addHandler(logging.NullHandler())

__all__ = [
    "Capabilities",
    "ConfigError",
    "DeliveryMode",
    "DeliveryPolicy",
    "DeliveryStats",
    "Engine",
    "EngineConfig",
    "EngineSpec",
    "EngineUnavailableError",
    "Event",
    "EventBusConfig",
    "EventBusError",
    "EventBusModule",
    "EventBusNotStartedError",
    "EventDecodeError",
    "EventEncodeError",
    "FanoutEngine",
    "Handler",
    "Outcome",
    "Router",
    "RoutingRule",
    "Subscription",
    "TenantEventBus",
    "known_engine_types",
    "register_engine",
    "unregister_engine",
]
