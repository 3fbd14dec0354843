"""The logging pieces on their own: repeated warnings rate-limited, exception messages never
formatted, and the access log's path with query values and client-chosen ids removed."""

from __future__ import annotations

import json
import logging

import pytest

from cmfhir.logs import JsonFormatter, RateLimitFilter, TextFormatter
from cmfhir.routes.access_log import loggable_path


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def limited() -> tuple[logging.Logger, list[str], Clock]:
    """A logger whose records pass a RateLimitFilter (3 per 10 s) into a list."""
    clock = Clock()
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect()
    handler.addFilter(RateLimitFilter(limit=3, interval=10, clock=clock))
    logger = logging.getLogger("cmfhir.test.ratelimit")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, lines, clock


def test_repeated_warnings_are_limited_then_counted(
    limited: tuple[logging.Logger, list[str], Clock],
) -> None:
    logger, lines, clock = limited
    for n in range(7700):
        logger.warning("database unavailable: %s", "InterfaceError" if n % 2 else "OSError")
    # Same template, so the first three of the 7,700 pass, whatever their arguments.
    assert lines == [
        "database unavailable: OSError",
        "database unavailable: InterfaceError",
        "database unavailable: OSError",
    ]
    clock.now += 10
    logger.warning("database unavailable: %s", "OSError")
    assert lines[3:] == [
        "7697 similar messages suppressed in 10 s: database unavailable: %s",
        "database unavailable: OSError",
    ]


def test_the_count_comes_with_the_next_record_of_any_kind(
    limited: tuple[logging.Logger, list[str], Clock],
) -> None:
    logger, lines, clock = limited
    for _ in range(5):
        logger.error("pool exhausted")
    clock.now += 11
    logger.info("GET /fhir/metadata 200")
    assert lines == [
        "pool exhausted",
        "pool exhausted",
        "pool exhausted",
        "2 similar messages suppressed in 10 s: pool exhausted",
        "GET /fhir/metadata 200",
    ]


def test_different_messages_and_info_lines_are_not_limited(
    limited: tuple[logging.Logger, list[str], Clock],
) -> None:
    logger, lines, _ = limited
    for n in range(10):
        logger.info("request %d", n)
        logger.warning("warning %d" % n)  # noqa: UP031 - ten different templates
    assert len(lines) == 20


def _record_with_exception() -> logging.LogRecord:
    try:
        raise ValueError("Zyxwquorn, born 1957-03-14")
    except ValueError:
        import sys

        return logging.LogRecord(
            "cmfhir.test", logging.ERROR, __file__, 1, "unhandled", None, sys.exc_info()
        )


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_exception_messages_are_never_formatted(formatter: logging.Formatter) -> None:
    line = formatter.format(_record_with_exception())
    assert "Zyxwquorn" not in line and "1957" not in line
    assert "ValueError at _record_with_exception:" in line


def test_json_lines_carry_the_access_fields() -> None:
    record = logging.LogRecord("cmfhir.access", logging.INFO, __file__, 1, "GET /", None, None)
    record.request_id = "abc"
    record.access = {"method": "GET", "status": 200}
    entry = json.loads(JsonFormatter().format(record))
    assert entry["method"] == "GET" and entry["status"] == 200
    assert entry["request_id"] == "abc" and entry["level"] == "info"
    assert entry["time"].endswith("Z")


CODES = frozenset({"name", "family", "birthdate", "subject", "code", "patient"})


@pytest.mark.parametrize(
    ("path", "query", "logged"),
    [
        pytest.param(
            "/fhir/Patient",
            b"name=Zyxwquorn&birthdate=1957-03-14",
            "/fhir/Patient?name=&birthdate=",
            id="values-removed",
        ),
        pytest.param(
            "/fhir/Observation",
            b"subject:Patient.name:exact=Zyx&_has:Observation:patient:code=1&_count=5",
            "/fhir/Observation?subject:Patient.name:exact=&_has:Observation:patient:code=&_count=",
            id="chains-and-modifiers-kept",
        ),
        pytest.param(
            "/fhir/Patient",
            b"Zyxwquorn=1&name%3Aexact=x",
            "/fhir/Patient?{param}=&name:exact=",
            id="unknown-parameter-hidden",
        ),
        pytest.param(
            "/fhir/Patient/Zyxwquorn-1957", b"", "/fhir/Patient/{id}", id="client-id-hidden"
        ),
        pytest.param(
            "/fhir/Patient/4f0c3e34-0d5e-4f5e-9d43-0e9b1ad2a6c1/_history/12",
            b"",
            "/fhir/Patient/4f0c3e34-0d5e-4f5e-9d43-0e9b1ad2a6c1/_history/12",
            id="server-id-kept",
        ),
        pytest.param("/fhir/Zyxwquorn", b"", "/fhir/{id}", id="unknown-type-hidden"),
        pytest.param("/fhir/Patient/$everything", b"", "/fhir/Patient/$everything", id="op"),
        pytest.param("/fhir/Patient/19570314", b"", "/fhir/Patient/{id}", id="long-number"),
        pytest.param("/readyz", b"", "/readyz", id="probe"),
    ],
)
def test_loggable_path(path: str, query: bytes, logged: str) -> None:
    assert loggable_path(path, query, CODES) == logged
