"""`POST /hl7v2`: one HL7 v2 message (ER7) in the body, its ACK in the answer
(docs/exchange.md). A backend (system/) client, or a server without authorization."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from cmfhir.errors import UnsupportedMediaType
from cmfhir.exchange.access import require_system
from cmfhir.exchange.hl7v2 import receive
from cmfhir.routes.fhir import Ctx
from cmfhir.routes.http import base_url, media_type, read_body

__all__ = ["hl7v2_router"]

hl7v2_router = APIRouter()

ER7_TYPES = {"x-application/hl7-v2+er7", "text/plain", "application/hl7-v2"}


@hl7v2_router.post("/hl7v2")
async def hl7v2(request: Request, ctx: Ctx) -> Response:
    require_system(ctx.principal, "HL7 v2 intake")
    kind = media_type(request)
    if kind not in ER7_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type '{kind}' is not an HL7 v2 message; send "
            "x-application/hl7-v2+er7 or text/plain"
        )
    raw = await read_body(request)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    ack = await receive(ctx, text, base=base_url(request))
    return Response(
        ack.text.encode("utf-8"),
        status_code=ack.status,
        media_type="x-application/hl7-v2+er7" if kind != "text/plain" else "text/plain",
    )
