"""What the exchange features run beside the API in `cmfhir serve`: the MLLP listener when
a port is configured, and the export worker (in-process until the workers runtime runs it;
`CMFHIR_EXPORT_WORKER=false` leaves it to `cmfhir worker`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from cmfhir.exchange.export.worker import ExportWorker
from cmfhir.exchange.mllp import mllp_listener
from cmfhir.exchange.settings import ExchangeSettings
from cmfhir.interactions.context import FhirContext

__all__ = ["exchange_services"]


@contextlib.asynccontextmanager
async def exchange_services(ctx: FhirContext, base_url: str | None) -> AsyncIterator[None]:
    settings = ExchangeSettings()
    stop = asyncio.Event()
    task = None
    if settings.export_worker:
        worker = ExportWorker(ctx, settings.export_dir, expiry_s=settings.export_expiry_s)
        task = asyncio.create_task(worker.run(stop), name=worker.name)
    try:
        async with mllp_listener(ctx, settings, base=base_url or "http://localhost/fhir"):
            yield
    finally:
        stop.set()
        if task is not None:
            await task
