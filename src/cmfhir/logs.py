"""Logging for a service: readable lines or JSON lines (`CMFHIR_LOG_FORMAT`), the request id
on every line, repeated warnings rate-limited, and exception messages never written (they can
quote member data: only the exception's type and where it was raised are logged)."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson

__all__ = [
    "REQUEST_ID",
    "JsonFormatter",
    "RateLimitFilter",
    "RequestIdFilter",
    "TextFormatter",
    "logging_config",
]

# The id of the request being served, set by the access-log middleware for its task.
REQUEST_ID: ContextVar[str] = ContextVar("cmfhir_request_id", default="-")

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _exception_summary(exc_info: _ExcInfo) -> str:
    """`KeyError at handler:12 <- helper:40`: the type and the innermost frames, no message."""
    kind, _, tb = exc_info
    frames = traceback.extract_tb(tb)
    where = " <- ".join(f"{frame.name}:{frame.lineno}" for frame in reversed(frames[-6:]))
    return f"{kind.__name__} at {where}" if where else kind.__name__


class RequestIdFilter(logging.Filter):
    """Gives every record the current request id (`-` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    """`2026-11-30T12:00:00.123Z WARNING cmfhir.store [4f9c…] database unavailable: …`"""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{_timestamp(record)} {record.levelname} {record.name} "
            f"[{getattr(record, 'request_id', '-')}] {record.getMessage()}"
        )
        if record.exc_info and record.exc_info[0] is not None:
            line += f" ({_exception_summary(record.exc_info)})"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; access-log records add their fields at the top level."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            entry.update(access)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = _exception_summary(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class RateLimitFilter(logging.Filter):
    """Lets through the first `limit` warnings (or worse) with the same message template and
    logger in each `interval` seconds and drops the rest; once the interval is over, the next
    record of any kind is preceded by one `N similar messages suppressed` line per message.
    A database that is down otherwise writes thousands of identical lines a second."""

    def __init__(
        self,
        limit: int = 5,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.limit = limit
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._reporting = threading.local()
        # (logger, level, template) -> [window start, passed, suppressed]
        self._windows: dict[tuple[str, int, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(self._reporting, "active", False):
            return True  # a summary line this filter is writing
        now = self.clock()
        with self._lock:
            expired = self._expire(now)
            passed = True
            if record.levelno >= logging.WARNING:
                key = (record.name, record.levelno, str(record.msg))
                window = self._windows.get(key)
                if window is None:
                    self._windows[key] = [now, 1, 0]
                elif window[1] < self.limit:
                    window[1] += 1
                else:
                    window[2] += 1
                    passed = False
        self._report(expired)
        return passed

    def _expire(self, now: float) -> list[tuple[tuple[str, int, str], int]]:
        """Windows past their interval, forgotten; those that dropped records are returned."""
        done = [key for key, window in self._windows.items() if now - window[0] >= self.interval]
        expired = []
        for key in done:
            suppressed = int(self._windows.pop(key)[2])
            if suppressed:
                expired.append((key, suppressed))
        return expired

    def _report(self, expired: list[tuple[tuple[str, int, str], int]]) -> None:
        self._reporting.active = True
        try:
            for (name, level, template), suppressed in expired:
                logging.getLogger(name).log(
                    level,
                    "%d similar messages suppressed in %g s: %s",
                    suppressed,
                    self.interval,
                    template,
                )
        finally:
            self._reporting.active = False


def logging_config(
    level: str, log_format: str, *, repeat_limit: int = 5, repeat_interval: float = 10.0
) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the server and its uvicorn workers (each worker
    process applies it): one handler on stderr, uvicorn's own access log off."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"cmfhir": {"()": f"{__name__}.{formatter.__name__}"}},
        "filters": {
            "request_id": {"()": f"{__name__}.RequestIdFilter"},
            "rate_limit": {
                "()": f"{__name__}.RateLimitFilter",
                "limit": repeat_limit,
                "interval": repeat_interval,
            },
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "cmfhir",
                "filters": ["request_id", "rate_limit"],
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            "uvicorn": {"level": level.upper(), "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
            # cmfhir writes its own access log (routes/access_log.py), without query values.
            "uvicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
            # Alembic announces its plugins and each migration step at INFO on every start.
            "alembic": {"level": "WARNING"},
        },
    }
