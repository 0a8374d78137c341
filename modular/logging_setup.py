"""Readable logging for programs built on modular (the library itself only adds NullHandlers),
never showing a credential.

``configure_logging()`` gives a program that configured nothing a stderr handler, so that a
failing handler or an engine that could not start is visible. A program that set up logging
itself (the root logger has a handler) is left alone.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

from .errors import ConfigError
from .secrets import mask_secrets

LEVEL_VARIABLE = "MODULAR_LOG_LEVEL"
DEFAULT_LEVEL = logging.INFO
FORMAT = "%(asctime)s %(levelname)-8s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"


class MaskingFormatter(logging.Formatter):
    """Formats as usual, then masks credentials (a broker URL inside an exception text)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


class MaskingFilter(logging.Filter):
    """Masks credentials in the records of the logger it is added to, for every handler: the
    message, and the traceback text (``exc_info`` itself stays, for error trackers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_secrets(_PLAIN.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = mask_secrets(record.stack_info)
        return True


_PLAIN = logging.Formatter()


class _StderrHandler(logging.StreamHandler[TextIO]):
    """The handler configure_logging installs; recognised so a second call only re-levels."""


def parse_level(level: int | str) -> int:
    """``"warning"``, ``"WARNING"``, ``"30"`` or ``30`` as a logging level number."""
    if isinstance(level, int):
        return level
    text = level.strip()
    if text.isdigit():
        return int(text)
    number = logging.getLevelNamesMapping().get(text.upper())
    if number is None:
        raise ConfigError(
            f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return number


def configure_logging(level: int | str | None = None) -> bool:
    """Log to stderr at ``level`` (else ``$MODULAR_LOG_LEVEL``, else INFO) unless the root
    logger already has a handler. Returns whether this call set up or re-levelled logging.
    """
    if level is None:
        from_environment = os.environ.get(LEVEL_VARIABLE, "").strip()
        try:
            number = parse_level(from_environment) if from_environment else DEFAULT_LEVEL
        except ConfigError as exc:
            raise ConfigError(f"{LEVEL_VARIABLE}: {exc}") from None
    else:
        number = parse_level(level)
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _StderrHandler)]
    if root.handlers and not ours:
        return False
    if not ours:
        handler = _StderrHandler(sys.stderr)
        handler.setFormatter(MaskingFormatter(FORMAT, DATE_FORMAT))
        root.addHandler(handler)
    root.setLevel(number)
    return True
