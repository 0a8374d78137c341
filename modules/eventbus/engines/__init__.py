"""Engines: one file each. Built-ins are imported on first use (see ``registry``)."""

from .base import Capabilities, Engine, FanoutEngine

__all__ = ["Capabilities", "Engine", "FanoutEngine"]
