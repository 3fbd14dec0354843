"""What the exchange features run beside the API in `cmfhir serve`: the MLLP listener when
a port is configured. The export worker is one of the background workers (workers/standard.py:
in-process under `cmfhir serve`, apart under `cmfhir worker`; `CMFHIR_EXPORT_WORKER=false`
leaves it out)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from cmfhir.exchange.mllp import mllp_listener
from cmfhir.exchange.settings import ExchangeSettings
from cmfhir.interactions.context import FhirContext

__all__ = ["exchange_services"]


@contextlib.asynccontextmanager
async def exchange_services(ctx: FhirContext, base_url: str | None) -> AsyncIterator[None]:
    settings = ExchangeSettings()
    async with mllp_listener(ctx, settings, base=base_url or "http://localhost/fhir"):
        yield
