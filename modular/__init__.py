"""modular: a small application container with modules, services, layered config and tenants."""

import logging

from .application import Application
from .config import deep_merge, load_settings, normalize_key, validate_section
from .errors import (
    ConfigError,
    DependencyError,
    FieldError,
    LifecycleError,
    ModularError,
    ServiceNotFoundError,
)
from .logging_setup import configure_logging
from .module import Module, ServiceDependency, ServiceProvider
from .observer import CloudEvent, Observer
from .secrets import is_secret_key, mask_secrets, mask_url
from .services import ServiceRegistry
from .tenants import TenantService, current_tenant, tenant_context, validate_tenant_id

logging.getLogger("modular").addHandler(logging.NullHandler())

__all__ = [
    "Application",
    "CloudEvent",
    "ConfigError",
    "DependencyError",
    "FieldError",
    "LifecycleError",
    "ModularError",
    "Module",
    "Observer",
    "ServiceDependency",
    "ServiceNotFoundError",
    "ServiceProvider",
    "ServiceRegistry",
    "TenantService",
    "configure_logging",
    "current_tenant",
    "deep_merge",
    "is_secret_key",
    "load_settings",
    "mask_secrets",
    "mask_url",
    "normalize_key",
    "tenant_context",
    "validate_section",
    "validate_tenant_id",
]
