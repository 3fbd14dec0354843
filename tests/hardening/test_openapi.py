"""Schemathesis against the OpenAPI document the server serves (`/openapi.json`): every
operation, with path parameters drawn from their schemas, valid and not, answers without
a 5xx.

The document is FastAPI's: the FHIR routes read their bodies and query strings themselves,
so it describes only paths and their parameters, and the other checks (status codes and
media types as documented) do not apply. Bodies and queries are test_fuzz.py's part.

The schema is built at import, from the app (schemathesis parametrizes at collection, and
its `from_fixture` loader does not run on pytest 9); a test checks it is the one served by a
server with the document turned on (`CMFHIR_OPENAPI`; it is off by default).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from cmfhir.app import create_app
from cmfhir.config import Settings

DOCUMENT = create_app(Settings(openapi=True)).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture(scope="module")
def openapi_base(settings: Settings, start_server: type) -> Iterator[str]:
    with start_server(settings.model_copy(update={"openapi": True})) as server:
        yield server.base


def test_the_document_is_the_one_served(openapi_base: str) -> None:
    served = httpx.get(openapi_base.removesuffix("/fhir") + "/openapi.json")
    assert served.status_code == 200
    assert served.json() == DOCUMENT


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_error(case: schemathesis.Case, base: str) -> None:
    case.call_and_validate(base_url=base.removesuffix("/fhir"), checks=[not_a_server_error])
